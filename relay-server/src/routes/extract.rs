//! Extractors whose rejections are [`ApiError`]s, so a handler never maps a bad query or
//! body by hand and every refusal is problem+json.

use crate::app::AppState;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// The query string as `T`; 422 naming what does not fit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// A JSON body as `T`, whatever its content type says: 400 when it is not JSON or not a
/// `T`, 413 over the relay's body limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::unreadable_body(e, state.limits.max_body_bytes))?;
        serde_json::from_slice(&body)
            .map(Self)
            .map_err(|e| ApiError::Malformed {
                detail: format!("body is not {}: {e}", described::<T>()),
            })
    }
}

/// "a TransferRequest" for `starling_api::ledger::TransferRequest`: the type's own name,
/// which is also its schema's name in the OpenAPI document.
fn described<T>() -> String {
    let name = std::any::type_name::<T>();
    let name = name.rsplit("::").next().unwrap_or(name);
    format!("a valid {name}")
}
