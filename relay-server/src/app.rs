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
use tower_http::timeout::TimeoutLayer;
use utoipa::__dev::{SchemaReferences, Tags};
use utoipa::openapi::path::{HttpMethod, Paths};
use utoipa::openapi::{RefOr, Schema};

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
    /// The built web app (`dist/`, from `scripts/build-ui.sh` or Trunk).
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
    /// Signals that the relay is stopping.
    pub shutdown: Arc<Shutdown>,
    /// WebRTC peers answered and not yet proved by a hello, under their caps.
    pub pending_peers: Arc<crate::rtc::PendingPeers>,
    /// Job event streams open now.
    pub event_streams: Arc<routes::events::StreamSlots>,
    /// Proves registering sites' origins (https only unless built with
    /// [`AppState::allow_http_sites`]).
    pub sites: crate::sites::SiteVerifier,
    /// The STUN and TURN servers volunteers are told to use (none unless built with
    /// [`AppState::with_ice_servers`]).
    pub ice_servers: Arc<crate::rtc::ice_servers::IceServersConfig>,
    /// Load balancers whose `X-Forwarded-For` names the client (none unless built with
    /// [`AppState::with_trusted_proxies`]).
    pub trusted_proxies: crate::middleware::TrustedProxies,
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
            shutdown: Arc::new(Shutdown::new()),
            pending_peers: Arc::default(),
            event_streams: Arc::default(),
            sites: crate::sites::SiteVerifier::default(),
            ice_servers: Arc::default(),
            trusted_proxies: crate::middleware::TrustedProxies::default(),
        }
    }

    /// Believes these load balancers' `X-Forwarded-For` (see
    /// [`crate::middleware::forwarded`]).
    pub fn with_trusted_proxies(mut self, proxies: Vec<std::net::IpAddr>) -> Self {
        self.trusted_proxies = crate::middleware::TrustedProxies(proxies.into());
        self
    }

    /// Advertises these STUN and TURN servers to volunteers.
    pub fn with_ice_servers(mut self, servers: crate::rtc::ice_servers::IceServersConfig) -> Self {
        self.ice_servers = Arc::new(servers);
        self
    }

    /// Lets site registrations prove loopback origins over plain http (tests, local
    /// development); never on a public relay.
    pub fn allow_http_sites(mut self) -> Self {
        self.sites = crate::sites::SiteVerifier::new(true);
        self
    }
}

/// Named schemas an endpoint's bodies use, for the document's components.
pub(crate) type Schemas = Vec<(String, RefOr<Schema>)>;

/// An endpoint: its handler, and where it is served and how the OpenAPI document
/// describes it, both read from the handler's `#[utoipa::path]` attribute.
pub(crate) struct Route {
    methods: Vec<Method>,
    path: String,
    handler: MethodRouter<AppState>,
    describe: fn(&mut Paths, &mut Schemas),
}

impl Route {
    /// The route of `handler`, whose `#[utoipa::path]` generated `P`.
    fn new<P, H, T>(handler: H) -> Self
    where
        P: utoipa::Path + SchemaReferences + for<'t> Tags<'t>,
        H: Handler<T, AppState>,
        T: 'static,
    {
        let methods: Vec<Method> = P::methods().into_iter().map(http_method).collect();
        let filter = methods
            .iter()
            .filter_map(|method| MethodFilter::try_from(method.clone()).ok())
            .reduce(MethodFilter::or)
            // A `#[utoipa::path]` always names a method; GET stands in should one not.
            .unwrap_or(MethodFilter::GET);
        Self {
            methods,
            path: P::path(),
            handler: on(filter, handler),
            describe: describe::<P>,
        }
    }
}

/// Adds `P`'s operation to the document's paths and the schemas it uses to `schemas`,
/// tagged as its attribute says (what `utoipa-axum`'s `routes!` does).
fn describe<P>(paths: &mut Paths, schemas: &mut Schemas)
where
    P: utoipa::Path + SchemaReferences + for<'t> Tags<'t>,
{
    let mut operation = P::operation();
    let tags = <P as Tags>::tags();
    if !tags.is_empty() {
        operation
            .tags
            .get_or_insert_with(Vec::new)
            .extend(tags.iter().map(|tag| tag.to_string()));
    }
    paths.add_path_operation(P::path(), P::methods(), operation);
    P::schemas(schemas);
}

fn http_method(method: HttpMethod) -> Method {
    match method {
        HttpMethod::Get => Method::GET,
        HttpMethod::Put => Method::PUT,
        HttpMethod::Post => Method::POST,
        HttpMethod::Delete => Method::DELETE,
        HttpMethod::Options => Method::OPTIONS,
        HttpMethod::Head => Method::HEAD,
        HttpMethod::Patch => Method::PATCH,
        HttpMethod::Trace => Method::TRACE,
    }
}

/// `route!(module::handler)`: the handler's [`Route`], its `#[utoipa::path]` type
/// (`module::__path_handler`) named for it; `route!(module::handler.layer(…))` layers it.
macro_rules! route {
    (@split [$($module:ident)*] $handler:ident $(.layer($layer:expr))?) => {
        paste::paste! {
            Route::new::<$($module::)* [<__path_ $handler>], _, _>(
                $($module::)* $handler $(.layer($layer))?
            )
        }
    };
    (@split [$($module:ident)*] $next:ident :: $($rest:tt)+) => {
        route!(@split [$($module)* $next] $($rest)+)
    };
    ($($path:tt)+) => {
        route!(@split [] $($path)+)
    };
}

/// Every endpoint, once: adding one here routes it and documents it. Paths come from
/// each handler's `#[utoipa::path]`; those under `/api/v1` are rate limited.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        route!(routes::kernels::list),
        route!(routes::kernels::register),
        route!(routes::kernels::get),
        route!(routes::network::stats),
        route!(routes::network::stats_history),
        route!(routes::network::leaderboard),
        route!(routes::jobs::submit),
        route!(routes::jobs::list),
        route!(routes::jobs::get),
        route!(routes::jobs::cancel),
        route!(routes::jobs::result),
        route!(routes::events::events),
        route!(routes::jobs::units),
        route!(routes::jobs::unit_states),
        route!(routes::jobs::purge),
        route!(routes::jobs::quote),
        route!(routes::jobs::unit_outputs),
        route!(routes::wallets::get),
        route!(routes::ledger::history),
        route!(routes::ledger::ledger),
        route!(routes::ledger::account),
        route!(routes::ledger::transfer),
        route!(routes::sites::register),
        // An offer is a few KiB: a bigger body is refused after this many bytes, not
        // buffered up to the global limit.
        route!(routes::rtc::offer.layer(DefaultBodyLimit::max(crate::rtc::MAX_OFFER_BODY_BYTES))),
        route!(routes::rtc::ice_servers),
        route!(routes::rtc::websocket),
        route!(routes::openapi::openapi_json),
        route!(routes::openapi::docs),
        // At the root, for probes and scrapers.
        route!(routes::healthz),
        route!(routes::ops::readyz),
        route!(routes::ops::metrics),
    ]
}

/// The OpenAPI paths of every route, and the schemas they use.
pub(crate) fn described_routes() -> (Paths, Schemas) {
    let mut paths = Paths::new();
    let mut schemas = Vec::new();
    for route in routes() {
        (route.describe)(&mut paths, &mut schemas);
    }
    (paths, schemas)
}

/// Every route the router answers besides static files, as (method, full path). The
/// OpenAPI test compares this list with the document.
pub fn route_table() -> Vec<(Method, String)> {
    routes()
        .into_iter()
        .flat_map(|route| {
            let path = route.path;
            route.methods.into_iter().map(move |m| (m, path.clone()))
        })
        .collect()
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
    let mut api = Router::new();
    let mut root = Router::new();
    // `route` merges handlers given for the same path under different methods.
    for route in routes() {
        match route.path.strip_prefix(starling_api::API_PREFIX) {
            Some(path) if path == STREAMING => api = api.route(path, route.handler),
            Some(path) => api = api.route(path, timed(route.handler, limit)),
            None => root = root.route(&route.path, timed(route.handler, limit)),
        }
    }
    let api = api
        .fallback(|| async { crate::error::ApiError::NotFound("no such API endpoint".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::admit,
        ));
    root.nest(starling_api::API_PREFIX, api)
        .fallback_service(crate::static_files::service(dirs))
        .layer(DefaultBodyLimit::max(state.limits.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::middleware::count_requests,
        ))
        .layer(middleware::from_fn(crate::middleware::security_headers))
        .layer(middleware::from_fn_with_state(
            state.trusted_proxies.clone(),
            crate::middleware::forwarded_client,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
