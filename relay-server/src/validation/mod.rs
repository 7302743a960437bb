//! Deciding which results to believe, as pure logic: the database applies the decisions,
//! and property tests check them without one.
//!
//! - [`trust`]: each wallet's error rate, BOINC-style, and what it earns (spot checks
//!   instead of replication) or costs (quarantine);
//! - [`quorum`]: a unit's results so far, and whether they settle it.

pub mod quorum;
pub mod trust;

pub use quorum::{judge, Candidate, Outcome, Policy};
pub use trust::Reliability;
