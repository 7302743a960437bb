//! Accepting HTTP connections: hyper's HTTP/1 server in an accept loop, with the limits
//! `axum::serve` lacks.
//!
//! Why not `axum::serve`: it reads request headers for as long as a client cares to send
//! them and accepts every connection the kernel hands it, so a few hundred half-sent
//! requests (slowloris) held descriptors until `/healthz` itself could not be accepted.
//! Here hyper closes a connection whose headers are not in after
//! [`ServeLimits::header_read_timeout`], and connections past
//! [`ServeLimits::max_connections`] are closed as soon as they are accepted.
//!
//! [`serve_tls`] is the same loop with each connection handed to `tls.rs` (handshake,
//! then HTTP/2 or HTTP/1.1); the TLS handshake gets the header-read timeout.

use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits on connections.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// How long a client has to send a request's headers (the first request's, and each
    /// later one's on a kept-alive connection) before the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight before closing their connections.
    pub drain: Duration,
    /// How long an HTTP/2 connection (HTTPS only) may pass no bytes before it is closed:
    /// HTTP/2 has no per-request header timeout to close idle connections, which would
    /// otherwise hold their slots for good. Above the 15 s keep-alive of event streams.
    pub http2_idle_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            drain: Duration::from_secs(5),
            http2_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Connections refused because [`ServeLimits::max_connections`] were open, for `/metrics`
/// and tests.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connections closed at once for want of a slot.
    pub refused: AtomicU64,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish (up to [`ServeLimits::drain`]) and returns.
///
/// Each request carries [`ConnectInfo<SocketAddr>`], as with
/// `into_make_service_with_connect_info`: the rate limiter keys anonymous clients by it.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, router, limits, stats, None, shutdown).await;
}

/// [`serve`] over TLS with `config` (which names the ALPN protocols offered): each
/// request also carries [`crate::middleware::ServedOverTls`].
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stats: Arc<ConnectionStats>,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    accept_loop(listener, router, limits, stats, Some(acceptor), shutdown).await;
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stats: Arc<ConnectionStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // hyper-util's GracefulShutdown cannot watch a connection that may upgrade (the
    // WebSocket fallback, `/api/v1/ws`), so draining is done here: each connection is
    // told to finish its request in flight and close, and the tasks are awaited.
    let draining = CancellationToken::new();
    let connections = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection reset before it was
                    // accepted: neither is fatal; a pause lets descriptors free up
                    // instead of spinning on the error.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Closed at once rather than queued: a queued connection holds a descriptor
            // just the same, and the client can retry.
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "connection refused: too many open");
            drop(stream);
            continue;
        };
        // Small responses (event frames, JSON) go out at once.
        let _ = stream.set_nodelay(true);
        if let Some(acceptor) = &tls {
            let connection = crate::tls::serve_connection(
                stream,
                peer,
                acceptor.clone(),
                http.clone(),
                router.clone(),
                draining.clone(),
                limits.clone(),
            );
            connections.spawn(async move {
                connection.await;
                drop(slot);
            });
            continue;
        }
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        // An upgraded connection's future ends when hyper hands the socket to the
        // WebSocket session, which the pending-peer caps bound instead (rtc::admission).
        let connection = http
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .with_upgrades();
        let draining = draining.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = draining.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                // Header timeouts and clients that hung up land here: routine.
                tracing::debug!(%peer, "connection ended: {e}");
            }
            drop(slot);
        });
    }
    // Stops accepting: new connections are refused by the kernel from here.
    drop(listener);
    draining.cancel();
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(limits.drain) => {
            tracing::warn!("requests still running after {:?}; closing them", limits.drain);
        }
    }
}
