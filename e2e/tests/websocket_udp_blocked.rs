//! A browser on a network that drops UDP (no WebRTC, no TURN) still volunteers: its data
//! channel never opens, it falls back to the relay's WebSocket, completes a job, and the
//! device card says "WebSocket fallback". Where UDP flows, the same page connects over
//! WebRTC and says "WebRTC (direct)": the fallback is taken only when needed.
//!
//! The relay, chromedriver, Chromium and this test's own client all run in a network
//! namespace that drops UDP ([`starling_e2e::no_udp`]), so nothing but the WebSocket's
//! TCP can carry the session.

use starling_e2e::browser::Browser;
use starling_e2e::{no_udp, MatmulJob, Relay, TempDir};
use std::time::Duration;

const TEST: &str = "a_browser_without_udp_falls_back_to_the_websocket_and_completes_a_job";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_udp_falls_back_to_the_websocket_and_completes_a_job(
) -> anyhow::Result<()> {
    if !no_udp::inside() {
        return no_udp::run_inside(TEST);
    }
    no_udp::ensure_dropped()?;

    let data = TempDir::new("ws-udp-blocked")?;
    let relay = Relay::start(data.path(), 1)?;
    let api = relay.api();
    let browser = Browser::start("ws-udp-blocked").await?;
    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    let job = MatmulJob::random(64, 64, 64, 5);
    let id = api.submit_with_quorum(&job.body, 1).await?;
    browser.click("start").await?;
    // The WebRTC attempt takes its 5 s before the fallback; then the units.
    api.wait_done(&id, Duration::from_secs(120)).await?;
    job.check(&api.result(&id).await?.1)?;
    let transport = browser
        .wait_text("transport", Duration::from_secs(10), |t| {
            t == "WebSocket fallback"
        })
        .await?;
    eprintln!("device card's connection: {transport}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_udp_stays_on_webrtc() -> anyhow::Result<()> {
    let data = TempDir::new("ws-udp-open")?;
    let relay = Relay::start(data.path(), 1)?;
    let browser = Browser::start("ws-udp-open").await?;
    browser.goto(&relay.url()).await?;
    browser
        .wait_text("device", Duration::from_secs(30), |t| t != "Detecting…")
        .await?;
    browser.click("start").await?;
    let transport = browser
        .wait_text("transport", Duration::from_secs(30), |t| {
            t != "connecting…" && t != "not connected"
        })
        .await?;
    assert_eq!(transport, "WebRTC (direct)");
    Ok(())
}
