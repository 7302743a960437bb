//! HTTP endpoints. Handlers parse and answer; the scheduler and storage do the work.

pub mod auth;
pub mod events;
pub mod extract;
pub mod jobs;
pub mod ledger;
pub mod network;
pub mod openapi;
pub mod ops;
pub mod rtc;
pub mod sites;
pub mod wallets;
pub mod wire;

use crate::app::AppState;
use axum::extract::State;
use axum::Json;
use starling_api::KernelCatalog;

/// `GET /api/v1/kernels`: the catalog with parameter schemas.
#[utoipa::path(get, path = "/api/v1/kernels", tag = "kernels", responses(
    (status = 200, description = "Every kernel, with its parameters' JSON Schema", body = KernelCatalog),
))]
pub async fn kernels(State(state): State<AppState>) -> Json<KernelCatalog> {
    let kernels = state.scheduler.catalog().infos();
    Json(KernelCatalog {
        kernels: kernels.into_iter().map(wire::kernel).collect(),
    })
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "The process is up", body = String),
))]
pub async fn healthz() -> &'static str {
    "ok"
}
