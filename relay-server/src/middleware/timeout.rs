//! The request timeout's answer: problem+json like every other error.

use crate::error::ApiError;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Gives the request timeout's bare 408 (`tower_http::timeout`) its problem+json body.
pub fn timeout_problem(response: Response, limit: std::time::Duration) -> Response {
    let bare = !response.headers().contains_key(header::CONTENT_TYPE);
    if response.status() == axum::http::StatusCode::REQUEST_TIMEOUT && bare {
        return ApiError::Timeout {
            limit_secs: limit.as_secs(),
        }
        .into_response();
    }
    response
}
