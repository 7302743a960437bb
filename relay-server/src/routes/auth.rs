//! Submitter authentication: `Authorization: Bearer <API key>`, checked against the
//! hashed keys of the accounts table.

use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::AccountId;
use axum::http::{header, HeaderMap};

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// The account a request acts for. A relay that bills jobs requires a valid key (401
/// otherwise); one that does not (tests of other parts) takes anonymous requests.
pub async fn submitter(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<AccountId>, ApiError> {
    if state.scheduler.storage().billing().is_none() {
        return Ok(None);
    }
    account(state, headers).await.map(Some)
}

/// The account whose API key the request carries: 401 without one, or with one the
/// relay does not know.
pub async fn account(state: &AppState, headers: &HeaderMap) -> Result<AccountId, ApiError> {
    let token = bearer(headers).ok_or_else(|| {
        ApiError::Unauthorized(
            "this needs an API key: `Authorization: Bearer <key>` \
             (`relay-server keys create` makes one; the relay prints a development key)"
                .into(),
        )
    })?;
    state
        .scheduler
        .storage()
        .account_by_api_key(token)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the API key is not valid".into()))
}
