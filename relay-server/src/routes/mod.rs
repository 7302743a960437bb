//! HTTP endpoints. Handlers parse and answer; the scheduler and storage do the work.

pub mod events;
pub mod jobs;
pub mod ops;
pub mod rtc;

use crate::app::AppState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// `GET /api/v1/kernels`: the catalog with parameter schemas.
pub async fn kernels(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "kernels": state.scheduler.catalog().infos() }))
}

/// `GET /api/v1/stats`: what the network looks like now.
pub async fn stats(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "volunteers": state.scheduler.volunteers() }))
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> &'static str {
    "ok"
}
