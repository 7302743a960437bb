//! HTTP endpoints. Handlers parse and answer; the scheduler and storage do the work.

pub mod auth;
pub mod events;
pub mod jobs;
pub mod ledger;
pub mod network;
pub mod openapi;
pub mod ops;
pub mod rtc;
pub mod sites;
pub mod wallets;

use crate::app::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// `GET /api/v1/kernels`: the catalog with parameter schemas.
#[utoipa::path(get, path = "/api/v1/kernels", tag = "kernels", responses(
    (status = 200, description = "`{kernels: [...]}`: id, version, params_schema (JSON Schema), inputs, output_content_type, comparison, spot_check", body = Object),
))]
pub async fn kernels(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "kernels": state.scheduler.catalog().infos() }))
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "The process is up", body = String),
))]
pub async fn healthz() -> &'static str {
    "ok"
}
