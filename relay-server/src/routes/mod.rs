//! HTTP endpoints. Handlers parse and answer; the scheduler and storage do the work.

pub mod auth;
pub mod events;
pub mod extract;
pub mod jobs;
pub mod kernels;
pub mod ledger;
pub mod network;
pub mod openapi;
pub mod ops;
pub mod rtc;
pub mod sites;
pub mod wallets;
pub mod wire;

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses(
    (status = 200, description = "The process is up", body = String),
))]
pub async fn healthz() -> &'static str {
    "ok"
}
