//! Per-client rate limiting and API-key admission in front of every `/api/v1` route.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::auth;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

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
