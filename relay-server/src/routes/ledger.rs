//! The credit ledger over HTTP: the public, paginated ledger with its hashes and
//! signatures, a wallet's history, a submitter's own account, and signed transfers.

use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::{Account, MicroCredits};
use crate::routes::auth::Authenticated;
use crate::routes::extract::{JsonBody, Query};
use crate::routes::wallets::parse_address;
use crate::routes::wire;
use crate::storage::{LedgerError, SignedTransfer};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use starling_api::ledger::LedgerQuery;
use starling_api::{LedgerEntry, LedgerPage, Problem, TransferRequest, WalletHistory};
use starling_protocol::Signature;

/// A ledger page's `after` and `limit`, checked as serde cannot: `after` is refused
/// beyond what a sequence number can be (SQLite integers are i64), `limit` is 1 to 500
/// (default 100).
fn paging(query: &LedgerQuery) -> Result<(u64, u32), ApiError> {
    if query.after > i64::MAX as u64 {
        return Err(ApiError::Invalid {
            detail: format!("after must be at most {}, got {}", i64::MAX, query.after),
            field: Some("after".into()),
        });
    }
    let limit = match query.limit {
        None => 100,
        Some(n @ 1..=500) => n,
        Some(n) => {
            return Err(ApiError::Invalid {
                detail: format!("limit must be 1 to 500, got {n}"),
                field: Some("limit".into()),
            })
        }
    };
    Ok((query.after, limit))
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
    params(LedgerQuery),
    responses(
        (status = 200, description = "A page of entries, oldest first, and the key that signed them", body = LedgerPage),
        (status = 422, description = "Bad paging", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn ledger(
    State(state): State<AppState>,
    Query(page): Query<LedgerQuery>,
) -> Result<Json<LedgerPage>, ApiError> {
    let (after, limit) = paging(&page)?;
    let entries = state.scheduler.storage().ledger_page(after, limit).await?;
    Ok(Json(LedgerPage {
        relay_key: relay_key(&state),
        entries: entries.iter().map(wire::ledger_entry).collect(),
    }))
}

/// `GET /api/v1/wallets/{address}/history`: the wallet's credits and debits.
#[utoipa::path(
    get,
    path = "/api/v1/wallets/{address}/history",
    tag = "wallets",
    params(("address" = String, Path, description = "Wallet address (st1…)"), LedgerQuery),
    responses(
        (status = 200, description = "The wallet's balance and a page of its entries", body = WalletHistory),
        (status = 422, description = "Not a wallet address, or bad paging", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    Path(address): Path<String>,
    Query(page): Query<LedgerQuery>,
) -> Result<Json<WalletHistory>, ApiError> {
    let address = parse_address(&address, "address")?;
    let (after, limit) = paging(&page)?;
    let account = Account::Wallet(address);
    let storage = state.scheduler.storage();
    let entries = storage.account_history(&account, after, limit).await?;
    let balance = storage.balance(&account).await?;
    Ok(Json(wire::wallet_history(&address, balance, &entries)))
}

/// `GET /api/v1/account`: the calling submitter's account and balance.
#[utoipa::path(
    get,
    path = "/api/v1/account",
    tag = "ledger",
    responses(
        (status = 200, description = "The caller's account and balance", body = starling_api::Account),
        (status = 401, description = "No API key, or not a valid one", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn account(
    State(state): State<AppState>,
    Authenticated(id): Authenticated,
) -> Result<Json<starling_api::Account>, ApiError> {
    let balance = state
        .scheduler
        .storage()
        .balance(&Account::Submitter(id))
        .await?;
    Ok(Json(wire::account(id, balance)))
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
        (status = 201, description = "The ledger entry", body = LedgerEntry),
        (status = 400, description = "Body is not a transfer", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "The sender cannot cover it (the nonce is spent: sign again with a new one)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The nonce was already used (a replay, or a refused overdraft)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad address, amount or signature; a forged signature; or `expires_ms` in the past or more than 24 hours ahead", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn transfer(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<TransferRequest>,
) -> Result<(StatusCode, Json<LedgerEntry>), ApiError> {
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
        Ok(entry) => Ok((StatusCode::CREATED, Json(wire::ledger_entry(&entry)))),
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
