//! What an unauthenticated (or misbehaving) volunteer can cost the relay is bounded:
//! before its hello proves a wallet it may send only a few KiB, it is dropped within
//! seconds, nothing it sends is logged or echoed in full, and its offers are refused
//! past a small size, a few candidates, and a few at once from one address. Driven over
//! real WebRTC and real HTTP against the real router, with the attacker on the project's
//! own crates (`common::attacker`).

mod common;

use common::attacker::{self, post_offer, post_raw, send_big_result, send_streamed};
use common::loopback::{connect, hello, receive, refusal, relay, send};
use common::TempDir;
use starling_protocol::{LeaseId, ToVolunteer, WalletKey};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the test relay lets an answered peer take to open its channel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(3);
const MIB: usize = 1024 * 1024;
/// Generous, so that the old relay's echo of a whole message shows in the figures
/// instead of failing here.
const RECEIVE_LIMIT: usize = 256 * MIB;

/// The tests measure this process's memory, so they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The longest log event written so far, in bytes.
static LONGEST_LOG: AtomicUsize = AtomicUsize::new(0);

/// Counts the bytes of each log event (the formatter writes one event per call), and
/// keeps nothing.
struct LogProbe;

impl std::io::Write for LogProbe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LONGEST_LOG.fetch_max(buf.len(), Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn probe_logs() {
    // As the relay's binary filters by default.
    let filter = tracing_subscriber::EnvFilter::new(
        "info,webrtc=error,rtc=error,rtc_dtls=error,rtc_ice=error,sqlx=warn",
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogProbe)
        .try_init();
}

/// This process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A refusal that names the limit and carries none of the peer's bytes.
fn assert_short(reason: &str) {
    assert!(reason.len() < 512, "refusal of {} bytes", reason.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_before_and_after_the_hello_are_capped_and_never_echoed() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    probe_logs();
    let dir = TempDir::new("bounded-peers");
    let (url, _) = relay(&dir, OPEN_TIMEOUT).await?;
    let key = WalletKey::from_seed([5; 32]);
    let lease = LeaseId::from_uuid(uuid::Uuid::from_u128(7));

    // An honest volunteer with a long client name is welcomed (a hello is well under the
    // pre-hello cap), and warms up every code path before the baseline is taken.
    let (mut link, binding) = connect(&url).await?;
    send(&link, &hello(&key, &binding, "volunteer/".repeat(600))).await?;
    assert!(matches!(
        receive(&mut link, RECEIVE_LIMIT).await?,
        ToVolunteer::Welcome { .. }
    ));
    link.close().await;
    let base = peak_rss();

    // A 16 MiB message instead of a hello.
    let (mut link, _) = connect(&url).await?;
    let sent = send_big_result(&link, lease, 16 * MIB).await;
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    let grown = peak_rss().saturating_sub(base);
    eprintln!(
        "16 MiB first message: {sent} bytes sent, peak RSS +{} KiB, refusal {} bytes, \
         longest log event {} bytes",
        grown / 1024,
        reason.len(),
        LONGEST_LOG.load(Ordering::Relaxed)
    );
    assert_short(&reason);
    assert!(reason.contains("8192"), "{reason}");
    link.close().await;

    // A 96 MiB message that never ends.
    let (mut link, _) = connect(&url).await?;
    let sent = send_streamed(&link, b"ST", 96 * MIB, &[], false).await;
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    let grown = peak_rss().saturating_sub(base);
    eprintln!(
        "unfinished 96 MiB message: {sent} bytes sent, peak RSS +{} KiB, refusal {} bytes",
        grown / 1024,
        reason.len()
    );
    assert_short(&reason);
    assert!(sent < 96 * MIB, "the relay read all of it");
    link.close().await;

    // After a proper hello, a result bigger than any lease it holds (it holds none).
    let (mut link, binding) = connect(&url).await?;
    send(&link, &hello(&key, &binding, "test/0".into())).await?;
    assert!(matches!(
        receive(&mut link, RECEIVE_LIMIT).await?,
        ToVolunteer::Welcome { .. }
    ));
    let sent = send_big_result(&link, lease, MIB).await;
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    let grown = peak_rss().saturating_sub(base);
    eprintln!(
        "1 MiB result with no lease: {sent} bytes sent, peak RSS +{} KiB, refusal: {reason}",
        grown / 1024
    );
    assert_short(&reason);
    link.close().await;

    let longest = LONGEST_LOG.load(Ordering::Relaxed);
    assert!(grown < 10 * MIB, "peak RSS grew by {} KiB", grown / 1024);
    assert!(longest < 2048, "a log event of {longest} bytes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_hello_is_dropped_within_seconds() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("bounded-peers-silent");
    let (url, _) = relay(&dir, OPEN_TIMEOUT).await?;
    let (mut link, _) = connect(&url).await?;
    let started = Instant::now();
    let reason = refusal(&mut link, RECEIVE_LIMIT).await?;
    let waited = started.elapsed();
    eprintln!("silent peer refused after {waited:?}: {reason}");
    assert!(reason.contains("hello"), "{reason}");
    assert!(waited < Duration::from_secs(7), "dropped after {waited:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_are_bounded_in_size_candidates_and_number() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let dir = TempDir::new("bounded-peers-offers");
    let (url, _) = relay(&dir, OPEN_TIMEOUT).await?;

    // A 28 MiB body is refused after its first 40 KiB: the relay does not wait for more.
    let mut start = br#"{"sdp":""#.to_vec();
    start.resize(40 * 1024, b'a');
    let started = Instant::now();
    let (status, body) = post_raw(&url, "/api/v1/rtc/offer", 28 * MIB, &start).await?;
    eprintln!(
        "28 MiB offer: {status} after {:?}: {body}",
        started.elapsed()
    );
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("/problems/too-large"), "{body}");

    // 200 candidates: refused, naming the limit, before the relay tries any of them.
    let offer = starling_webrtc_native::make_offer([127, 0, 0, 1].into()).await?;
    let (status, body) = post_offer(&url, &attacker::with_extra_candidates(&offer, 199)).await?;
    eprintln!("200-candidate offer: {status}: {body}");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("candidates"), "{body}");

    // A flood from one address: answered up to the per-address cap of pending peers,
    // then 429 until those time out.
    for i in 0..8 {
        let (status, body) = post_offer(&url, &offer).await?;
        assert_eq!(status, 200, "offer {i}: {body}");
    }
    let (status, body) = post_offer(&url, &offer).await?;
    eprintln!("9th pending offer from one address: {status}: {body}");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("pending"), "{body}");
    tokio::time::sleep(OPEN_TIMEOUT + Duration::from_secs(1)).await;
    let (status, body) = post_offer(&url, &offer).await?;
    assert_eq!(status, 200, "after the pending peers timed out: {body}");
    Ok(())
}
