//! HTTPS served by the relay itself, over a real socket: HTTP/2 and HTTP/1.1 by ALPN,
//! HSTS only over TLS, a clear refusal (never the page) for plain HTTP on the HTTPS
//! port, clients that do not trust the certificate refused, and bad certificate or key
//! files stopping the relay with a reason instead of a panic.

mod common;

use axum::http::{Request, StatusCode};
use common::TempDir;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use starling_relay::app::{Limits, StaticDirs};
use starling_relay::server::{self, ConnectionStats, ServeLimits};
use starling_relay::storage::Storage;
use starling_relay::tls::{self, TlsError};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const PAGE: &str = "<!doctype html><title>starling page</title>";

/// A relay serving HTTPS with a self-signed certificate for `starling.test` (made in
/// `dir/tls/`), its app a one-line page; its address and the certificate.
async fn https_relay(
    dir: &Path,
) -> (
    SocketAddr,
    CertificateDer<'static>,
    tokio::sync::oneshot::Sender<()>,
) {
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).expect("dist");
    std::fs::write(dist.join("index.html"), PAGE).expect("index");
    let https = tls::self_signed(dir, [127, 0, 0, 1].into(), &["starling.test".into()])
        .expect("self-signed certificate");
    let made = https.self_signed.as_ref().expect("made here");
    let cert = CertificateDer::from_pem_file(&made.cert_path).expect("the PEM written");
    let storage = Storage::open(dir).await.expect("storage opens");
    let router = common::router::serving(
        storage,
        Limits::default(),
        &StaticDirs {
            app: dist,
            public: dir.join("public"),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve_tls(
        listener,
        router,
        ServeLimits {
            header_read_timeout: Duration::from_secs(2),
            http2_idle_timeout: Duration::from_secs(2),
            ..ServeLimits::default()
        },
        Arc::new(ConnectionStats::default()),
        https.config,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, cert, stop)
}

/// A TLS connection to `addr` as `starling.test`, trusting `root` only, offering `alpn`.
async fn connect(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    store
        .add(root.clone())
        .expect("a certificate rustls accepts");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("starling.test").expect("a DNS name");
    connector.connect(name, stream).await
}

/// GET `path` over `stream` with HTTP/2 or HTTP/1.1: status, HSTS header, body.
async fn get(
    stream: TlsStream<TcpStream>,
    h2: bool,
    path: &str,
) -> (StatusCode, Option<String>, String) {
    let request = Request::get(format!("https://starling.test{path}"))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("an HTTP/2 connection");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("a response")
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("an HTTP/1.1 connection");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("a response")
    };
    let status = response.status();
    let hsts = response
        .headers()
        .get("strict-transport-security")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, hsts, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn serves_http2_and_http1_by_alpn_with_hsts() {
    let dir = TempDir::new("tls-alpn");
    let (addr, cert, _stop) = https_relay(&dir).await;

    let stream = connect(addr, &cert, &[b"h2", b"http/1.1"])
        .await
        .expect("a client trusting the certificate connects");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, hsts, body) = get(stream, true, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(hsts.as_deref(), Some("max-age=31536000"));
    let stream = connect(addr, &cert, &[b"h2"]).await.expect("connects");
    let (status, _, body) = get(stream, true, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, PAGE, "the page over HTTP/2");

    let stream = connect(addr, &cert, &[b"http/1.1"])
        .await
        .expect("connects");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, hsts, _) = get(stream, false, "/api/v1/kernels").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hsts.as_deref(), Some("max-age=31536000"));

    // No ALPN at all (curl --http1.1 without ALPN, old clients): HTTP/1.1.
    let stream = connect(addr, &cert, &[]).await.expect("connects");
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let (status, _, body) = get(stream, false, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, PAGE);
}

#[tokio::test]
async fn plain_http_on_the_https_port_gets_a_refusal_not_the_page() {
    let dir = TempDir::new("tls-plain");
    let (addr, _, _stop) = https_relay(&dir).await;
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: starling.test\r\n\r\n")
        .await
        .expect("request sent");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed within the handshake timeout")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("https://"), "says what to do: {answer}");
    assert!(
        !answer.contains("starling page"),
        "the page went out over plain HTTP"
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_certificate_is_refused() {
    let dir = TempDir::new("tls-untrusted");
    let (addr, _, _stop) = https_relay(&dir).await;
    // Another self-signed certificate for the same names: not the relay's.
    let other = TempDir::new("tls-other");
    let stranger =
        tls::self_signed(&other, [127, 0, 0, 1].into(), &["starling.test".into()]).expect("made");
    let stranger =
        CertificateDer::from_pem_file(&stranger.self_signed.as_ref().expect("made here").cert_path)
            .expect("PEM");
    let refused = connect(addr, &stranger, &[b"http/1.1"]).await;
    let error = refused.expect_err("a certificate the client never trusted");
    assert!(
        error.to_string().contains("UnknownIssuer")
            || error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
}

/// Whether the server closes `stream` within `within` (reads EOF or an error).
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let read_to_end = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

#[tokio::test]
async fn stalled_handshakes_and_idle_http2_connections_are_closed() {
    let dir = TempDir::new("tls-stall");
    let (addr, cert, _stop) = https_relay(&dir).await;
    // Nothing at all, then the first byte of a handshake and no more (slowloris):
    // closed after the 2 s header timeout, which also bounds the handshake.
    let mut silent = TcpStream::connect(addr).await.expect("connects");
    let mut stalled = TcpStream::connect(addr).await.expect("connects");
    stalled.write_all(&[0x16]).await.expect("one byte");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(closed_within(&mut stalled, Duration::from_secs(5)).await);

    // An HTTP/2 connection that answered a request and then stays quiet: closed after
    // the 2 s idle limit, so idle connections cannot hold the relay's slots for good.
    let stream = connect(addr, &cert, &[b"h2"]).await.expect("connects");
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 connection");
    let opened = tokio::time::Instant::now();
    let serving = tokio::spawn(connection);
    let request = Request::get("https://starling.test/healthz")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    // The connection's own result (closed cleanly or cut) does not matter here.
    let _closed = tokio::time::timeout(Duration::from_secs(6), serving)
        .await
        .expect("the idle connection was closed")
        .expect("the client task ran");
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_millis(1500),
        "closed too early: {lasted:?}"
    );
}

#[test]
fn the_self_signed_certificate_is_kept_across_restarts_and_remade_for_new_names() {
    let dir = TempDir::new("tls-keep");
    let first = tls::self_signed(&dir, [127, 0, 0, 1].into(), &["starling.test".into()])
        .expect("made")
        .self_signed
        .expect("self-signed");
    let again = tls::self_signed(&dir, [127, 0, 0, 1].into(), &["starling.test".into()])
        .expect("kept")
        .self_signed
        .expect("self-signed");
    assert_eq!(first.spki_sha256_base64, again.spki_sha256_base64);
    assert_eq!(first.cert_sha256, again.cert_sha256);
    assert_eq!(first.spki_sha256_base64.len(), 44, "base64 of 32 bytes");
    let renamed = tls::self_signed(&dir, [127, 0, 0, 1].into(), &["relay.test".into()])
        .expect("remade")
        .self_signed
        .expect("self-signed");
    assert_ne!(first.cert_sha256, renamed.cert_sha256);
    assert!(renamed.names.contains(&"relay.test".to_owned()));
    assert!(!renamed.names.contains(&"starling.test".to_owned()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(dir.join("tls/self-signed.key")).expect("key file");
        assert_eq!(key.permissions().mode() & 0o077, 0, "the key is private");
    }
}

#[test]
fn bad_certificate_and_key_files_are_clear_errors() {
    let dir = TempDir::new("tls-bad-files");
    let ours = tls::self_signed(&dir, [127, 0, 0, 1].into(), &[])
        .expect("made")
        .self_signed
        .expect("self-signed");
    let cert = ours.cert_path.clone();
    let key = dir.join("tls/self-signed.key");
    let other = TempDir::new("tls-bad-files-other");
    tls::self_signed(&other, [127, 0, 0, 1].into(), &[]).expect("made");
    let other_key = other.join("tls/self-signed.key");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate at all\n").expect("write");
    let damaged = dir.join("damaged.pem");
    std::fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = dir.join("missing.pem");

    assert!(
        tls::from_files(&cert, &key).is_ok(),
        "the pair itself is fine"
    );
    let error = tls::from_files(&missing, &key).expect_err("missing certificate");
    assert!(matches!(error, TlsError::Read { .. }), "{error}");
    assert!(error.to_string().contains("missing.pem"), "{error}");
    let error = tls::from_files(&cert, &missing).expect_err("missing key");
    assert!(error.to_string().contains("key file"), "{error}");
    let error = tls::from_files(&garbage, &key).expect_err("no PEM certificate");
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    let error = tls::from_files(&damaged, &key).expect_err("damaged PEM");
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    let error = tls::from_files(&cert, &garbage).expect_err("no PEM key");
    assert!(matches!(error, TlsError::NoKey { .. }), "{error}");
    // A key where the certificate should be, and the certificate where the key should be.
    let error = tls::from_files(&key, &cert).expect_err("swapped");
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");
    let error = tls::from_files(&cert, &other_key).expect_err("another certificate's key");
    assert!(matches!(error, TlsError::Mismatch { .. }), "{error}");
    assert!(error.to_string().contains("does not belong"), "{error}");
}

#[test]
fn the_relay_stops_with_the_reason_when_its_key_is_not_the_certificates() {
    let dir = TempDir::new("tls-binary");
    let ours = tls::self_signed(&dir, [127, 0, 0, 1].into(), &[])
        .expect("made")
        .self_signed
        .expect("self-signed");
    let other = TempDir::new("tls-binary-other");
    tls::self_signed(&other, [127, 0, 0, 1].into(), &[]).expect("made");
    let data = dir.join("data");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay-server"))
        .arg("--listen=127.0.0.1:0")
        .arg("--data-dir")
        .arg(&data)
        .arg("--tls-cert")
        .arg(&ours.cert_path)
        .arg("--tls-key")
        .arg(other.join("tls/self-signed.key"))
        .output()
        .expect("the relay runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started with a mismatched key: {stderr}"
    );
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !data.exists(),
        "nothing was opened before the certificate was checked"
    );
}
