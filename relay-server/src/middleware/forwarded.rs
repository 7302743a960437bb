//! The client's address behind a load balancer: for a request that comes from a proxy
//! the operator trusts (`--trusted-proxy`), the address that proxy saw, from the last
//! `X-Forwarded-For` entry, instead of the proxy's own.
//!
//! Why it matters: rate limits and the WebRTC pending-peer caps are per client address;
//! behind a balancer every request would otherwise share the balancer's one address, and
//! eight volunteers connecting at once would lock everyone else out. Only the last entry
//! is taken (the one the trusted proxy appended): earlier ones are whatever the client
//! wrote, and a request from anyone else keeps its socket's address, so a client cannot
//! pick its own bucket by sending the header.

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Arc<[IpAddr]>);

/// Replaces the request's [`ConnectInfo`] with the forwarded client, where its sender is
/// a trusted proxy and says who that is.
pub async fn forwarded_client(
    State(trusted): State<TrustedProxies>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(client) = forwarded(&trusted, &request) {
        request.extensions_mut().insert(ConnectInfo(client));
    }
    next.run(request).await
}

fn forwarded(trusted: &TrustedProxies, request: &Request) -> Option<SocketAddr> {
    let ConnectInfo(peer) = request.extensions().get::<ConnectInfo<SocketAddr>>()?;
    if !trusted.0.contains(&peer.ip()) {
        return None;
    }
    // Several headers are one list, in order.
    let last = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim();
    let ip: IpAddr = last.parse().ok()?;
    Some(SocketAddr::new(ip, peer.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(from: &str, forwarded: &[&str]) -> Request {
        let mut builder = axum::http::Request::builder().uri("/");
        for value in forwarded {
            builder = builder.header("x-forwarded-for", *value);
        }
        let mut request = builder.body(Body::empty()).expect("a request");
        let peer: SocketAddr = from.parse().expect("an address");
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client_and_only_by_its_own_entry() {
        let trusted = TrustedProxies(Arc::from(["127.0.0.1".parse::<IpAddr>().expect("ip")]));
        let client = |r: &Request| forwarded(&trusted, r).map(|a| a.ip().to_string());
        // The proxy appended 203.0.113.7 to what the client claimed.
        assert_eq!(
            client(&request("127.0.0.1:5000", &["10.0.0.1, 203.0.113.7"])),
            Some("203.0.113.7".into())
        );
        assert_eq!(
            client(&request("127.0.0.1:5000", &["10.0.0.1", "203.0.113.8"])),
            Some("203.0.113.8".into())
        );
        // Anyone else's header is ignored: no picking one's own rate-limit bucket.
        assert_eq!(client(&request("198.51.100.2:5000", &["10.0.0.1"])), None);
        // Garbage from the proxy changes nothing.
        assert_eq!(client(&request("127.0.0.1:5000", &["not-an-ip"])), None);
        assert_eq!(client(&request("127.0.0.1:5000", &[])), None);
    }
}
