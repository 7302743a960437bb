//! The credit ledger, as pure logic: money ([`MicroCredits`]), accounts and reasons,
//! chained and signed [`Entry`]s, the audit ([`verify_chain`]), the relay's key file and
//! the split of a unit's price.
//!
//! Every movement of credit is one entry debiting one account and crediting another, so
//! the balances of all accounts always sum to zero; [`Account::Issuance`] is the only
//! account that may go negative. Each entry's hash covers its fields and the previous
//! entry's hash, and the relay's key signs each hash: editing, removing or reordering
//! any entry is caught by [`verify_chain`]. Storage (`storage::ledger`) appends entries
//! inside the caller's write transaction, so the chain cannot fork. What a job sets aside,
//! what a settled unit accrues and what is refunded is decided in
//! [`lifecycle::billing`](crate::lifecycle::billing).

mod account;
mod audit;
mod entry;
mod key;
mod money;
mod split;

pub use account::{Account, AccountId, EscrowRef, ParseError, Reason};
pub use audit::{verify_chain, AuditError, ChainVerifier, Summary};
pub use entry::{Entry, EntryFields, GENESIS_PREV_HASH};
pub use key::{load_or_create_relay_key, load_relay_key, KeyFileError, RELAY_KEY_FILE};
pub use money::{MicroCredits, MoneyError, MICRO_PER_CREDIT};
pub use split::{split_unit_price, Split, SplitError, PPM};
