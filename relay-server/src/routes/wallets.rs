//! `/api/v1/wallets`: what the relay knows about a volunteer wallet.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::wire;
use axum::extract::{Path, State};
use axum::Json;
use starling_api::{Problem, Wallet};
use starling_protocol::WalletAddress;

/// A wallet address from a request, or a 422 naming `field`.
pub(crate) fn parse_address(raw: &str, field: &str) -> Result<WalletAddress, ApiError> {
    raw.parse().map_err(|e| ApiError::Invalid {
        detail: format!("`{raw}` is not a wallet address: {e}"),
        field: Some(field.into()),
    })
}

/// `GET /api/v1/wallets/{address}`: the wallet's validated and invalid results, error
/// rate, units handed back, and whether it is trusted (spot-checked instead of
/// replicated) or quarantined.
#[utoipa::path(
    get,
    path = "/api/v1/wallets/{address}",
    tag = "wallets",
    params(("address" = String, Path, description = "Wallet address (st1…)")),
    responses(
        (status = 200, description = "The wallet's standing", body = Wallet),
        (status = 404, description = "The wallet has not volunteered yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a wallet address (format or checksum)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    Path(address): Path<String>,
) -> Result<Json<Wallet>, ApiError> {
    let address = parse_address(&address, "address")?;
    let storage = state.scheduler.storage();
    let record = storage
        .wallet(&address)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("wallet {address} has not volunteered yet")))?;
    let balance = storage
        .balance(&crate::ledger::Account::Wallet(address))
        .await?;
    Ok(Json(wire::wallet(record, balance)))
}
