//! Counting every answered request, by method and status, for `/metrics`.

use crate::app::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Requests answered, by method and status.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl HttpMetrics {
    pub(crate) fn record(&self, method: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((method.to_owned(), status)).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<(String, u16), u64> {
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
