//! Deciding which results to believe, as pure logic: the database applies the decisions,
//! and property tests check them without one.
//!
//! - [`trust`]: each wallet's error rate, BOINC-style, and what it earns (spot checks
//!   instead of replication) or costs (quarantine);
//! - [`quorum`]: a unit's results so far, and whether they settle it;
//! - [`network`]: which network a volunteer's address belongs to (one replica of a unit
//!   per network).
//!
//! [`lifecycle::settle`](crate::lifecycle::settle) uses them to judge a returned result
//! and decide what it settles and pays.

pub mod network;
pub mod quorum;
pub mod trust;

pub use network::{Network, NetworkRule};
pub use quorum::{judge, Candidate, Outcome, Policy, Reference};
pub use trust::Reliability;
