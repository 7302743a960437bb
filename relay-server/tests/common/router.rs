//! The relay's router in the test process, without a socket: requests go through
//! `tower::ServiceExt::oneshot`, as axum's testing example does.

// Each test binary uses what it needs of this module.
#![allow(dead_code)]

use axum::Router;
use starling_kernels::Catalog;
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use starling_relay::scheduler::{Scheduler, SchedulerConfig};
use starling_relay::storage::Storage;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
