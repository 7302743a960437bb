//! The router and the state its handlers share.

use crate::routes;
use crate::scheduler::Scheduler;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use tower_http::services::{ServeDir, ServeFile};

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// Where the web UI and the static assets are.
#[derive(Debug, Clone)]
pub struct StaticDirs {
    /// Trunk's output (`dist/`).
    pub app: PathBuf,
    /// Assets served as they are (`public/`).
    pub public: PathBuf,
}

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The scheduler (and through it, storage and the catalog).
    pub scheduler: Scheduler,
    /// How the relay's WebRTC side binds.
    pub rtc: Arc<starling_peer::AnswerConfig>,
    /// Request limits.
    pub limits: Limits,
}

/// Builds the whole router.
pub fn router(state: AppState, dirs: &StaticDirs) -> Router {
    let api = Router::new()
        .route("/kernels", get(routes::kernels))
        .route("/stats", get(routes::stats))
        .route("/jobs", post(routes::jobs::submit))
        .route("/jobs/{id}", get(routes::jobs::get))
        .route("/jobs/{id}/result", get(routes::jobs::result))
        .route("/jobs/{id}/units", get(routes::jobs::units))
        .route("/wallets/{address}", get(routes::wallets::get))
        .route("/rtc/offer", post(routes::rtc::offer))
        .fallback(|| async { crate::error::ApiError::NotFound("no such API endpoint".into()) });
    // The single-page app answers unknown paths with its index.html.
    let files = ServeDir::new(&dirs.app).fallback(
        ServeDir::new(&dirs.public).fallback(ServeFile::new(dirs.app.join("index.html"))),
    );
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(routes::healthz))
        .fallback_service(files)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
