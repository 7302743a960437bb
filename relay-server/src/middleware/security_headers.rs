//! Headers every response carries, as a public web service should: no MIME sniffing, no
//! referrer leaking job or wallet ids to other sites, and a content security policy that
//! lets the web app run its wasm while keeping pages out of other sites' frames, but for
//! the widget, which sites embed by design (`public/widget.js`). Over HTTPS served by
//! the relay itself, HSTS too.

use axum::extract::Request;
use axum::http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// What pages may load, shared by every path. `'unsafe-inline'` in `script-src`: Trunk's
/// built `index.html` starts the wasm from an inline module script whose text (hashed
/// file names) changes with every build, and the API docs page renders from an inline
/// script. `'wasm-unsafe-eval'`: compiling the app's and the CPU worker's wasm (the
/// worker's script is one of ours, so `worker-src 'self'`). Images may also be inline
/// (`data:`) or made in the page (`blob:`).
macro_rules! policy {
    ($frame_ancestors:literal) => {
        concat!(
            "default-src 'self'; ",
            "script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; ",
            "style-src 'self' 'unsafe-inline'; ",
            "img-src 'self' data: blob:; ",
            "connect-src 'self'; ",
            "worker-src 'self'; ",
            "object-src 'none'; ",
            "base-uri 'self'; ",
            "form-action 'self'; ",
            "frame-ancestors ",
            $frame_ancestors
        )
    };
}

/// Everywhere but the widget: no site may frame the console or the API (clickjacking).
const POLICY: &str = policy!("'none'");
/// The widget: any site may embed it; that is what it is for.
const WIDGET_POLICY: &str = policy!("*");

/// Marks a request that came over the relay's own TLS (see `tls.rs`): only its answers
/// carry HSTS. Plain HTTP never does (RFC 6797 tells browsers to ignore it there), and
/// a relay behind a TLS proxy leaves HSTS to the proxy, which knows the public name.
#[derive(Debug, Clone, Copy)]
pub struct ServedOverTls;

/// A year; no `includeSubDomains`: the relay cannot know what else runs under its name.
const HSTS: &str = "max-age=31536000";

/// Whether `path` is the embeddable widget page (`/widget`, `/widget/…`).
pub(crate) fn is_widget(path: &str) -> bool {
    path.strip_prefix("/widget")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Layer adding the security headers to every response. A handler's own
/// `Content-Security-Policy` (none sets one today) is kept.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let widget = is_widget(request.uri().path());
    let over_tls = request.extensions().get::<ServedOverTls>().is_some();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if over_tls {
        headers.insert(STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let policy = if widget { WIDGET_POLICY } else { POLICY };
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(policy));
    if widget {
        // X-Frame-Options has no "anyone" value: leaving it out is how a page says so.
        headers.remove(X_FRAME_OPTIONS);
    } else {
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_widget_and_its_sub_paths_are_the_widget() {
        for path in ["/widget", "/widget/", "/widget/settings"] {
            assert!(is_widget(path), "{path}");
        }
        for path in ["/", "/widgets", "/widget.js", "/console", "/api/v1/widget"] {
            assert!(!is_widget(path), "{path}");
        }
    }
}
