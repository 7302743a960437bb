//! Submitter authentication: `Authorization: Bearer <API key>`, checked against the
//! hashed keys of the accounts table.
//!
//! The key is checked once per request, by the layer in front of every `/api/v1` route
//! ([`crate::middleware::admit`]), before any handler runs and so before any body is
//! read: an unknown key is a 401 that costs one indexed lookup, never a parsed upload.
//! Handlers then take who the caller is from the [`Submitter`] or [`Authenticated`]
//! extractors.

use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::AccountId;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
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

/// The account whose key a request carried, verified: put in the request's extensions
/// by the admission layer, read by the extractors below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified(pub AccountId);

/// Checks a request's key, if it has one: `Ok(None)` without a key, 401 with a key the
/// relay does not know.
pub async fn verify(state: &AppState, headers: &HeaderMap) -> Result<Option<Verified>, ApiError> {
    let Some(token) = bearer(headers) else {
        return Ok(None);
    };
    state
        .scheduler
        .storage()
        .account_by_api_key(token)
        .await?
        .map(|id| Some(Verified(id)))
        .ok_or_else(|| ApiError::Unauthorized("the API key is not valid".into()))
}

fn key_needed() -> ApiError {
    ApiError::Unauthorized(
        "this needs an API key: `Authorization: Bearer <key>` \
         (`relay-server keys create` makes one; the relay prints a development key)"
            .into(),
    )
}

/// Whom a job route acts for, and so which jobs it may see: a job answers only to the
/// account that submitted it. A relay that bills jobs requires a key (401 otherwise);
/// one that does not (tests of other parts) also takes anonymous callers, who then see
/// only anonymous jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submitter(pub Option<AccountId>);

impl FromRequestParts<AppState> for Submitter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match parts.extensions.get::<Verified>() {
            Some(Verified(id)) => Ok(Self(Some(*id))),
            None if state.scheduler.storage().billing().is_none() => Ok(Self(None)),
            None => Err(key_needed()),
        }
    }
}

/// The caller's account, for routes that always need one (401 without a valid key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated(pub AccountId);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Verified>()
            .map(|Verified(id)| Self(*id))
            .ok_or_else(key_needed)
    }
}
