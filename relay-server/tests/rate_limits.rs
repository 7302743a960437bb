//! The `/api/v1` rate limits against a client that makes up API keys: each request with
//! a fresh made-up bearer token must still draw on its address's bucket, so new tokens
//! buy no new requests (issue 20), while a verified key has a bucket of its own wherever
//! it connects from. Driven through the real router, with the peer address a socket
//! would give.

mod common;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use common::TempDir;
use starling_protocol::WalletKey;
use starling_relay::app::Limits;
use starling_relay::ledger::MicroCredits;
use starling_relay::middleware::RateLimit;
use starling_relay::storage::Storage;
use std::net::SocketAddr;
use tower::ServiceExt as _;

/// Requests each address and each account may make at once; the rate is slow enough
/// that no token comes back while a test runs.
const BURST: u32 = 5;

async fn relay(dir: &TempDir) -> (Router, Storage) {
    let storage = Storage::open(dir).await.expect("storage opens");
    let limits = Limits {
        rate: RateLimit {
            per_second: 0.01,
            burst: BURST,
        },
        ..Limits::default()
    };
    (
        common::router::router(dir, storage.clone(), limits),
        storage,
    )
}

/// `GET /api/v1/kernels` from `from`, with `Authorization: Bearer <token>` if given.
async fn kernels(router: &Router, from: [u8; 4], token: Option<&str>) -> Response {
    let mut request = Request::get("/api/v1/kernels");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut request = request.body(Body::empty()).expect("valid request");
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((from, 40_000))));
    router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible")
}

fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A key the relay never issued, different every time.
fn made_up_token() -> String {
    format!("stk_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn made_up_keys_share_their_address_bucket() {
    let dir = TempDir::new("rate-made-up-keys");
    let (router, _storage) = relay(&dir).await;
    let attacker = [198, 51, 100, 7];
    for n in 0..BURST {
        let answer = kernels(&router, attacker, Some(&made_up_token())).await;
        assert_eq!(
            answer.status(),
            StatusCode::UNAUTHORIZED,
            "made-up key {n} is refused as unknown, not served"
        );
    }
    // The address's burst is spent: a fresh token changes nothing, whatever it is.
    for _ in 0..3 * BURST {
        let refused = kernels(&router, attacker, Some(&made_up_token())).await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            retry_after(&refused).is_some_and(|s| s >= 1),
            "429 carries Retry-After: {:?}",
            refused.headers()
        );
    }
    let anonymous = kernels(&router, attacker, None).await;
    assert_eq!(
        anonymous.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the unknown keys spent the address's tokens, no more and no fewer"
    );
    assert_eq!(
        kernels(&router, [203, 0, 113, 9], None).await.status(),
        StatusCode::OK,
        "another address has its own bucket"
    );
}

#[tokio::test]
async fn an_unknown_key_costs_one_token_of_its_address() {
    let dir = TempDir::new("rate-unknown-key-share");
    let (router, _storage) = relay(&dir).await;
    let client = [198, 51, 100, 8];
    assert_eq!(
        kernels(&router, client, Some(&made_up_token()))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    for n in 1..BURST {
        assert_eq!(
            kernels(&router, client, None).await.status(),
            StatusCode::OK,
            "request {n} of the burst"
        );
    }
    assert_eq!(
        kernels(&router, client, None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn a_verified_key_has_its_own_bucket_wherever_it_connects_from() {
    let dir = TempDir::new("rate-verified-key");
    let (router, storage) = relay(&dir).await;
    let relay_key = WalletKey::from_seed(rand::random());
    let (_, api_key) = storage
        .create_account(&relay_key, MicroCredits(0), None)
        .await
        .expect("account created");
    // A fresh address each time, so only the account's bucket runs out.
    for n in 0..BURST {
        let from = [192, 0, 2, u8::try_from(n).expect("a small burst")];
        assert_eq!(
            kernels(&router, from, Some(&api_key)).await.status(),
            StatusCode::OK,
            "request {n} of the account's burst"
        );
    }
    let refused = kernels(&router, [192, 0, 2, 200], Some(&api_key)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&refused).is_some_and(|s| s >= 1));
    assert_eq!(
        kernels(&router, [192, 0, 2, 201], None).await.status(),
        StatusCode::OK,
        "the account's bucket is not its addresses'"
    );
}
