//! The credit ledger: the public ledger's pages, a wallet's history, a submitter's own
//! account, and signed transfers between wallets.

use serde::{Deserialize, Serialize};

/// Paging of ledger lists: entries after `after` (a sequence number), at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Entries with a sequence number above this one (0: from the start).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)
    )]
    pub after: u64,
    /// How many, 1 to 500 (default 100).
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500))]
    pub limit: Option<u32>,
}

/// One movement of credit, with its place in the hash chain and the relay's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    /// Position in the ledger: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// When it was appended, Unix ms.
    pub time_ms: i64,
    /// The account the credit leaves (`wallet:st1…`, `submitter:…`, `escrow:…`, `platform`, `issuance`).
    pub debit: String,
    /// The account the credit reaches.
    pub credit: String,
    /// How much moved, decimal credits.
    pub amount: String,
    /// The same in micro-credits.
    pub amount_micro: u64,
    /// Why it moved (`pay`, `site_share`, `refund`, `transfer`…).
    pub reason: String,
    /// What it moved for: a job, unit, lease id or a transfer's nonce.
    pub reference: String,
    /// The previous entry's `hash`, hex.
    pub prev_hash: String,
    /// SHA-256 of this entry's fields, hex.
    pub hash: String,
    /// The relay key's ed25519 signature over `hash`, hex.
    pub signature: String,
}

/// A page of `GET /api/v1/ledger`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerPage {
    /// The relay's signing key (st1…) the signatures verify under; null on a relay that
    /// keeps no ledger.
    pub relay_key: Option<String>,
    /// Entries, oldest first.
    pub entries: Vec<LedgerEntry>,
}

/// A page of `GET /api/v1/wallets/{address}/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WalletHistory {
    /// The wallet's address.
    pub address: String,
    /// Its balance now, decimal credits.
    pub balance: String,
    /// The same in micro-credits.
    pub balance_micro: u64,
    /// The wallet's credits and debits, oldest first.
    pub entries: Vec<LedgerEntry>,
}

/// `GET /api/v1/account`: the calling submitter's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    /// The account's id.
    pub id: String,
    /// Its balance, decimal credits.
    pub balance: String,
    /// The same in micro-credits.
    pub balance_micro: u64,
}

/// Body of `POST /api/v1/transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// The sending wallet (st1…).
    pub from: String,
    /// The receiving wallet (st1…).
    pub to: String,
    /// Credits to move, a decimal such as "0.25".
    pub amount: String,
    /// A number the sender never used before; a replay with the same nonce is refused,
    /// and so is a transfer whose nonce an earlier overdraft spent.
    pub nonce: u64,
    /// When the transfer stops being valid, in Unix milliseconds: after the relay's
    /// clock and at most 24 hours ahead of it.
    pub expires_ms: u64,
    /// The sender's ed25519 signature (128 hex characters) over the relay key, sender,
    /// recipient, amount in micro-credits, nonce and expiry (`WalletKey::sign_transfer`).
    pub signature: String,
}
