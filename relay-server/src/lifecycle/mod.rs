//! A unit's life cycle, stage by stage: where a result is judged and paid.
//!
//! - [`lease`]: a unit handed out (its quorum fixed by its first lease, its deadline),
//!   and what losing leases costs a wallet;
//! - [`settle`]: a returned result judged with its unit's other replicas, the wallets'
//!   trust updated, the unit settled, reopened or failed;
//! - [`billing`]: a job's price set aside in escrow, each settled unit's price shared out
//!   of it, what is left refunded;
//! - [`finish`]: a job closed, done or failed, and its escrow with it.
//!
//! Each transaction reads as *load → decide → apply*: storage loads the rows a decision
//! needs into a plain snapshot (`SettleSnapshot`, `EscrowStanding`), a pure `decide_*`
//! function here turns the snapshot (with the incoming result, the relay's policy and the
//! clock) into a decision, and storage applies exactly what the decision says, in the
//! same transaction. The deciders take no connection and do no I/O, and the snapshot and
//! decision types name no database, so another engine needs only its own load and apply.

pub mod billing;
pub mod finish;
pub mod lease;
pub mod settle;

/// A snapshot whose rows do not make sense (an id or address that does not parse, a
/// price that does not fit): the database was edited by hand or is corrupt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Inconsistent(pub String);
