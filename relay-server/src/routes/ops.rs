//! Operations endpoints and layers: readiness, Prometheus metrics, request counting and
//! per-client rate limiting.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::auth;
use crate::routes::openapi::ProblemDoc;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// `GET /readyz`: 200 when the database answers, 503 problem+json when it does not.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = String),
    (status = 503, description = "The database does not answer", body = ProblemDoc, content_type = "application/problem+json"),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.scheduler.storage().ping().await.map_err(|e| {
        tracing::warn!("not ready: {e}");
        ApiError::Unavailable("the database does not answer".into())
    })?;
    Ok("ready")
}

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

/// Requests answered, by method and status.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl HttpMetrics {
    fn record(&self, method: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((method.to_owned(), status)).or_default() += 1;
    }

    fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Layer counting every answered request for `/metrics`.
pub async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    // Clients can send any method token; only the standard ones get their own series,
    // so made-up methods cannot grow the metrics without bound.
    let method = match request.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m,
        _ => "other",
    }
    .to_owned();
    let response = next.run(request).await;
    state
        .http_metrics
        .record(&method, response.status().as_u16());
    response
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: Prometheus text exposition (format 0.0.4), written by hand to keep the
/// relay free of a metrics stack for a dozen numbers.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text exposition 0.0.4", body = String, content_type = "text/plain"),
))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let counts = state.scheduler.storage().counts().await?;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        out,
        "# HELP starling_volunteers_connected Volunteers connected now.\n\
         # TYPE starling_volunteers_connected gauge\n\
         starling_volunteers_connected {}",
        state.scheduler.volunteers()
    );
    let rates = state.scheduler.throughput();
    let _ = writeln!(
        out,
        "# HELP starling_network_gflops GFLOP of returned results per second, last minute.\n\
         # TYPE starling_network_gflops gauge\n\
         starling_network_gflops {}\n\
         # HELP starling_units_settled_per_second Units verified per second, last minute.\n\
         # TYPE starling_units_settled_per_second gauge\n\
         starling_units_settled_per_second {}",
        rates.gflops, rates.units_per_s
    );
    out.push_str("# HELP starling_jobs Jobs by state.\n# TYPE starling_jobs gauge\n");
    for job_state in ["queued", "running", "done", "failed", "cancelled"] {
        let n = counts
            .jobs
            .iter()
            .find(|(s, _)| s == job_state)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "starling_jobs{{state=\"{job_state}\"}} {n}");
    }
    out.push_str(
        "# HELP starling_units Work units by kernel and state.\n# TYPE starling_units gauge\n",
    );
    for (kernel, unit_state, n) in &counts.units {
        let _ = writeln!(
            out,
            "starling_units{{kernel=\"{}\",state=\"{}\"}} {n}",
            label(kernel),
            label(unit_state)
        );
    }
    let (buckets, count, sum) = state.scheduler.lease_latency().snapshot();
    out.push_str(
        "# HELP starling_lease_seconds Time to grant a lease (pick, decide quorum, commit).\n\
         # TYPE starling_lease_seconds histogram\n",
    );
    for (bound, n) in buckets {
        let _ = writeln!(out, "starling_lease_seconds_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "starling_lease_seconds_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "starling_lease_seconds_sum {sum}");
    let _ = writeln!(out, "starling_lease_seconds_count {count}");
    let storage = state.scheduler.storage();
    let mut totals: std::collections::BTreeMap<&str, i128> = std::collections::BTreeMap::new();
    for (account, micro) in storage.balances().await? {
        let kind = match account {
            crate::ledger::Account::Wallet(_) => "wallets",
            crate::ledger::Account::Submitter(_) => "submitters",
            crate::ledger::Account::Escrow(_) => "escrow",
            crate::ledger::Account::Platform => "platform",
            crate::ledger::Account::Issuance => "issuance",
        };
        *totals.entry(kind).or_default() += micro;
    }
    out.push_str(
        "# HELP starling_ledger_micro_credits Ledger balances summed by kind of account (issuance is negative: all balances sum to 0).\n\
         # TYPE starling_ledger_micro_credits gauge\n",
    );
    for (kind, micro) in totals {
        let _ = writeln!(
            out,
            "starling_ledger_micro_credits{{accounts=\"{kind}\"}} {micro}"
        );
    }
    out.push_str(
        "# HELP starling_http_requests_total HTTP requests answered, by method and status.\n\
         # TYPE starling_http_requests_total counter\n",
    );
    for ((method, status), n) in state.http_metrics.snapshot() {
        let _ = writeln!(
            out,
            "starling_http_requests_total{{method=\"{}\",status=\"{status}\"}} {n}",
            label(&method)
        );
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// Token-bucket parameters; a rate of zero turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second each client regains.
    pub per_second: f64,
    /// Requests a client may make in one burst.
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets beyond this many trigger a sweep of the ones that are full again.
const SWEEP_ABOVE: usize = 10_000;

#[derive(Debug)]
struct Buckets {
    by_client: HashMap<String, Bucket>,
    /// Size that triggers the next sweep: at least twice what the last one left, so
    /// sweeps cost amortised O(1) per request even when most clients are active.
    sweep_at: usize,
}

/// One token bucket per client key.
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// A limiter with `limit` for every client.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(Buckets {
                by_client: HashMap::new(),
                sweep_at: SWEEP_ABOVE,
            }),
        }
    }

    /// Takes a token for `key` at `now`; on refusal, the whole seconds until one is back.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        let RateLimit { per_second, burst } = self.limit;
        if per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.by_client.len() > buckets.sweep_at {
            buckets.by_client.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst
            });
            buckets.sweep_at = SWEEP_ABOVE.max(2 * buckets.by_client.len());
        }
        let bucket = buckets.by_client.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

/// The layer in front of every `/api/v1` route: rate limits, then the API key.
///
/// Every request takes a token from its address's bucket first, so a flood of made-up
/// keys is limited like anonymous requests and costs no more than they do. A request
/// with a key is then checked (401 for an unknown key, before any handler runs or any
/// body is read), and a verified account also takes a token from a bucket of its own,
/// wherever it connects from. The verified account goes into the request's extensions
/// for the handlers' extractors ([`crate::routes::auth::Submitter`]).
pub async fn admit(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let limited = |retry_after_secs| ApiError::RateLimited { retry_after_secs };
    let address = peer.map_or_else(|| "ip:unknown".to_owned(), |a| format!("ip:{}", a.ip()));
    let now = Instant::now();
    state.rate_limiter.check(&address, now).map_err(limited)?;
    if let Some(verified) = auth::verify(&state, request.headers()).await? {
        state
            .rate_limiter
            .check(&format!("account:{}", verified.0), now)
            .map_err(limited)?;
        request.extensions_mut().insert(verified);
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refuses_beyond_burst_and_refills_at_rate() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("a", t0), Ok(()));
        }
        assert_eq!(limiter.check("a", t0), Err(1));
        assert_eq!(limiter.check("b", t0), Ok(()), "buckets are per client");
        let later = t0 + Duration::from_millis(500);
        assert_eq!(limiter.check("a", later), Ok(()));
        assert_eq!(limiter.check("a", later), Err(1));
    }
}
