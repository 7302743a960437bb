//! HTTPS served by the relay itself: the page, the REST API, the widget and signaling
//! over TLS (rustls on ring, the provider the WebRTC stack already links), HTTP/1.1 or
//! HTTP/2 as the client's ALPN asks, from the operator's certificate files or from a
//! self-signed certificate made for a test deployment (`--tls-self-signed`).
//!
//! A browser exposes WebGPU only in a secure context: `http://localhost` is one, but a
//! page from another machine's address is one only over HTTPS.

use crate::middleware::ServedOverTls;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// The relay's TLS flags (flattened into `relay-server`'s command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM, the server's certificate first).
    #[arg(
        long,
        env = "STARLING_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "STARLING_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// TEST DEPLOYMENTS: serve HTTPS with a self-signed certificate for the listen
    /// address, localhost and every --tls-name, kept in DATA_DIR/tls/ (made once, again
    /// when the names change). Browsers and the CLI must be told to trust it.
    #[arg(
        long,
        env = "STARLING_TLS_SELF_SIGNED",
        conflicts_with_all = ["tls_cert", "tls_key"]
    )]
    pub tls_self_signed: bool,
    /// A host name or IP address the self-signed certificate also names (repeatable, or
    /// comma-separated), e.g. the machine's LAN address or `relay.test`.
    #[arg(
        long = "tls-name",
        env = "STARLING_TLS_NAMES",
        value_name = "NAME",
        value_delimiter = ',',
        requires = "tls_self_signed"
    )]
    pub tls_names: Vec<String>,
}

/// Why HTTPS could not be set up. Each names the file at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// "certificate file" or "key file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate (or a damaged one).
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----){detail}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said, if anything.
        detail: String,
    },
    /// The key file holds no PEM private key (or a damaged one).
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1){detail}")]
    NoKey {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said, if anything.
        detail: String,
    },
    /// The key is not the certificate's.
    #[error("the key in {key} does not belong to the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the certificate or key for another reason (an unsupported key
    /// type, a malformed certificate).
    #[error("cannot serve HTTPS with {cert} and {key}: {reason}")]
    Refused {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// A `--tls-name` a certificate cannot carry.
    #[error("--tls-name `{0}` is not a host name or IP address")]
    BadName(String),
    /// Making the self-signed certificate failed.
    #[error("cannot make a self-signed certificate: {0}")]
    Generate(String),
    /// Writing the self-signed certificate failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What the relay serves HTTPS with.
#[derive(Clone)]
pub struct Https {
    /// The rustls configuration, ALPN included.
    pub config: Arc<ServerConfig>,
    /// Set when the certificate was made here (`--tls-self-signed`).
    pub self_signed: Option<SelfSigned>,
}

impl std::fmt::Debug for Https {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Https")
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

/// A certificate made by `--tls-self-signed`, and what a tester passes to a browser or
/// the CLI to trust it.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The certificate, PEM (the CLI's and the volunteer's `--ca-cert`).
    pub cert_path: PathBuf,
    /// The names it carries.
    pub names: Vec<String>,
    /// Base64 of the SHA-256 of its SubjectPublicKeyInfo: Chromium's
    /// `--ignore-certificate-errors-spki-list`.
    pub spki_sha256_base64: String,
    /// SHA-256 of the certificate (DER), hex with colons, as browsers show it.
    pub cert_sha256: String,
}

impl TlsArgs {
    /// HTTPS as the flags ask, or `None` for plain HTTP. `listen` is named by a
    /// self-signed certificate when it is a specific address.
    pub fn load(&self, data_dir: &Path, listen: IpAddr) -> Result<Option<Https>, TlsError> {
        if self.tls_self_signed {
            return self_signed(data_dir, listen, &self.tls_names).map(Some);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(Https {
                config: Arc::new(from_files(cert, key)?),
                self_signed: None,
            })),
            // clap's `requires` makes one without the other a usage error.
            _ => Ok(None),
        }
    }
}

/// Files at most this big are read: a certificate chain is a few KiB.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_PEM_BYTES + 1),
        &mut bytes,
    )
    .map_err(read)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(read(std::io::Error::other(
            "larger than 1 MiB: not a PEM certificate or key",
        )));
    }
    Ok(bytes)
}

/// The server configuration for a certificate chain and key in PEM files.
pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<ServerConfig, TlsError> {
    let cert_pem = read_pem("certificate file", cert_path)?;
    let key_pem = read_pem("key file", key_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert_path.to_owned(),
            detail: format!(": {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
            detail: String::new(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        detail: match e {
            rustls::pki_types::pem::Error::NoItemsFound => String::new(),
            e => format!(": {e}"),
        },
    })?;
    server_config(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        },
        e => TlsError::Refused {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
            reason: e.to_string(),
        },
    })
}

/// TLS 1.2 and 1.3 on ring, offering HTTP/2 and HTTP/1.1 by ALPN.
fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The self-signed certificate's files, under the data directory.
const TLS_DIR: &str = "tls";
const CERT_FILE: &str = "self-signed.pem";
const KEY_FILE: &str = "self-signed.key";
/// The names the kept certificate was made for, one a line: made again when they change.
const NAMES_FILE: &str = "self-signed.names";

/// The names a self-signed certificate carries: `localhost` and the loopback addresses
/// (a tester on the machine itself), the listen address unless it is a wildcard, and
/// the operator's, in that order, without repeats.
fn certificate_names(listen: IpAddr, extra: &[String]) -> Result<Vec<String>, TlsError> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.is_unspecified() && !names.contains(&listen.to_string()) {
        names.push(listen.to_string());
    }
    for name in extra {
        let name = name.trim().trim_start_matches('[').trim_end_matches(']');
        let plausible = !name.is_empty()
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*' | '_'));
        if !plausible {
            return Err(TlsError::BadName(name.chars().take(80).collect()));
        }
        let name = name.to_ascii_lowercase();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// The self-signed certificate in `DATA_DIR/tls/`, made now if there is none for these
/// names, so that a restart keeps the certificate testers were told to trust.
pub fn self_signed(data_dir: &Path, listen: IpAddr, extra: &[String]) -> Result<Https, TlsError> {
    let names = certificate_names(listen, extra)?;
    let dir = data_dir.join(TLS_DIR);
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let names_path = dir.join(NAMES_FILE);
    let wanted = names.join("\n");
    let kept = std::fs::read_to_string(&names_path).is_ok_and(|kept| kept.trim_end() == wanted)
        && cert_path.exists()
        && key_path.exists();
    if !kept {
        make_self_signed(&dir, &names, &cert_path, &key_path, &names_path)?;
    }
    let config = from_files(&cert_path, &key_path)?;
    let cert_pem = read_pem("certificate file", &cert_path)?;
    let key_pem = read_pem("key file", &key_path)?;
    let key_text = String::from_utf8_lossy(&key_pem);
    let key = rcgen::KeyPair::from_pem(&key_text).map_err(|e| TlsError::NoKey {
        path: key_path.clone(),
        detail: format!(": {e}"),
    })?;
    let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|e| TlsError::NoCertificate {
        path: cert_path.clone(),
        detail: format!(": {e}"),
    })?;
    use base64::Engine as _;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let spki_sha256_base64 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki));
    let cert_sha256 = Sha256::digest(cert.as_ref())
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(Https {
        config: Arc::new(config),
        self_signed: Some(SelfSigned {
            cert_path,
            names,
            spki_sha256_base64,
            cert_sha256,
        }),
    })
}

fn make_self_signed(
    dir: &Path,
    names: &[String],
    cert_path: &Path,
    key_path: &Path,
    names_path: &Path,
) -> Result<(), TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Starling relay (self-signed)");
    let key = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    let write = |path: &Path, text: &str, private: bool| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        options
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()))
            .map_err(|source| TlsError::Write {
                path: path.to_owned(),
                source,
            })
    };
    crate::data_dir::create_private_dir(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    write(key_path, &key.serialize_pem(), true)?;
    write(cert_path, &cert.pem(), false)?;
    // Last: a crash before this line leaves no names file, so the pair is made again.
    write(names_path, &names.join("\n"), false)
}

/// A TLS record's first byte (a handshake); anything else on the HTTPS port is not TLS.
const TLS_HANDSHAKE: u8 = 0x16;

/// What a plain-HTTP request on the HTTPS port gets: a clear answer instead of a reset
/// or TLS garbage, and never the page.
const PLAIN_HTTP_ANSWER: &str = "HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Connection: close\r\n\
Content-Length: 58\r\n\
\r\n\
This port speaks HTTPS only: use https:// in the address.\n";

/// How much of a plain-HTTP request is read (and dropped) before answering, so that
/// closing does not reset the connection under the answer.
const PLAIN_HTTP_READ: usize = 16 * 1024;

/// Serves one accepted connection over TLS: the handshake (and, for a plain-HTTP
/// client, the answer above) within the header-read timeout, then HTTP/2 (closed after
/// `http2_idle_timeout` without a byte either way) or HTTP/1.1 as ALPN chose, each
/// request carrying [`ConnectInfo`] and [`ServedOverTls`].
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    http1: hyper::server::conn::http1::Builder,
    router: Router,
    draining: tokio_util::sync::CancellationToken,
    limits: crate::server::ServeLimits,
) {
    let handshake_timeout = limits.header_read_timeout;
    let http2_idle_timeout = limits.http2_idle_timeout;
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(handshake_timeout, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(1)) => {
            answer_plain_http(stream, handshake_timeout).await;
            return;
        }
        _ => return,
    }
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let service = router.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(ServedOverTls);
        request
    });
    let service = TowerToHyperService::new(service);
    let ended = if h2 {
        let (io, last_active) = Activity::new(tls);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        // No keep-alive pings: they would count as traffic and keep idle connections
        // open; a dead peer's connection goes quiet and is closed as idle.
        http2.timer(TokioTimer::new());
        let connection = http2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut told_to_close = false;
        loop {
            let quiet_until = last_active.instant() + http2_idle_timeout;
            tokio::select! {
                ended = connection.as_mut() => break ended,
                () = draining.cancelled(), if !told_to_close => {
                    // The relay is stopping: requests in flight finish, no new ones.
                    told_to_close = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep_until(quiet_until.into()) => {
                    if last_active.instant() + http2_idle_timeout <= std::time::Instant::now() {
                        tracing::debug!(%peer, "HTTP/2 connection idle: closed");
                        return;
                    }
                }
            }
        }
    } else {
        // Upgrades too: the WebSocket fallback (`/api/v1/ws`) over wss://.
        let connection = http1
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            ended = connection.as_mut() => ended,
            () = draining.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}

/// When a connection last moved a byte either way, shared with whoever watches it.
#[derive(Clone)]
struct LastActive {
    since: std::time::Instant,
    /// Milliseconds after `since`.
    millis: Arc<std::sync::atomic::AtomicU64>,
}

impl LastActive {
    fn touch(&self) {
        let millis = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis
            .store(millis, std::sync::atomic::Ordering::Relaxed);
    }

    fn instant(&self) -> std::time::Instant {
        self.since + Duration::from_millis(self.millis.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// A stream that records when it last read or wrote a byte.
struct Activity<S> {
    inner: S,
    last: LastActive,
}

impl<S> Activity<S> {
    fn new(inner: S) -> (Self, LastActive) {
        let last = LastActive {
            since: std::time::Instant::now(),
            millis: Arc::default(),
        };
        (
            Self {
                inner,
                last: last.clone(),
            },
            last,
        )
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Activity<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.touch();
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Activity<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.last.touch();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn answer_plain_http(mut stream: TcpStream, within: Duration) {
    let answer = async {
        let mut buffer = vec![0u8; PLAIN_HTTP_READ];
        let mut read = 0;
        // Up to the end of the headers (or the cap): a body, if any, is not waited for.
        while read < buffer.len() {
            let n = stream.read(&mut buffer[read..]).await?;
            if n == 0 {
                break;
            }
            read += n;
            if buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        stream.write_all(PLAIN_HTTP_ANSWER.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(within, answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_answer_length_matches_its_body() {
        let (_, body) = PLAIN_HTTP_ANSWER
            .split_once("\r\n\r\n")
            .expect("headers end");
        assert!(PLAIN_HTTP_ANSWER.contains(&format!("Content-Length: {}\r\n", body.len())));
    }

    #[test]
    fn names_cover_loopback_the_listen_address_and_the_operators() {
        let names = certificate_names(
            "10.1.2.3".parse().expect("ip"),
            &["Relay.Test".into(), "[fd00::1]".into(), "localhost".into()],
        )
        .expect("valid names");
        assert_eq!(
            names,
            [
                "localhost",
                "127.0.0.1",
                "::1",
                "10.1.2.3",
                "relay.test",
                "fd00::1"
            ]
        );
        let wildcard = certificate_names("0.0.0.0".parse().expect("ip"), &[]).expect("valid");
        assert!(!wildcard.contains(&"0.0.0.0".to_owned()));
        let loopback = certificate_names("127.0.0.1".parse().expect("ip"), &["127.0.0.1".into()]);
        assert_eq!(loopback.expect("valid"), ["localhost", "127.0.0.1", "::1"]);
        for bad in ["", "relay test", "rélay.test", "a/b"] {
            assert!(matches!(
                certificate_names("127.0.0.1".parse().expect("ip"), &[bad.into()]),
                Err(TlsError::BadName(_))
            ));
        }
    }
}
