//! The web app's files through the real router (no socket), over a `dist/` laid out as
//! `scripts/build-ui.sh` builds it and the repository's own `public/`: precompressed
//! bodies for browsers that accept them, hashed files cached for good and the rest
//! revalidated, the app's pages answered with its index.html and any other path a 404.

mod common;

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use common::TempDir;
use starling_relay::app::{Limits, StaticDirs};
use starling_relay::storage::Storage;
use std::path::{Path, PathBuf};
use tower::ServiceExt as _;

const WASM: &str = "starling-web-ui-0123456789abcdef.wasm";
const INDEX: &str = "<!doctype html><title>app</title>";

/// The repository's `public/`, whose robots.txt and icons a deployment serves.
fn public_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../public")
}

/// A relay over a `dist/` holding index.html and a hashed wasm, each with `.br` and
/// `.gz` siblings whose bytes say which one was sent.
async fn relay(dir: &Path) -> Router {
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).expect("dist");
    for (name, body) in [("index.html", INDEX), (WASM, "wasm")] {
        std::fs::write(dist.join(name), body).expect("file");
        std::fs::write(dist.join(format!("{name}.br")), format!("br {body}")).expect("br");
        std::fs::write(dist.join(format!("{name}.gz")), format!("gz {body}")).expect("gz");
    }
    let storage = Storage::open(dir).await.expect("storage opens");
    common::router::serving(
        storage,
        Limits::default(),
        &StaticDirs {
            app: dist,
            public: public_dir(),
        },
    )
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
    bytes: Vec<u8>,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn get(router: &Router, path: &str, headers: &[(header::HeaderName, &str)]) -> Answer {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("valid request"))
        .await
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body reads");
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        bytes: body.to_vec(),
    }
}

#[tokio::test]
async fn browsers_get_the_precompressed_body_they_accept() {
    let dir = TempDir::new("static-encodings");
    let router = relay(&dir).await;
    let path = format!("/{WASM}");
    for (accepted, encoding, body) in [
        ("br", "br", "br wasm"),
        ("gzip", "gzip", "gz wasm"),
        // What Chromium sends.
        ("gzip, deflate, br, zstd", "br", "br wasm"),
        ("identity", "", "wasm"),
        ("", "", "wasm"),
    ] {
        let answer = get(&router, &path, &[(header::ACCEPT_ENCODING, accepted)]).await;
        assert_eq!(answer.status, StatusCode::OK, "{accepted:?}");
        assert_eq!(answer.body, body, "{accepted:?}");
        assert_eq!(
            answer.header(header::CONTENT_ENCODING),
            encoding,
            "{accepted:?}"
        );
        assert_eq!(answer.header(header::CONTENT_TYPE), "application/wasm");
        assert!(
            answer
                .header(header::VARY)
                .to_ascii_lowercase()
                .contains("accept-encoding"),
            "{accepted:?}: {:?}",
            answer.headers
        );
        assert_eq!(
            answer.header(header::CACHE_CONTROL),
            "public, max-age=31536000, immutable",
            "a hashed file never changes under its name"
        );
    }
    // The app's pages are compressed too.
    let page = get(&router, "/console", &[(header::ACCEPT_ENCODING, "br")]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, format!("br {INDEX}"));
    assert_eq!(page.header(header::CONTENT_ENCODING), "br");
}

#[tokio::test]
async fn files_that_keep_their_name_are_revalidated() {
    let dir = TempDir::new("static-revalidate");
    let router = relay(&dir).await;
    for path in [
        "/",
        "/index.html",
        "/console",
        "/widget",
        "/widget.js",
        "/robots.txt",
    ] {
        let answer = get(&router, path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.header(header::CACHE_CONTROL), "no-cache", "{path}");
        let modified = answer.header(header::LAST_MODIFIED).to_owned();
        assert!(!modified.is_empty(), "{path}: nothing to revalidate with");
        let again = get(&router, path, &[(header::IF_MODIFIED_SINCE, &modified)]).await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.body.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404_while_the_app_keeps_its_pages() {
    let dir = TempDir::new("static-not-found");
    let router = relay(&dir).await;
    for path in [
        "/",
        "/console",
        "/network",
        "/widget",
        "/widget/",
        "/widget/x",
    ] {
        let answer = get(&router, path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(answer.body, INDEX, "{path}");
        assert!(answer.header(header::CONTENT_TYPE).starts_with("text/html"));
    }
    for path in [
        "/nope",
        "/console/",
        "/consoles",
        "/wp-login.php",
        "/api",
        "/starling-web-ui-ffffffffffffffff.wasm",
    ] {
        let answer = get(&router, path, &[]).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert!(
            answer.header(header::CONTENT_TYPE).starts_with("text/html"),
            "{path}"
        );
        assert!(answer.body.contains("Not found"), "{path}: {}", answer.body);
        assert_eq!(answer.header(header::CACHE_CONTROL), "no-cache", "{path}");
    }
    // The API's own 404 is still problem+json.
    let api = get(&router, "/api/v1/nope", &[]).await;
    assert_eq!(api.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.header(header::CONTENT_TYPE),
        "application/problem+json",
        "{}",
        api.body
    );
}

#[tokio::test]
async fn robots_and_icons_are_real_files() {
    let dir = TempDir::new("static-robots");
    let router = relay(&dir).await;
    let robots = get(&router, "/robots.txt", &[]).await;
    assert_eq!(robots.status, StatusCode::OK);
    assert!(robots
        .header(header::CONTENT_TYPE)
        .starts_with("text/plain"));
    let rules: Vec<&str> = robots
        .body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    assert_eq!(
        rules,
        ["User-agent: *", "Allow: /", "Disallow: /api/"],
        "{}",
        robots.body
    );
    for (path, kind) in [
        ("/favicon.ico", "image/x-icon"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let icon = get(&router, path, &[]).await;
        assert_eq!(icon.status, StatusCode::OK, "{path}");
        assert_eq!(icon.header(header::CONTENT_TYPE), kind, "{path}");
        assert!(!icon.body.is_empty(), "{path}");
    }
}

#[tokio::test]
async fn public_files_are_gzipped_as_they_are_served() {
    let dir = TempDir::new("static-public-gzip");
    let router = relay(&dir).await;
    let plain = get(&router, "/widget.js", &[]).await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.header(header::CONTENT_ENCODING), "");
    let gzipped = get(
        &router,
        "/widget.js",
        &[(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")],
    )
    .await;
    assert_eq!(gzipped.status, StatusCode::OK);
    assert_eq!(gzipped.header(header::CONTENT_ENCODING), "gzip");
    assert!(gzipped.bytes.starts_with(&[0x1f, 0x8b]), "a gzip stream");
    assert!(gzipped.bytes.len() < plain.bytes.len());
    let vary: Vec<_> = gzipped.headers.get_all(header::VARY).iter().collect();
    assert_eq!(vary, ["accept-encoding"], "Vary once");
    assert_eq!(gzipped.header(header::CACHE_CONTROL), "no-cache");
}

#[tokio::test]
async fn no_path_reaches_outside_the_served_directories() {
    let dir = TempDir::new("static-traversal");
    let router = relay(&dir).await;
    // Beside dist/ lie the database and the relay's key files; stand in for them.
    const SECRET: &str = "the relay's secret key";
    std::fs::write(dir.join("relay.key"), SECRET).expect("secret");
    for path in [
        "/../relay.key",
        "/%2e%2e/relay.key",
        "/..%2frelay.key",
        "/..%5crelay.key",
        "/%2e%2e%2frelay.key",
        "/widget/../../relay.key",
        "//relay.key",
        "/dist/../relay.key",
    ] {
        for accepted in ["", "br", "gzip"] {
            let answer = get(&router, path, &[(header::ACCEPT_ENCODING, accepted)]).await;
            assert!(
                !answer.body.contains(SECRET),
                "{path} ({accepted:?}) served a file outside dist/ and public/"
            );
            // `/widget/…` is the widget's page whatever follows: the app's index, no file.
            if answer.status == StatusCode::OK {
                assert!(path.starts_with("/widget/"), "{path} ({accepted:?})");
                assert!(answer.body.contains(INDEX), "{path} ({accepted:?})");
            }
        }
    }
}
