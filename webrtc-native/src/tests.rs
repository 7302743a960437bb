//! Both sides of a link in one process, over loopback.

mod chromium;

use super::*;
use starling_protocol::channel::End;
use starling_protocol::{with_fingerprints, BindingError, NamedCertificate};
use std::net::Ipv4Addr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(super) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Long enough for a loaded 2-core machine, short enough that a hang fails the test.
const PATIENCE: Duration = Duration::from_secs(10);

pub(super) fn relay_config() -> AnswerConfig {
    AnswerConfig {
        bind_ip: LOCALHOST,
        open_timeout: PATIENCE,
        tcp: false,
    }
}

/// A connected (volunteer, relay) pair, wired without HTTP.
async fn pair() -> (PeerLink, PeerLink) {
    // `RUST_LOG=debug cargo test -p starling-webrtc-native -- --nocapture` shows what the WebRTC
    // stack does, packet by packet, when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let (pending_tx, pending_rx) = oneshot::channel();
    let volunteer = offer_then(&[LOCALHOST], |offer| async move {
        let (sdp, pending) = answer(&relay_config(), &offer).await?;
        let _ = pending_tx.send(pending);
        Ok(sdp)
    })
    .await
    .expect("volunteer side opens");
    let relay = pending_rx
        .await
        .expect("the offer was answered")
        .open()
        .await
        .expect("relay side opens");
    (volunteer, relay)
}

pub(super) async fn recv_soon(link: &mut PeerLink) -> Option<Vec<u8>> {
    tokio::time::timeout(PATIENCE, link.recv())
        .await
        .expect("a message or the close arrives in time")
}

/// A message of `len` bytes that names its sequence number and is otherwise hard to
/// mistake for another one.
pub(super) fn numbered(seq: u32, len: usize) -> Vec<u8> {
    let mut msg: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq) as u8).collect();
    msg[..4].copy_from_slice(&seq.to_le_bytes());
    msg
}

fn seq_of(msg: &[u8]) -> u32 {
    u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_exchange_messages_in_order_and_in_bulk() {
    let started = Instant::now();
    let (mut volunteer, mut relay) = pair().await;
    println!(
        "setup (offer, answer, channel open): {:?}",
        started.elapsed()
    );

    volunteer.send(b"hello relay".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut relay).await.as_deref(),
        Some(&b"hello relay"[..])
    );
    relay.send(b"hello volunteer".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut volunteer).await.as_deref(),
        Some(&b"hello volunteer"[..])
    );

    // The limit itself must pass, or callers sizing chunks to it would fail.
    let largest = numbered(7, MAX_MESSAGE_BYTES);
    volunteer.send(largest.clone()).await.expect("send");
    assert_eq!(recv_soon(&mut relay).await, Some(largest));
    relay.send(Vec::new()).await.expect("send an empty message");
    assert_eq!(recv_soon(&mut volunteer).await, Some(Vec::new()));

    // Order, both directions at once, sizes straddling SCTP fragmentation.
    const ORDERED: u32 = 500;
    let size = |seq: u32| 4 + (seq as usize * 37) % 3000;
    let to_relay = volunteer.sender();
    let to_volunteer = relay.sender();
    let writers = tokio::spawn(async move {
        let a = async {
            for seq in 0..ORDERED {
                to_relay.send(numbered(seq, size(seq))).await.expect("send");
            }
        };
        let b = async {
            for seq in 0..ORDERED {
                to_volunteer
                    .send(numbered(seq, size(seq)))
                    .await
                    .expect("send");
            }
        };
        tokio::join!(a, b);
    });
    for seq in 0..ORDERED {
        let at_relay = recv_soon(&mut relay).await.expect("open");
        assert_eq!(
            at_relay,
            numbered(seq, size(seq)),
            "relay got message {seq} wrong"
        );
        let at_volunteer = recv_soon(&mut volunteer).await.expect("open");
        assert_eq!(
            at_volunteer,
            numbered(seq, size(seq)),
            "volunteer got {seq} wrong"
        );
    }
    writers.await.expect("writers finish");

    // Bulk, relay -> volunteer, as work units travel.
    const BULK: u32 = 200;
    const BULK_BYTES: usize = 60 * 1024;
    // Built before the clock starts, so the rate is the link's, not the test's.
    let expected: Vec<Vec<u8>> = (0..BULK).map(|seq| numbered(seq, BULK_BYTES)).collect();
    let outgoing = expected.clone();
    let to_volunteer = relay.sender();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for msg in outgoing {
            to_volunteer.send(msg).await.expect("send");
        }
    });
    for (seq, want) in expected.iter().enumerate() {
        let msg = recv_soon(&mut volunteer).await.expect("open");
        assert_eq!(msg.len(), BULK_BYTES);
        assert_eq!(seq_of(&msg) as usize, seq, "bulk message out of order");
        assert!(msg == *want, "bulk message {seq} corrupted");
    }
    let elapsed = started.elapsed();
    writer.await.expect("writer finishes");
    let mib = f64::from(BULK) * BULK_BYTES as f64 / (1024.0 * 1024.0);
    println!(
        "bulk: {BULK} x {BULK_BYTES} B = {mib:.1} MiB in {elapsed:?}: {:.1} MiB/s",
        mib / elapsed.as_secs_f64()
    );
    // A stall on the retransmission timer (the unbounded-send-buffer failure) takes
    // seconds; healthy runs take well under one.
    assert!(
        elapsed < Duration::from_secs(5),
        "bulk transfer stalled: {elapsed:?}"
    );

    volunteer.close().await;
    relay.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_rejected_and_link_survives() {
    let (volunteer, mut relay) = pair().await;
    let too_big = MAX_MESSAGE_BYTES + 1;
    match volunteer.send(vec![0; too_big]).await {
        Err(PeerError::MessageTooLarge(n)) => assert_eq!(n, too_big),
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    match volunteer
        .sender()
        .send(vec![0; 10 * MAX_MESSAGE_BYTES])
        .await
    {
        Err(PeerError::MessageTooLarge(_)) => {}
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    volunteer.send(b"still here".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut relay).await.as_deref(),
        Some(&b"still here"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_one_side_ends_the_other() {
    let (volunteer, mut relay) = pair().await;
    let held = volunteer.sender();
    volunteer.send(b"last words".to_vec()).await.expect("send");
    let closed_at = Instant::now();
    volunteer.close().await;
    // Queued messages still arrive before the end.
    assert_eq!(
        recv_soon(&mut relay).await.as_deref(),
        Some(&b"last words"[..])
    );
    assert_eq!(
        recv_soon(&mut relay).await,
        None,
        "relay should see the close"
    );
    println!("remote saw close after {:?}", closed_at.elapsed());
    assert!(closed_at.elapsed() < Duration::from_secs(3));
    assert!(
        matches!(held.send(b"late".to_vec()).await, Err(PeerError::Closed)),
        "a sender outliving close() must fail"
    );
    assert!(relay.send(b"anyone?".to_vec()).await.is_err());
    assert_eq!(relay.recv().await, None, "stays closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes() {
    let (mut volunteer, relay) = pair().await;
    let sender = relay.sender();
    drop(relay);
    // A sender alone keeps the link up.
    sender.send(b"from a sender".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut volunteer).await.as_deref(),
        Some(&b"from a sender"[..])
    );
    let dropped_at = Instant::now();
    drop(sender);
    assert_eq!(
        recv_soon(&mut volunteer).await,
        None,
        "volunteer should see the close"
    );
    println!("remote saw drop after {:?}", dropped_at.elapsed());
    assert!(dropped_at.elapsed() < Duration::from_secs(3));
}

/// The value of the first `a=fingerprint:` line of `sdp`.
fn fingerprint_of(sdp: &str) -> &str {
    sdp.lines()
        .find_map(|line| line.strip_prefix("a=fingerprint:"))
        .expect("a fingerprint line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_ends_hold_the_same_descriptions_naming_two_certificates() {
    let (volunteer, relay) = pair().await;
    assert_eq!(volunteer.descriptions(), relay.descriptions());
    let Descriptions { offer, answer } = volunteer.descriptions();
    assert!(fingerprint_of(offer).starts_with("sha-256 "), "{offer}");
    assert_ne!(fingerprint_of(offer), fingerprint_of(answer));
    volunteer.close().await;
    relay.close().await;
}

/// Replaces the certificate fingerprint in `sdp` with another well-formed one.
fn with_other_fingerprint(sdp: &str) -> String {
    let real = fingerprint_of(sdp).to_owned();
    let (algorithm, digest) = real.split_once(' ').expect("algorithm and digest");
    let flipped: String = digest
        .chars()
        .map(|c| match c {
            '0' => '1',
            ':' => ':',
            _ => '0',
        })
        .collect();
    sdp.replace(&real, &format!("{algorithm} {flipped}"))
}

/// Channel binding rests on this: each end's DTLS handshake refuses a certificate other
/// than the one its received description names, so a middleman cannot pass its own
/// certificate off under an honest volunteer's description, or the reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_other_than_the_description_names_is_refused() {
    for tamper_offer in [true, false] {
        let (pending_tx, pending_rx) = oneshot::channel();
        let started = Instant::now();
        let volunteer = offer_then(&[LOCALHOST], |offer| async move {
            let offer = if tamper_offer {
                with_other_fingerprint(&offer)
            } else {
                offer
            };
            let (sdp, pending) = answer(&relay_config(), &offer).await?;
            let _ = pending_tx.send(pending);
            Ok(if tamper_offer {
                sdp
            } else {
                with_other_fingerprint(&sdp)
            })
        });
        let relay = async {
            pending_rx
                .await
                .expect("the offer was answered")
                .open()
                .await
        };
        let (volunteer, relay) = tokio::join!(volunteer, relay);
        assert!(
            volunteer.is_err() && relay.is_err(),
            "tampered {}: a channel opened",
            if tamper_offer { "offer" } else { "answer" }
        );
        println!("refused after {:?}", started.elapsed());
    }
}

/// A (volunteer, relay) pair whose volunteer presents a certificate of its own, of which
/// `rewrite` gets the DER to rewrite the offer with.
async fn pair_rewriting_offer(
    rewrite: impl FnOnce(String, &[u8]) -> String,
) -> (
    Result<PeerLink, PeerError>,
    Result<PeerLink, PeerError>,
    Vec<u8>,
) {
    let (certificate, der) = generate_certificate().expect("a certificate");
    let peer = new_peer(
        &[LOCALHOST],
        Some(certificate),
        &IceOptions::default(),
        Some(OFFERER_DISCONNECTED_GRACE),
    )
    .await
    .expect("a peer connection");
    let (pending_tx, pending_rx) = oneshot::channel();
    let volunteer = offer_through(
        peer,
        |offer| rewrite(offer, &der),
        |offer| async move {
            let (sdp, pending) = answer(&relay_config(), &offer).await?;
            let _ = pending_tx.send(pending);
            Ok(sdp)
        },
    );
    let relay = async {
        match pending_rx.await {
            Ok(pending) => pending.open().await,
            Err(_) => Err(PeerError::Closed),
        }
    };
    let (volunteer, relay) = tokio::join!(volunteer, relay);
    (volunteer, relay, der)
}

/// aiortc names its one certificate under sha-256, sha-384 and sha-512 (RFC 8122): the
/// stack connects, and shows the certificate the handshake presented, so the caller can
/// check the fingerprints the stack does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_naming_its_certificate_under_several_algorithms_connects() {
    let (volunteer, relay, der) = pair_rewriting_offer(|offer, der| {
        with_fingerprints(&offer, der, &["sha-384", "sha-512"], false).expect("a fingerprint line")
    })
    .await;
    let (mut volunteer, mut relay) = (
        volunteer.expect("volunteer opens"),
        relay.expect("relay opens"),
    );
    assert_eq!(volunteer.descriptions(), relay.descriptions());
    let named = NamedCertificate::from_sdp(&relay.descriptions().offer, End::Volunteer)
        .expect("one certificate");
    assert_eq!(named.fingerprints().len(), 3);
    let presented = relay.remote_certificate().await.expect("a certificate");
    assert_eq!(presented, der);
    assert_eq!(named.check(&presented), Ok(()));
    // And the other way: the relay's certificate is the one its answer names.
    let relays = volunteer.remote_certificate().await.expect("a certificate");
    let answer = NamedCertificate::from_sdp(&volunteer.descriptions().answer, End::Relay)
        .expect("one certificate");
    assert_eq!(answer.check(&relays), Ok(()));
    volunteer.send(b"three names".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut relay).await.as_deref(),
        Some(&b"three names"[..])
    );
    relay.send(b"one certificate".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut volunteer).await.as_deref(),
        Some(&b"one certificate"[..])
    );
}

/// webrtc-rs checks the first fingerprint line and only sha-256: listed after the others,
/// the sha-256 one must still be what it checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_listing_sha256_last_connects() {
    let (volunteer, relay, der) = pair_rewriting_offer(|offer, der| {
        with_fingerprints(&offer, der, &["sha-512", "sha-384"], true).expect("a fingerprint line")
    })
    .await;
    let (volunteer, relay) = (
        volunteer.expect("volunteer opens"),
        relay.expect("relay opens"),
    );
    let offer = &relay.descriptions().offer;
    let first = fingerprint_of(offer);
    assert!(first.starts_with("sha-512 "), "{offer}");
    assert_eq!(relay.remote_certificate().await, Some(der));
    volunteer.close().await;
    relay.close().await;
}

/// One certificate's sha-256 beside another's sha-384: webrtc-rs checks only the sha-256
/// one and opens the channel, which is why its user must check the rest (the relay does
/// in its session, see `relay-server/tests/several_fingerprints.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_checks_only_one_of_several_fingerprints() {
    let (_, other_der) = generate_certificate().expect("a certificate");
    let (volunteer, relay, der) = pair_rewriting_offer(move |offer, _| {
        with_fingerprints(&offer, &other_der, &["sha-384"], false).expect("a fingerprint line")
    })
    .await;
    let relay = relay.expect("webrtc-rs opens it");
    let named = NamedCertificate::from_sdp(&relay.descriptions().offer, End::Volunteer)
        .expect("well formed");
    let presented = relay.remote_certificate().await.expect("a certificate");
    assert_eq!(presented, der);
    assert!(
        matches!(
            named.check(&presented),
            Err(BindingError::WrongCertificate { ref algorithm, .. }) if algorithm == "sha-384"
        ),
        "{:?}",
        named.check(&presented)
    );
    drop(volunteer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_offer_is_an_error() {
    for offer in ["", "not sdp at all", "v=0\r\no=garbage\r\n"] {
        match answer(&relay_config(), offer).await {
            Err(PeerError::Rtc(message)) => assert!(!message.is_empty()),
            Err(other) => panic!("expected an Rtc error for {offer:?}, got {other}"),
            Ok(_) => panic!("answered garbage offer {offer:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopened_peer_times_out() {
    let config = AnswerConfig {
        bind_ip: LOCALHOST,
        open_timeout: Duration::from_millis(300),
        tcp: false,
    };
    // A real offer whose maker goes away before applying the answer.
    let (offer_tx, offer_rx) = oneshot::channel();
    let offerer = offer_then(&[LOCALHOST], |offer| async move {
        let _ = offer_tx.send(offer);
        Err::<String, _>(PeerError::Signaling("test stops here".into()))
    });
    assert!(offerer.await.is_err());
    let offer = offer_rx.await.expect("an offer was made");
    let (_, pending) = answer(&config, &offer).await.expect("a valid offer");
    match pending.open().await {
        Err(PeerError::Timeout(t)) => assert_eq!(t, config.open_timeout),
        Err(other) => panic!("expected a timeout, got {other}"),
        Ok(_) => panic!("opened without a peer"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_offers_a_passive_tcp_candidate_only_when_asked() {
    let tcp_candidates = |sdp: &str| {
        sdp.lines()
            .filter(|l| l.starts_with("a=candidate:") && l.to_ascii_lowercase().contains(" tcp "))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for tcp in [false, true] {
        let offer = make_offer(LOCALHOST).await.expect("an offer");
        let config = AnswerConfig {
            tcp,
            ..relay_config()
        };
        let (answer, pending) = answer(&config, &offer).await.expect("an answer");
        drop(pending);
        let found = tcp_candidates(&answer);
        if tcp {
            assert!(
                found
                    .iter()
                    .any(|c| c.contains("tcptype passive") && c.contains("127.0.0.1")),
                "a passive TCP candidate on the bind address: {answer}"
            );
        } else {
            assert!(found.is_empty(), "no TCP candidate unless asked: {found:?}");
        }
    }
}

/// Serves one HTTP request on `listener`: checks it is a JSON POST to the signaling
/// path, passes its body to `respond`, and writes back the (status line, body) it returns.
async fn serve_one<F, Fut>(listener: TcpListener, respond: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = (&'static str, String)>,
{
    let (mut stream, _) = listener.accept().await.expect("accept");
    let (head, body) = read_request(&mut stream).await.expect("a whole request");
    assert!(
        head.starts_with("post /api/v1/rtc/offer "),
        "request: {head}"
    );
    assert!(
        head.contains("content-type: application/json"),
        "request: {head}"
    );
    let (status, reply) = respond(body).await;
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{reply}",
        reply.len()
    );
    stream
        .write_all(response.as_bytes())
        .await
        .expect("write response");
    let _ = stream.shutdown().await;
}

/// The lowercased request head and the body; None if the client hangs up first, as
/// browsers' speculative connections do.
pub(super) async fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("numeric content-length"));
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8(buf[end + 4..end + 4 + length].to_vec()).expect("utf-8");
        return Some((head, body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_signals_over_http() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let url = format!(
        "http://{}/api/v1/rtc/offer",
        listener.local_addr().expect("addr")
    );
    let (pending_tx, pending_rx) = oneshot::channel();
    let server = tokio::spawn(serve_one(listener, |body| async move {
        let offer: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        let offer = offer["sdp"].as_str().expect("an sdp field");
        let (sdp, pending) = answer(&relay_config(), offer).await.expect("answer");
        let _ = pending_tx.send(pending);
        ("200 OK", serde_json::json!({ "sdp": sdp }).to_string())
    }));
    let mut volunteer = connect(&url).await.expect("connect");
    server.await.expect("server");
    let mut relay = pending_rx
        .await
        .expect("answered")
        .open()
        .await
        .expect("open");
    volunteer.send(b"over http".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut relay).await.as_deref(),
        Some(&b"over http"[..])
    );
    relay.send(b"and back".to_vec()).await.expect("send");
    assert_eq!(
        recv_soon(&mut volunteer).await.as_deref(),
        Some(&b"and back"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_reports_relay_errors() {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let url = format!(
        "http://{}/api/v1/rtc/offer",
        listener.local_addr().expect("addr")
    );
    let server = tokio::spawn(serve_one(listener, |_| async {
        (
            "503 Service Unavailable",
            r#"{"detail":"relay is full"}"#.to_owned(),
        )
    }));
    let error = connect(&url).await.expect_err("a 503 fails the connect");
    server.await.expect("server");
    let message = error.to_string();
    assert!(matches!(error, PeerError::Signaling(_)), "{message}");
    assert!(message.contains("503"), "{message}");
    assert!(message.contains("relay is full"), "{message}");

    // Nothing listening: a prompt error, not a hang.
    let closed = TcpListener::bind((LOCALHOST, 0)).await.expect("bind");
    let url = format!(
        "http://{}/api/v1/rtc/offer",
        closed.local_addr().expect("addr")
    );
    drop(closed);
    let error = tokio::time::timeout(PATIENCE, connect(&url))
        .await
        .expect("fails in time")
        .expect_err("no relay fails the connect");
    assert!(matches!(error, PeerError::Signaling(_)), "{error}");
}

#[tokio::test]
async fn binds_the_address_that_routes_to_the_relay() {
    let ips = local_ips_towards("http://127.0.0.1:8080/api/v1/rtc/offer")
        .await
        .expect("a route");
    assert_eq!(ips, vec![LOCALHOST]);
    let ips = local_ips_towards("http://localhost:8080/api/v1/rtc/offer")
        .await
        .expect("a route");
    assert!(
        !ips.is_empty() && ips.iter().all(IpAddr::is_loopback),
        "{ips:?}"
    );
    for bad in ["not a url", "http://", "http://no-such-host.invalid/x"] {
        assert!(
            matches!(local_ips_towards(bad).await, Err(PeerError::Signaling(_))),
            "{bad}"
        );
    }
}
