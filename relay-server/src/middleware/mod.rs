//! HTTP layers that wrap the routes: admission (rate limits, then the API key), request
//! counting, the timeout's problem+json, and the security headers every response carries.

pub mod forwarded;
pub mod metrics;
pub mod rate_limit;
pub mod security_headers;
pub mod timeout;

pub use forwarded::{forwarded_client, TrustedProxies};
pub use metrics::{count_requests, HttpMetrics};
pub use rate_limit::{admit, RateLimit, RateLimiter};
pub use security_headers::{security_headers, ServedOverTls};
pub use timeout::timeout_problem;
