//! Proving that a site owner controls the origin they register: the relay fetches
//! `{origin}/.well-known/starling-site` and requires the wallet's address in it.
//!
//! Anyone may ask for a registration, so this is an outbound request a stranger triggers.
//! It is kept from reaching the relay's own network (SSRF): https only; the relay resolves
//! the host itself and connects only to a public address (the address checked is the one
//! connected to, so a DNS answer that changes in between cannot slip a private one in);
//! no proxy; no redirects; a few seconds and a few KiB at most; and a cap on proofs
//! running at once. Loopback over plain http is allowed only on a relay started
//! with `--allow-http-sites`, for tests and local development.

use starling_protocol::{SiteOrigin, WalletAddress};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Where a site publishes the wallet it is paid to.
pub const WELL_KNOWN_PATH: &str = "/.well-known/starling-site";
/// Largest proof file read.
const MAX_PROOF_BYTES: usize = 4096;
/// How long one proof may take, connection and body included.
const PROOF_TIMEOUT: Duration = Duration::from_secs(5);
/// Proofs running at once; more are refused until one ends.
const MAX_CONCURRENT_PROOFS: usize = 8;

/// Why a site's origin was not proved.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    /// Plain http to a host that is not loopback, or on a relay without the test flag.
    #[error(
        "the origin must be https (http only to loopback on a relay run with --allow-http-sites)"
    )]
    Scheme,
    /// The host is, or resolves to, an address the relay will not contact.
    #[error("the origin's host is not a public address the relay will contact")]
    Address,
    /// Resolving, connecting, TLS, or the timeout.
    #[error("could not fetch {WELL_KNOWN_PATH} from the origin: {0}")]
    Fetch(String),
    /// Anything but 200 (redirects are not followed).
    #[error("{WELL_KNOWN_PATH} answered HTTP {0}, not 200 (redirects are not followed)")]
    Status(u16),
    /// Over [`MAX_PROOF_BYTES`].
    #[error("{WELL_KNOWN_PATH} is larger than {MAX_PROOF_BYTES} bytes")]
    TooLarge,
    /// The file does not name the wallet.
    #[error("{WELL_KNOWN_PATH} does not contain the wallet address {0}")]
    WalletMissing(WalletAddress),
    /// [`MAX_CONCURRENT_PROOFS`] are running.
    #[error("too many site registrations are being checked; retry shortly")]
    Busy,
    /// TLS could not be set up (no trusted roots on this machine).
    #[error("the relay cannot make outbound requests: {0}")]
    Client(String),
}

/// Fetches and checks site proofs.
#[derive(Clone)]
pub struct SiteVerifier {
    /// Built on the first https proof: loading the system's TLS roots is wasted on relays
    /// (and tests) that never see a registration.
    tls: Arc<std::sync::OnceLock<Result<tokio_rustls::TlsConnector, String>>>,
    allow_http_loopback: bool,
    running: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for SiteVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteVerifier")
            .field("allow_http_loopback", &self.allow_http_loopback)
            .finish_non_exhaustive()
    }
}

impl Default for SiteVerifier {
    fn default() -> Self {
        Self::new(false)
    }
}

/// A connection to the site, plain (loopback tests) or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

impl SiteVerifier {
    /// A verifier for public https origins, and loopback over http too when
    /// `allow_http_loopback` (tests, local development).
    pub fn new(allow_http_loopback: bool) -> Self {
        Self {
            tls: Arc::default(),
            allow_http_loopback,
            running: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PROOFS)),
        }
    }

    fn tls(&self) -> Result<&tokio_rustls::TlsConnector, ProofError> {
        self.tls
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A malformed system certificate is skipped, not fatal.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err("no trusted root certificates on this machine".to_owned());
                }
                // ring: the provider the WebRTC stack already links.
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
            })
            .as_ref()
            .map_err(|e| ProofError::Client(e.clone()))
    }

    /// Checks that `origin` serves [`WELL_KNOWN_PATH`] naming `wallet`.
    pub async fn prove(
        &self,
        origin: &SiteOrigin,
        wallet: &WalletAddress,
    ) -> Result<(), ProofError> {
        let host = origin.host();
        let literal = literal_ip(host);
        let loopback = host == "localhost" || literal.is_some_and(|ip| ip.is_loopback());
        let plain_allowed = self.allow_http_loopback && loopback;
        if !(origin.is_https() || plain_allowed) {
            return Err(ProofError::Scheme);
        }
        let _slot = self
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| ProofError::Busy)?;
        let body = tokio::time::timeout(PROOF_TIMEOUT, self.fetch(origin, literal))
            .await
            .map_err(|_| ProofError::Fetch(format!("no answer within {PROOF_TIMEOUT:?}")))??;
        names_wallet(&body, wallet)
            .then_some(())
            .ok_or(ProofError::WalletMissing(*wallet))
    }

    /// GETs the proof file: connects only to an address [`allowed`] accepts (the one
    /// checked is the one used, so a DNS answer cannot change in between), follows no
    /// redirect, and reads at most [`MAX_PROOF_BYTES`].
    async fn fetch(
        &self,
        origin: &SiteOrigin,
        literal: Option<IpAddr>,
    ) -> Result<Vec<u8>, ProofError> {
        let allow_loopback = self.allow_http_loopback;
        let addrs: Vec<SocketAddr> = match literal {
            Some(ip) => vec![SocketAddr::new(ip, origin.port())],
            None => tokio::net::lookup_host((origin.host(), origin.port()))
                .await
                .map_err(|e| ProofError::Fetch(format!("resolving the host: {e}")))?
                .collect(),
        };
        let addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| allowed(a.ip(), allow_loopback))
            .collect();
        if addrs.is_empty() {
            return Err(ProofError::Address);
        }
        // Each checked address in turn (a name may resolve to ::1 and 127.0.0.1, and the
        // site listen on one); the timeout around the whole proof bounds the tries.
        let mut tcp = Err(ProofError::Address);
        for addr in addrs {
            tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| ProofError::Fetch(format!("connecting: {e}")));
            if tcp.is_ok() {
                break;
            }
        }
        let tcp = tcp?;
        let stream: Box<dyn Stream> = if origin.is_https() {
            let bare = origin.host().trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(bare.to_owned())
                .map_err(|e| ProofError::Fetch(e.to_string()))?;
            Box::new(
                self.tls()?
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ProofError::Fetch(format!("TLS: {e}")))?,
            )
        } else {
            Box::new(tcp)
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| ProofError::Fetch(e.to_string()))?;
        // Drives the connection; aborted once the answer is read (or on the timeout, when
        // this future is dropped, the connection fails with the dropped sender).
        let connection = AbortOnDrop(tokio::spawn(connection));
        let authority = origin.as_str().split_once("://").map_or("", |(_, a)| a);
        let request = hyper::Request::get(WELL_KNOWN_PATH)
            .header(hyper::header::HOST, authority)
            .header(
                hyper::header::USER_AGENT,
                concat!(
                    "starling-relay/",
                    env!("CARGO_PKG_VERSION"),
                    " (site verification)"
                ),
            )
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .map_err(|e| ProofError::Fetch(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ProofError::Fetch(e.to_string()))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(ProofError::Status(response.status().as_u16()));
        }
        use http_body_util::BodyExt;
        let body = http_body_util::Limited::new(response.into_body(), MAX_PROOF_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    ProofError::TooLarge
                } else {
                    ProofError::Fetch(e.to_string())
                }
            })?;
        drop(connection);
        Ok(body.to_bytes().to_vec())
    }
}

/// Aborts its task when dropped, so no connection outlives the proof that opened it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether the proof file names `wallet`: its address as a whitespace-separated word
/// (the file may hold several sites' wallets, or comments).
fn names_wallet(body: &[u8], wallet: &WalletAddress) -> bool {
    let wanted = wallet.to_string();
    String::from_utf8_lossy(body)
        .split_whitespace()
        .any(|word| word == wanted)
}

/// The host as an IP address, when the origin names one (IPv6 in brackets).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Whether the relay may contact `ip`: public unicast only, loopback too when allowed.
fn allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    if ip.is_loopback() {
        return allow_loopback;
    }
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        // Shared address space (carrier-grade NAT), 100.64.0.0/10.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, 192.0.0.0/24.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, 198.18.0.0/15.
        || (a == 198 && (b == 18 || b == 19))
        // Reserved, 240.0.0.0/4.
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Addresses that carry an IPv4 address are judged by it: mapped (::ffff:0:0/96),
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16).
    let embedded =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return public_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return public_v4(embedded(s[1], s[2]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local, fc00::/7.
        || (s[0] & 0xfe00) == 0xfc00
        // Link-local, fe80::/10.
        || (s[0] & 0xffc0) == 0xfe80
        // Documentation, 2001:db8::/32.
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // IPv4-compatible and other addresses in ::/96.
        || s[..6] == [0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_contacted() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
        ] {
            let ip: IpAddr = ip.parse().expect(ip);
            assert!(!allowed(ip, true), "{ip} was allowed");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "1.1.1.1",
        ] {
            let ip: IpAddr = ip.parse().expect(ip);
            assert!(allowed(ip, false), "{ip} was refused");
        }
        // Loopback only under the test flag.
        for ip in ["127.0.0.1", "::1"] {
            let ip: IpAddr = ip.parse().expect(ip);
            assert!(!allowed(ip, false) && allowed(ip, true), "{ip}");
        }
    }

    #[test]
    fn the_proof_names_the_wallet_as_a_word() {
        let wallet = starling_protocol::WalletKey::from_seed([1; 32]).address();
        assert!(names_wallet(
            format!("# blog\n{wallet}\n").as_bytes(),
            &wallet
        ));
        assert!(!names_wallet(format!("x{wallet}").as_bytes(), &wallet));
        assert!(!names_wallet(b"", &wallet));
    }

    #[tokio::test]
    async fn private_and_plain_http_origins_are_refused_before_any_request() {
        let verifier = SiteVerifier::new(false);
        let wallet = starling_protocol::WalletKey::from_seed([1; 32]).address();
        for (origin, loopback_ok) in [
            ("http://127.0.0.1:9", false),
            ("http://example.com", false),
            ("https://10.0.0.1", false),
            ("https://169.254.169.254", false),
            ("https://127.0.0.1:9", false),
            ("http://10.0.0.1", true),
        ] {
            let origin: SiteOrigin = origin.parse().expect("origin");
            let verifier = if loopback_ok {
                SiteVerifier::new(true)
            } else {
                verifier.clone()
            };
            let refused = verifier.prove(&origin, &wallet).await;
            assert!(
                matches!(refused, Err(ProofError::Scheme | ProofError::Address)),
                "{origin}: {refused:?}"
            );
        }
        // A name that resolves to loopback is refused without the flag.
        let local: SiteOrigin = "https://localhost:9".parse().expect("origin");
        assert!(matches!(
            verifier.prove(&local, &wallet).await,
            Err(ProofError::Address)
        ));
    }
}
