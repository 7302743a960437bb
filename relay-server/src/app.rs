//! The router and the state its handlers share.

use crate::middleware::{HttpMetrics, RateLimit, RateLimiter};
use crate::routes;
use crate::scheduler::Scheduler;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::timeout::TimeoutLayer;

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest total of a job's inputs, however they were encoded.
    pub max_input_bytes: usize,
    /// Requests per client under `/api/v1`.
    pub rate: RateLimit,
    /// Jobs one account may have queued or running at once.
    pub max_active_jobs: u64,
    /// How long a request may take (body upload included) before it is answered 408.
    /// Event streams are exempt.
    pub request_timeout: Duration,
    /// Job event streams open at once across the relay.
    pub max_event_streams: usize,
    /// Job event streams one account may have open at once.
    pub max_event_streams_per_account: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024 * 1024,
            max_input_bytes: 64 * 1024 * 1024,
            rate: RateLimit {
                per_second: 100.0,
                burst: 1000,
            },
            max_active_jobs: 100,
            request_timeout: Duration::from_secs(60),
            max_event_streams: 2000,
            max_event_streams_per_account: 50,
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

/// Tells long-lived work (event streams, volunteer sessions) that the relay is stopping,
/// so graceful shutdown does not wait for every watched job to finish, and keeps track of
/// the peer sessions so shutdown can wait for them to hand their leases back.
#[derive(Debug)]
pub struct Shutdown {
    stopping: tokio::sync::watch::Sender<bool>,
    sessions: tokio_util::task::TaskTracker,
}

impl Shutdown {
    fn new() -> Self {
        Self {
            stopping: tokio::sync::watch::Sender::new(false),
            sessions: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Starts shutting down: every [`Shutdown::wait`] returns.
    pub fn begin(&self) {
        self.stopping.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Returns once shutdown has begun.
    pub async fn wait(&self) {
        let mut stopping = self.stopping.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = stopping.wait_for(|s| *s).await;
    }

    /// Runs a peer session as a task [`Shutdown::sessions_ended`] waits for.
    pub fn spawn_session(&self, session: impl std::future::Future<Output = ()> + Send + 'static) {
        self.sessions.spawn(session);
    }

    /// After [`Shutdown::begin`]: waits up to `within` for every peer session to end
    /// (each releases its leases and closes its connection as it does); whether they all
    /// did.
    pub async fn sessions_ended(&self, within: std::time::Duration) -> bool {
        self.sessions.close();
        tokio::time::timeout(within, self.sessions.wait())
            .await
            .is_ok()
    }
}

/// State shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The scheduler (and through it, storage and the catalog).
    pub scheduler: Scheduler,
    /// How the relay's WebRTC side binds.
    pub rtc: Arc<starling_webrtc_native::AnswerConfig>,
    /// Request limits.
    pub limits: Limits,
    /// Requests answered, for `/metrics`.
    pub http_metrics: Arc<HttpMetrics>,
    /// Token buckets per client address and per verified account.
    pub rate_limiter: Arc<RateLimiter>,
    /// Held while a submission with an `Idempotency-Key` checks, creates and records, so
    /// concurrent retries of one request create one job.
    pub idempotent_submits: Arc<tokio::sync::Mutex<()>>,
    /// Signals that the relay is stopping.
    pub shutdown: Arc<Shutdown>,
    /// WebRTC peers answered and not yet proved by a hello, under their caps.
    pub pending_peers: Arc<crate::rtc::PendingPeers>,
    /// Job event streams open now.
    pub event_streams: Arc<routes::events::StreamSlots>,
    /// Proves registering sites' origins (https only unless built with
    /// [`AppState::allow_http_sites`]).
    pub sites: crate::sites::SiteVerifier,
}

impl AppState {
    /// State for a relay with these parts.
    pub fn new(
        scheduler: Scheduler,
        rtc: starling_webrtc_native::AnswerConfig,
        limits: Limits,
    ) -> Self {
        Self {
            scheduler,
            rtc: Arc::new(rtc),
            rate_limiter: Arc::new(RateLimiter::new(limits.rate)),
            limits,
            http_metrics: Arc::default(),
            idempotent_submits: Arc::default(),
            shutdown: Arc::new(Shutdown::new()),
            pending_peers: Arc::default(),
            event_streams: Arc::default(),
            sites: crate::sites::SiteVerifier::default(),
        }
    }

    /// Lets site registrations prove loopback origins over plain http (tests, local
    /// development); never on a public relay.
    pub fn allow_http_sites(mut self) -> Self {
        self.sites = crate::sites::SiteVerifier::new(true);
        self
    }
}

/// A route: method, path and handler. The method is written once and used both to
/// register the handler and to list the route.
type Route = (Method, &'static str, MethodRouter<AppState>);

macro_rules! routes {
    ($($method:ident $path:literal => $handler:expr),* $(,)?) => {
        vec![$((Method::$method, $path, on(MethodFilter::$method, $handler))),*]
    };
}

/// Routes under `/api/v1` (rate limited), paths relative to it.
fn api_routes() -> Vec<Route> {
    routes![
        GET "/kernels" => routes::kernels,
        GET "/stats" => routes::network::stats,
        GET "/leaderboard" => routes::network::leaderboard,
        POST "/jobs" => routes::jobs::submit,
        GET "/jobs" => routes::jobs::list,
        GET "/jobs/{id}" => routes::jobs::get,
        DELETE "/jobs/{id}" => routes::jobs::cancel,
        GET "/jobs/{id}/result" => routes::jobs::result,
        GET "/jobs/{id}/events" => routes::events::events,
        GET "/jobs/{id}/units" => routes::jobs::units,
        DELETE "/jobs/{id}/data" => routes::jobs::purge,
        GET "/wallets/{address}" => routes::wallets::get,
        GET "/wallets/{address}/history" => routes::ledger::history,
        GET "/ledger" => routes::ledger::ledger,
        GET "/account" => routes::ledger::account,
        POST "/transfers" => routes::ledger::transfer,
        POST "/sites" => routes::sites::register,
        // An offer is a few KiB: a bigger body is refused after this many bytes, not
        // buffered up to the global limit.
        POST "/rtc/offer" => routes::rtc::offer
            .layer(DefaultBodyLimit::max(crate::rtc::MAX_OFFER_BODY_BYTES)),
        GET "/openapi.json" => routes::openapi::openapi_json,
        GET "/docs" => routes::openapi::docs,
    ]
}

/// Routes at the root, for probes and scrapers (not rate limited).
fn root_routes() -> Vec<Route> {
    routes![
        GET "/healthz" => routes::healthz,
        GET "/readyz" => routes::ops::readyz,
        GET "/metrics" => routes::ops::metrics,
    ]
}

/// Every route the router answers besides static files, as (method, full path). The
/// OpenAPI test compares this list with the document.
pub fn route_table() -> Vec<(Method, String)> {
    let api = api_routes()
        .into_iter()
        .map(|(method, path, _)| (method, format!("/api/v1{path}")));
    let root = root_routes()
        .into_iter()
        .map(|(method, path, _)| (method, path.to_owned()));
    api.chain(root).collect()
}

/// The route whose responses are meant to last (Server-Sent Events): exempt from the
/// request timeout, bounded by its own limits instead (see `routes::events`).
const STREAMING: &str = "/jobs/{id}/events";

/// `handler` answering 408 (problem+json) when it takes longer than `limit`.
fn timed(handler: MethodRouter<AppState>, limit: Duration) -> MethodRouter<AppState> {
    handler
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limit,
        ))
        .layer(middleware::map_response(
            move |response: axum::response::Response| async move {
                crate::middleware::timeout_problem(response, limit)
            },
        ))
}

/// Builds the whole router.
pub fn router(state: AppState, dirs: &StaticDirs) -> Router {
    let limit = state.limits.request_timeout;
    // `route` merges handlers given for the same path under different methods.
    let api = api_routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            let handler = if path == STREAMING {
                handler
            } else {
                timed(handler, limit)
            };
            router.route(path, handler)
        })
        .fallback(|| async { crate::error::ApiError::NotFound("no such API endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::admit,
        ));
    // The single-page app answers unknown paths with its index.html.
    let files = ServeDir::new(&dirs.app).fallback(
        ServeDir::new(&dirs.public).fallback(ServeFile::new(dirs.app.join("index.html"))),
    );
    root_routes()
        .into_iter()
        .fold(
            Router::new().nest("/api/v1", api),
            |router, (_, path, handler)| router.route(path, timed(handler, limit)),
        )
        .fallback_service(files)
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::count_requests,
        ))
        .layer(middleware::from_fn(crate::middleware::security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
