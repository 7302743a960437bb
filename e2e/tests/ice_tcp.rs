//! A volunteer whose network drops UDP: the browser cannot reach the relay's WebRTC side
//! at all, until the relay also offers an ICE-TCP candidate (`--rtc-tcp`); then a job
//! completes over TCP and the device card says so. The page is held to WebRTC
//! (`?transport=webrtc`): this is the path for networks that let TCP out to any port, and
//! the WebSocket fallback (`websocket_udp_blocked.rs`) is the one for the rest.
//!
//! UDP is dropped for real: the test runs itself again inside a fresh network namespace
//! (`unshare --net`, as root) whose loopback drops every UDP packet (an nftables rule,
//! Debian's `nftables`), with the relay, chromedriver and Chromium all inside it.

use starling_e2e::browser::Browser;
use starling_e2e::{no_udp, MatmulJob, Relay, TempDir};
use std::time::{Duration, Instant};

const TEST: &str = "browser_behind_a_udp_dropping_network_works_over_ice_tcp_only";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_behind_a_udp_dropping_network_works_over_ice_tcp_only() -> anyhow::Result<()> {
    if !no_udp::inside() {
        return no_udp::run_inside(TEST);
    }
    no_udp::ensure_dropped()?;

    // Without an ICE-TCP candidate nothing connects.
    let data = TempDir::new("ice-udp-only")?;
    let relay = Relay::start(data.path(), 1)?;
    let browser = Browser::start("ice-udp-only").await?;
    // WebRTC only: the WebSocket fallback would reach the relay over TCP by itself.
    browser
        .goto(&format!("{}/?transport=webrtc", relay.url()))
        .await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    browser.click("start").await?;
    let connected = browser
        .wait_text("transport", Duration::from_secs(8), |t| {
            t != "not connected" && t != "connecting…"
        })
        .await;
    assert!(
        connected.is_err(),
        "with UDP dropped and no TCP candidate the browser cannot connect: {connected:?}"
    );
    assert_eq!(relay.api().stats().await?.volunteers, 0);
    browser.click("stop").await?;
    drop(browser);
    drop(relay);

    let data = TempDir::new("ice-tcp")?;
    let relay = Relay::start_with(data.path(), 1, &["--rtc-tcp"])?;
    let api = relay.api();
    let browser = Browser::start("ice-tcp").await?;
    // WebRTC only: the WebSocket fallback would reach the relay over TCP by itself.
    browser
        .goto(&format!("{}/?transport=webrtc", relay.url()))
        .await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    let job = MatmulJob::random(96, 128, 96, 31);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    let started = Instant::now();
    browser.click("start").await?;
    let transport = browser
        .wait_text("transport", Duration::from_secs(30), |t| {
            t != "not connected" && t != "connecting…"
        })
        .await?;
    eprintln!("connected over {transport} in {:?}", started.elapsed());
    assert_eq!(transport, "WebRTC (direct, TCP)");
    let done = api.wait_done(&id, Duration::from_secs(120)).await?;
    eprintln!(
        "job done over ICE-TCP in {:?}: {:?}",
        started.elapsed(),
        done.progress
    );
    let (status, result) = api.result(&id).await?;
    assert_eq!(status, 200);
    job.check(&result)?;
    browser.click("stop").await?;
    Ok(())
}
