//! The credit ledger over HTTP: the public, paginated ledger with its hashes and
//! signatures, a wallet's history, a submitter's own account, and signed transfers.

use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::{Account, Entry, MicroCredits};
use crate::routes::auth::Authenticated;
use crate::routes::openapi::ProblemDoc;
use crate::routes::wallets::parse_address;
use crate::storage::{LedgerError, SignedTransfer};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use starling_protocol::Signature;

/// Paging of ledger lists: entries after `after` (a sequence number), at most `limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Entries with a sequence number above this one (0: from the start).
    #[serde(default)]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after: u64,
    /// How many, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

impl Page {
    /// `after`, refused beyond what a sequence number can be (SQLite integers are i64).
    fn after(&self) -> Result<u64, ApiError> {
        if self.after > i64::MAX as u64 {
            return Err(ApiError::Invalid {
                detail: format!("after must be at most {}, got {}", i64::MAX, self.after),
                field: Some("after".into()),
            });
        }
        Ok(self.after)
    }

    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(n @ 1..=500) => Ok(n),
            Some(n) => Err(ApiError::Invalid {
                detail: format!("limit must be 1 to 500, got {n}"),
                field: Some("limit".into()),
            }),
        }
    }
}

/// The query, or a 422 problem naming what is wrong with it (axum's own rejection is
/// plain text).
fn page(query: Result<Query<Page>, QueryRejection>) -> Result<Page, ApiError> {
    query
        .map(|Query(page)| page)
        .map_err(|e| ApiError::Invalid {
            detail: e.body_text(),
            field: None,
        })
}

/// An entry as the API shows it: amounts as decimal credits and as integer micro-credits.
pub fn entry_json(e: &Entry) -> Value {
    json!({
        "seq": e.seq,
        "time_ms": e.time_ms,
        "debit": e.debit.to_string(),
        "credit": e.credit.to_string(),
        "amount": e.amount.to_string(),
        "amount_micro": e.amount.0,
        "reason": e.reason.to_string(),
        "reference": e.reference,
        "prev_hash": hex::encode(e.prev_hash),
        "hash": hex::encode(e.hash),
        "signature": hex::encode(e.signature.0),
    })
}

fn relay_key(state: &AppState) -> Option<String> {
    state
        .scheduler
        .storage()
        .billing()
        .map(|b| b.key.address().to_string())
}

/// `GET /api/v1/ledger`: every movement of credit, oldest first, with the hash chain and
/// the relay's signatures, so anyone can check it (`relay-server audit` does the same).
#[utoipa::path(
    get,
    path = "/api/v1/ledger",
    tag = "ledger",
    params(Page),
    responses(
        (status = 200, description = "`{relay_key, entries: [{seq, time_ms, debit, credit, amount, amount_micro, reason, reference, prev_hash, hash, signature}]}`", body = Object),
        (status = 422, description = "Bad paging", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn ledger(
    State(state): State<AppState>,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let page = page(query)?;
    let entries = state
        .scheduler
        .storage()
        .ledger_page(page.after()?, page.limit()?)
        .await?;
    Ok(Json(json!({
        "relay_key": relay_key(&state),
        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/wallets/{address}/history`: the wallet's credits and debits.
#[utoipa::path(
    get,
    path = "/api/v1/wallets/{address}/history",
    tag = "wallets",
    params(("address" = String, Path, description = "Wallet address (st1…)"), Page),
    responses(
        (status = 200, description = "`{address, balance, entries: [...]}`", body = Object),
        (status = 422, description = "Not a wallet address, or bad paging", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Path(address): Path<String>,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let page = page(query)?;
    let address = parse_address(&address, "address")?;
    let account = Account::Wallet(address);
    let storage = state.scheduler.storage();
    let entries = storage
        .account_history(&account, page.after()?, page.limit()?)
        .await?;
    let balance = storage.balance(&account).await?;
    Ok(Json(json!({
        "address": address.to_string(),
        "balance": balance.to_string(),
        "balance_micro": balance.0,
        "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/account`: the calling submitter's account and balance.
#[utoipa::path(
    get,
    path = "/api/v1/account",
    tag = "ledger",
    responses(
        (status = 200, description = "`{id, balance, balance_micro}`", body = Object),
        (status = 401, description = "No API key, or not a valid one", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn account(
    State(state): State<AppState>,
    Authenticated(id): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let balance = state
        .scheduler
        .storage()
        .balance(&Account::Submitter(id))
        .await?;
    Ok(Json(json!({
        "id": id.to_string(),
        "balance": balance.to_string(),
        "balance_micro": balance.0,
    })))
}

/// Body of `POST /api/v1/transfers`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
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

fn signature(hex_text: &str) -> Result<Signature, ApiError> {
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(hex_text, &mut bytes).map_err(|_| ApiError::Invalid {
        detail: "signature must be 128 hex characters".into(),
        field: Some("signature".into()),
    })?;
    Ok(Signature(bytes))
}

/// `POST /api/v1/transfers`: moves credit between wallets, signed by the sender's key,
/// so volunteers can spend what they earned. 201 with the ledger entry. A signed
/// transfer runs at most once and only until its expiry.
#[utoipa::path(
    post,
    path = "/api/v1/transfers",
    tag = "ledger",
    request_body = TransferRequest,
    responses(
        (status = 201, description = "The ledger entry", body = Object),
        (status = 400, description = "Body is not a transfer", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 402, description = "The sender cannot cover it (the nonce is spent: sign again with a new one)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "The nonce was already used (a replay, or a refused overdraft)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "Bad address, amount or signature; a forged signature; or `expires_ms` in the past or more than 24 hours ahead", body = ProblemDoc, content_type = "application/problem+json"),
    )
)]
pub async fn transfer(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: TransferRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed {
            detail: format!("body is not a transfer: {e}"),
        })?;
    let from = parse_address(&request.from, "from")?;
    let to = parse_address(&request.to, "to")?;
    let amount: MicroCredits = request.amount.parse().map_err(|e| ApiError::Invalid {
        detail: format!("amount `{}`: {e}", request.amount),
        field: Some("amount".into()),
    })?;
    let transfer = SignedTransfer {
        from,
        to,
        amount,
        nonce: request.nonce,
        expires_ms: request.expires_ms,
        signature: signature(&request.signature)?,
    };
    let storage = state.scheduler.storage();
    let billing = storage
        .billing()
        .ok_or_else(|| ApiError::Conflict("this relay keeps no ledger".into()))?;
    match storage.transfer(&billing.key, &transfer).await {
        Ok(entry) => Ok((StatusCode::CREATED, Json(entry_json(&entry)))),
        Err(e) => Err(match e {
            LedgerError::Overdraft { .. } => ApiError::PaymentRequired(e.to_string()),
            LedgerError::NonceReused { .. } => ApiError::Conflict(e.to_string()),
            LedgerError::TransferExpired { .. } | LedgerError::ExpiryTooFar { .. } => {
                ApiError::Invalid {
                    detail: e.to_string(),
                    field: Some("expires_ms".into()),
                }
            }
            LedgerError::ForgedTransfer { .. } => ApiError::Invalid {
                detail: e.to_string(),
                field: Some("signature".into()),
            },
            LedgerError::Storage(s) => ApiError::from(s),
            other => ApiError::Invalid {
                detail: other.to_string(),
                field: None,
            },
        }),
    }
}
