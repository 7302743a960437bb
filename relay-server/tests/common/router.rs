//! The relay's router in the test process, without a socket: requests go through
//! `tower::ServiceExt::oneshot`, as axum's testing example does.

// Each test binary uses what it needs of this module.
#![allow(dead_code)]

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::Value;
use starling_api::Problem;
use starling_kernels::Catalog;
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use starling_relay::scheduler::{Scheduler, SchedulerConfig};
use starling_relay::storage::Storage;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

/// The router over `storage` (opened in `dir`, whose `dist/` and `public/` it serves),
/// with the default scheduler and these limits.
pub fn router(dir: &Path, storage: Storage, limits: Limits) -> Router {
    let dirs = StaticDirs {
        app: dir.join("dist"),
        public: dir.join("public"),
    };
    serving(storage, limits, &dirs)
}

/// [`router`] serving the web app from `dirs`.
pub fn serving(storage: Storage, limits: Limits, dirs: &StaticDirs) -> Router {
    let scheduler = Scheduler::new(
        storage,
        Arc::new(Catalog::builtin()),
        SchedulerConfig::default(),
    );
    let state = AppState::new(
        scheduler,
        starling_webrtc_native::AnswerConfig {
            bind_ip: [127, 0, 0, 1].into(),
            open_timeout: Duration::from_secs(1),
            tcp: false,
        },
        limits,
    );
    app::router(state, dirs)
}

/// A response, read whole.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Content-Type`, or empty.
    pub content_type: String,
    /// All its headers.
    pub headers: axum::http::HeaderMap,
    /// Its body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (a string of the body where it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into()))
    }

    /// The body as the API type it must be.
    pub fn decode<T: DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    /// Asserts a problem+json answer with this status and field; returns its detail.
    pub fn problem(&self, status: u16, field: Option<&str>) -> String {
        let body = self.json();
        assert_eq!(self.status.as_u16(), status, "{body}");
        assert_eq!(self.content_type, "application/problem+json", "{body}");
        let problem: Problem = self.decode();
        assert_eq!(problem.status, status, "{body}");
        assert_eq!(problem.field.as_deref(), field, "{body}");
        problem.detail
    }
}

/// `request` through `router`, and its whole answer.
pub async fn call(router: &Router, request: Request<Body>) -> Answer {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body reads")
        .to_vec();
    Answer {
        status,
        content_type,
        headers,
        body,
    }
}
