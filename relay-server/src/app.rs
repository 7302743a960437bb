//! The router and the state its handlers share.

use crate::routes;
use crate::routes::ops::{HttpMetrics, RateLimit, RateLimiter};
use crate::scheduler::Scheduler;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
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
    /// Largest total of a job's inputs, however they were encoded.
    pub max_input_bytes: usize,
    /// Requests per client under `/api/v1`.
    pub rate: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            max_input_bytes: 64 * 1024 * 1024,
            rate: RateLimit {
                per_second: 100.0,
                burst: 1000.0,
            },
        }
    }
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
    /// Requests answered, for `/metrics`.
    pub http_metrics: Arc<HttpMetrics>,
    /// Per-client token buckets.
    pub rate_limiter: Arc<RateLimiter>,
    /// Held while a submission with an `Idempotency-Key` checks, creates and records, so
    /// concurrent retries of one request create one job.
    pub idempotent_submits: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    /// State for a relay with these parts.
    pub fn new(scheduler: Scheduler, rtc: starling_peer::AnswerConfig, limits: Limits) -> Self {
        Self {
            scheduler,
            rtc: Arc::new(rtc),
            rate_limiter: Arc::new(RateLimiter::new(limits.rate)),
            limits,
            http_metrics: Arc::default(),
            idempotent_submits: Arc::default(),
        }
    }
}

/// Builds the whole router.
pub fn router(state: AppState, dirs: &StaticDirs) -> Router {
    let api = Router::new()
        .route("/kernels", get(routes::kernels))
        .route("/stats", get(routes::stats))
        .route("/jobs", post(routes::jobs::submit).get(routes::jobs::list))
        .route(
            "/jobs/{id}",
            get(routes::jobs::get).delete(routes::jobs::cancel),
        )
        .route("/jobs/{id}/result", get(routes::jobs::result))
        .route("/jobs/{id}/events", get(routes::events::events))
        .route("/rtc/offer", post(routes::rtc::offer))
        .fallback(|| async { crate::error::ApiError::NotFound("no such API endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::ops::rate_limit,
        ));
    // The single-page app answers unknown paths with its index.html.
    let files = ServeDir::new(&dirs.app).fallback(
        ServeDir::new(&dirs.public).fallback(ServeFile::new(dirs.app.join("index.html"))),
    );
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .fallback_service(files)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            routes::ops::count_requests,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
