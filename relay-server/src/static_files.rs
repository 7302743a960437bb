//! The web app and the public assets: files from `dist/` (as `scripts/build-ui.sh` built
//! them, with their brotli and gzip siblings) and then `public/`; the app's own pages get
//! its `index.html`, `/widget` the widget's own smaller `widget.html` (where the build
//! made one; a Trunk build has only the app, which also routes `/widget`), any other path
//! a real 404.
//!
//! The app is compressed once, at build time: brotli at its best quality takes about
//! 1.5 s of CPU for its wasm, which no relay should spend per request. `public/` is not
//! built (`widget.js` is edited and served as it is), and its files are a few KB, so it
//! is gzipped per request instead; so are the app's pages and the 404 page when `dist/`
//! has no precompressed siblings (a Trunk build). The app's own files then go as they are.

use crate::app::StaticDirs;
use crate::middleware::security_headers::is_widget;
use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, VARY};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::{Layer as _, ServiceExt as _};
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};

/// Paths the app routes itself (`web-ui/src/app.rs`): each answers with its `index.html`.
/// `/widget` also owns its sub-paths, as the app and the security headers treat them.
fn is_app_page(path: &str) -> bool {
    matches!(path, "/" | "/console" | "/network") || is_widget(path)
}

/// Length of the content hash `build-ui.sh` (and Trunk) put in a file's name.
const HASH_HEX_DIGITS: usize = 16;

/// Whether `path` names a content-hashed build output (`style-0123456789abcdef.css`):
/// its bytes never change under that name, so caches may keep it for good. Anything else
/// (`index.html`, the worker's loader, `widget.js`) keeps its name across builds.
fn is_content_hashed(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let Some((stem, extension)) = name.rsplit_once('.') else {
        return false;
    };
    let Some((_, hash)) = stem.rsplit_once('-') else {
        return false;
    };
    matches!(extension, "wasm" | "js" | "css")
        && hash.len() == HASH_HEX_DIGITS
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A year: the longest `max-age` caches honour.
const FOREVER: &str = "public, max-age=31536000, immutable";
/// Kept, but checked with the server (`If-Modified-Since`) before each use, so a new
/// build shows on the next load.
const REVALIDATE: &str = "no-cache";

/// Layer adding `Cache-Control` to every static answer, and `Vary: Accept-Encoding` to
/// the files themselves, whose bytes depend on what the browser accepts.
async fn cache_headers(request: Request, next: Next) -> Response {
    let hashed = is_content_hashed(request.uri().path());
    let mut response = next.run(request).await;
    let status = response.status();
    let file = status.is_success() || status == StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    let policy = if file && hashed { FOREVER } else { REVALIDATE };
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(policy));
    // The per-request compression adds it to what it compresses.
    let varies = headers
        .get_all(VARY)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"accept-encoding"));
    if file && !varies {
        headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    }
    response
}

/// What a browser shows for a path that is neither a file nor one of the app's pages.
const NOT_FOUND_PAGE: &str = "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Not found · Starling</title></head>\n<body style=\"font-family: system-ui, sans-serif; \
margin: 4rem auto; max-width: 32rem; padding: 0 1rem\">\n<h1>Not found</h1>\n\
<p>Nothing lives at this address. <a href=\"/\">Lend your GPU</a>, open the \
<a href=\"/console\">console</a> or see the <a href=\"/network\">network</a>.</p>\n\
</body>\n</html>\n";

/// The HTML files that start the two bundles.
#[derive(Clone)]
struct Pages {
    app: ServeFile,
    widget: ServeFile,
}

/// The app's `index.html` for its own pages, the widget's page for `/widget`; a 404 page
/// for anything else.
async fn app_page_or_not_found(State(pages): State<Pages>, request: Request) -> Response {
    let path = request.uri().path();
    let page = if is_widget(path) {
        pages.widget
    } else if is_app_page(path) {
        pages.app
    } else {
        return (
            StatusCode::NOT_FOUND,
            [(CONTENT_TYPE, "text/html; charset=utf-8")],
            NOT_FOUND_PAGE,
        )
            .into_response();
    };
    match page.oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(never) => match never {},
    }
}

/// Serves `dirs`: the app's files, then the public ones, then the app's pages or a 404.
pub fn service(dirs: &StaticDirs) -> Router {
    let page = |name: &str| {
        ServeFile::new(dirs.app.join(name))
            .precompressed_br()
            .precompressed_gzip()
    };
    let widget = if dirs.app.join("widget.html").is_file() {
        "widget.html"
    } else {
        "index.html"
    };
    let pages = Router::new()
        .fallback(app_page_or_not_found)
        .with_state(Pages {
            app: page("index.html"),
            widget: page(widget),
        });
    let files = ServeDir::new(&dirs.app)
        .precompressed_br()
        .precompressed_gzip()
        .fallback(CompressionLayer::new().layer(ServeDir::new(&dirs.public).fallback(pages)));
    Router::new()
        .fallback_service(files)
        .layer(middleware::from_fn(cache_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_answers_its_own_pages_only() {
        for path in [
            "/",
            "/console",
            "/network",
            "/widget",
            "/widget/",
            "/widget/x",
        ] {
            assert!(is_app_page(path), "{path}");
        }
        for path in [
            "/consoles",
            "/console/",
            "/widgets",
            "/nope",
            "/index.htm",
            "",
        ] {
            assert!(!is_app_page(path), "{path}");
        }
    }

    #[test]
    fn only_build_outputs_with_a_full_hash_are_content_hashed() {
        for path in [
            "/starling-web-ui-a1b4d8a72fcad47e.wasm",
            "/starling-web-ui-cc7d314a1be86c38.js",
            "/style-09dbf58faf3f1b21.css",
        ] {
            assert!(is_content_hashed(path), "{path}");
        }
        for path in [
            "/index.html",
            "/starling-cpu-worker_loader.js",
            "/widget.js",
            "/style-09dbf58faf3f1b2.css",
            "/style-09DBF58FAF3F1B21.css",
            "/style-09dbf58faf3f1b21.html",
            "/style-09dbf58faf3f1b21",
            "/",
        ] {
            assert!(!is_content_hashed(path), "{path}");
        }
    }
}
