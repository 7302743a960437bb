//! Per-client rate limiting and API-key admission in front of every `/api/v1` route.

use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::AccountId;
use crate::routes::auth;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::Quota;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Token-bucket parameters; a rate of zero turns limiting off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests per second each client regains.
    pub per_second: f64,
    /// Requests a client may make in one burst (at least 1).
    pub burst: u32,
}

/// Whose bucket a request takes a token from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    /// The peer's IP address; `None` when the server recorded none (a router driven
    /// without a socket), and then all such requests share one bucket.
    Address(Option<IpAddr>),
    /// An account whose API key was verified, wherever it connects from.
    Account(AccountId),
}

type Buckets<C> = governor::RateLimiter<
    Client,
    DefaultKeyedStateStore<Client>,
    C,
    NoOpMiddleware<<C as Clock>::Instant>,
>;

/// Buckets beyond this many trigger a sweep of the ones that are full again.
const SWEEP_ABOVE: usize = 10_000;

/// Most time one bucket may take to refill completely. governor counts time in u64
/// nanoseconds (584 years) and multiplies the refill period by the burst, so a slower
/// rate is clamped to this one; a bucket that refills once a year is as good as never.
const SLOWEST_FULL_REFILL: Duration = Duration::from_secs(365 * 24 * 3600);

/// One token bucket per client address and per verified account.
#[derive(Debug)]
pub struct RateLimiter<C: Clock = DefaultClock> {
    /// `None` when limiting is off.
    buckets: Option<Buckets<C>>,
    /// Bucket count that triggers the next sweep: at least twice what the last one left,
    /// so sweeps cost amortised O(1) per request even when most clients are active.
    sweep_at: AtomicUsize,
}

impl RateLimiter {
    /// A limiter with `limit` for every client.
    pub fn new(limit: RateLimit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

/// The quota of `limit`, or `None` when it turns limiting off.
fn quota(limit: RateLimit) -> Option<Quota> {
    // NaN turns limiting off, as zero does (and as it did in the hand-written buckets).
    if limit.per_second.is_nan() || limit.per_second <= 0.0 {
        return None;
    }
    let burst = NonZeroU32::new(limit.burst.max(1))?;
    let period = Duration::try_from_secs_f64(limit.per_second.recip())
        .unwrap_or(Duration::MAX)
        .min(SLOWEST_FULL_REFILL / burst.get())
        // Faster than a token a nanosecond is unlimited in practice; governor wants a
        // period it can count.
        .max(Duration::from_nanos(1));
    Some(Quota::with_period(period)?.allow_burst(burst))
}

impl<C: Clock> RateLimiter<C> {
    fn with_clock(limit: RateLimit, clock: C) -> Self {
        Self {
            buckets: quota(limit)
                .map(|quota| Buckets::new(quota, DefaultKeyedStateStore::default(), clock)),
            sweep_at: AtomicUsize::new(SWEEP_ABOVE),
        }
    }

    /// Takes a token from `client`'s bucket; on refusal, the whole seconds until one is
    /// back (at least 1, as `Retry-After` says).
    fn check(&self, client: &Client) -> Result<(), u64> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        // Full buckets are what a new client gets anyway: dropping them bounds memory by
        // the clients active within one refill, however many addresses come and go.
        if buckets.len() > self.sweep_at.load(Ordering::Relaxed) {
            buckets.retain_recent();
            buckets.shrink_to_fit();
            self.sweep_at
                .store(SWEEP_ABOVE.max(2 * buckets.len()), Ordering::Relaxed);
        }
        buckets.check_key(client).map_err(|refused| {
            let wait = refused.wait_time_from(buckets.clock().now());
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
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
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let limited = |retry_after_secs| ApiError::RateLimited { retry_after_secs };
    state
        .rate_limiter
        .check(&Client::Address(address))
        .map_err(limited)?;
    if let Some(verified) = auth::verify(&state, request.headers()).await? {
        state
            .rate_limiter
            .check(&Client::Account(verified.0))
            .map_err(limited)?;
        request.extensions_mut().insert(verified);
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn address(n: u32) -> Client {
        Client::Address(Some(IpAddr::from(n.to_be_bytes())))
    }

    #[test]
    fn bucket_refuses_beyond_burst_and_refills_at_rate() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(
            RateLimit {
                per_second: 2.0,
                burst: 3,
            },
            clock.clone(),
        );
        let (a, b) = (address(1), address(2));
        for _ in 0..3 {
            assert_eq!(limiter.check(&a), Ok(()));
        }
        assert_eq!(limiter.check(&a), Err(1));
        assert_eq!(limiter.check(&b), Ok(()), "buckets are per client");
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(&a), Ok(()));
        assert_eq!(limiter.check(&a), Err(1));
    }

    #[test]
    fn zero_rate_turns_limiting_off_and_extreme_rates_do_not_panic() {
        for per_second in [0.0, -1.0, f64::NAN] {
            let limiter = RateLimiter::new(RateLimit {
                per_second,
                burst: 1,
            });
            for _ in 0..10 {
                assert_eq!(limiter.check(&address(1)), Ok(()), "{per_second}");
            }
        }
        for per_second in [f64::MIN_POSITIVE, 1e-12, 1e12, f64::INFINITY] {
            let limiter = RateLimiter::new(RateLimit {
                per_second,
                burst: u32::MAX,
            });
            assert_eq!(limiter.check(&address(1)), Ok(()), "{per_second}");
        }
        let slowest = RateLimiter::new(RateLimit {
            per_second: 1e-12,
            burst: 1,
        });
        assert_eq!(slowest.check(&address(1)), Ok(()));
        assert!(slowest.check(&address(1)).is_err());
    }

    #[test]
    fn buckets_of_clients_gone_quiet_are_swept() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::with_clock(
            RateLimit {
                per_second: 1000.0,
                burst: 1,
            },
            clock.clone(),
        );
        let buckets = limiter.buckets.as_ref().expect("limiting is on");
        // Five times the sweep threshold of addresses, each seen once and full again a
        // millisecond later.
        for n in 0..5 * SWEEP_ABOVE as u32 {
            assert_eq!(limiter.check(&address(n)), Ok(()));
            assert!(
                buckets.len() <= SWEEP_ABOVE + 1,
                "{} buckets",
                buckets.len()
            );
            clock.advance(Duration::from_millis(2));
        }
    }
}
