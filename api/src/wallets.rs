//! `GET /api/v1/wallets/{address}`: what the relay knows about a volunteer wallet.

use serde::{Deserialize, Serialize};

/// A wallet's standing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wallet {
    /// The wallet's address (st1…).
    pub address: String,
    /// Its balance, decimal credits.
    pub balance: String,
    /// The same in micro-credits.
    pub balance_micro: u64,
    /// Results judged valid.
    pub valid_results: u32,
    /// Results judged invalid.
    pub invalid_results: u32,
    /// Estimated probability that its next result is wrong.
    pub error_rate: f64,
    /// Whether its results are spot-checked instead of replicated.
    pub trusted: bool,
    /// Whether it gets no more work.
    pub quarantined: bool,
    /// Units it handed back (failed, dropped, let expire).
    pub handbacks: u64,
}
