//! `GET /api/v1/rtc/ice-servers` through the real router: what a volunteer is told, that
//! no cache may keep a minted credential, and that someone farming credentials is rate
//! limited like any other client of `/api/v1`. (coturn's side, that it accepts what is
//! minted and refuses stretched, forged and expired credentials, is `e2e/tests/turn.rs`.)

mod common;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use common::TempDir;
use starling_api::IceServers;
use starling_kernels::Catalog;
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use starling_relay::middleware::RateLimit;
use starling_relay::rtc::ice_servers::{mint, IceServersConfig, TurnCredentials};
use starling_relay::scheduler::{Scheduler, SchedulerConfig};
use starling_relay::storage::Storage;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt as _;

const SECRET: &[u8] = b"router-test-secret";
const BURST: u32 = 3;

async fn relay(dir: &TempDir, ice: IceServersConfig) -> Router {
    let storage = Storage::open(dir).await.expect("storage opens");
    let scheduler = Scheduler::new(
        storage,
        Arc::new(Catalog::builtin()),
        SchedulerConfig::default(),
    );
    let limits = Limits {
        rate: RateLimit {
            per_second: 0.01,
            burst: BURST,
        },
        ..Limits::default()
    };
    let state = AppState::new(
        scheduler,
        starling_webrtc_native::AnswerConfig {
            bind_ip: [127, 0, 0, 1].into(),
            open_timeout: Duration::from_secs(1),
            tcp: false,
        },
        limits,
    )
    .with_ice_servers(ice);
    let dirs = StaticDirs {
        app: dir.join("dist"),
        public: dir.join("public"),
    };
    app::router(state, &dirs)
}

async fn ask(router: &Router, from: [u8; 4]) -> Response {
    let mut request = Request::get("/api/v1/rtc/ice-servers")
        .body(Body::empty())
        .expect("valid request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((from, 40_000))));
    router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible")
}

async fn servers(response: Response) -> IceServers {
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .expect("a body");
    serde_json::from_slice(&body).expect("an IceServers answer")
}

#[tokio::test]
async fn volunteers_get_fresh_minted_credentials_that_no_cache_keeps() {
    let dir = TempDir::new("ice-servers");
    let router = relay(
        &dir,
        IceServersConfig {
            stun: vec!["stun:stun.example.org:3478".into()],
            turn: vec!["turn:turn.example.org:3478?transport=udp".into()],
            credentials: TurnCredentials::Minted {
                secret: SECRET.to_vec(),
                ttl: Duration::from_secs(900),
            },
        },
    )
    .await;
    let response = ask(&router, [192, 0, 2, 1]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get(header::CACHE_CONTROL)
            .map(|v| v.as_bytes()),
        Some(&b"no-store"[..])
    );
    let first = servers(response).await;
    assert_eq!(first.ttl_secs, Some(900));
    assert_eq!(first.ice_servers.len(), 2);
    let turn = &first.ice_servers[1];
    let username = turn.username.clone().expect("a TURN user name");
    let (expiry, id) = username.split_once(':').expect("expiry:id");
    let expiry: u64 = expiry.parse().expect("a Unix time");
    assert_eq!(
        turn.credential.as_deref(),
        Some(mint(SECRET, expiry, id).1.as_str()),
        "the password is the secret's HMAC of the user name"
    );
    let second = servers(ask(&router, [192, 0, 2, 1]).await).await;
    assert_ne!(second.ice_servers[1].username, turn.username);
}

#[tokio::test]
async fn farming_credentials_is_rate_limited_per_address() {
    let dir = TempDir::new("ice-servers-farm");
    let router = relay(
        &dir,
        IceServersConfig {
            stun: vec![],
            turn: vec!["turn:turn.example.org:3478".into()],
            credentials: TurnCredentials::Minted {
                secret: SECRET.to_vec(),
                ttl: Duration::from_secs(900),
            },
        },
    )
    .await;
    for _ in 0..BURST {
        assert_eq!(
            ask(&router, [198, 51, 100, 7]).await.status(),
            StatusCode::OK
        );
    }
    let refused = ask(&router, [198, 51, 100, 7]).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    // Another address still gets its credential.
    assert_eq!(
        ask(&router, [198, 51, 100, 8]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_relay_without_ice_servers_says_so() {
    let dir = TempDir::new("ice-servers-none");
    let router = relay(&dir, IceServersConfig::default()).await;
    let response = ask(&router, [192, 0, 2, 9]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(servers(response).await, IceServers::default());
}
