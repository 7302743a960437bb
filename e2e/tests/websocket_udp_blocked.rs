//! A browser on a network that drops UDP (no WebRTC, no TURN) still volunteers: its data
//! channel never opens, it falls back to the relay's WebSocket, completes a job, and the
//! device card says "WebSocket fallback". Where UDP flows, the same page connects over
//! WebRTC and says "WebRTC (direct)": the fallback is taken only when needed.
//!
//! The relay, chromedriver, Chromium and this test's own client all run in a network
//! namespace the test makes (`unshare --net`: loopback up, an nftables table dropping
//! every UDP packet), so nothing but the WebSocket's TCP can carry the session.
//! Chromium's IP-handling flags do not stop loopback UDP, so the kernel does it. Making
//! the namespace needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it the test fails
//! and says so.

use starling_e2e::browser::Browser;
use starling_e2e::{MatmulJob, Relay, TempDir};
use std::process::Command;
use std::time::Duration;

/// Set in the copy of this test that runs inside the namespace.
const INSIDE: &str = "STARLING_TEST_INSIDE_UDP_BLOCKED_NETNS";
const TEST: &str = "a_browser_without_udp_falls_back_to_the_websocket_and_completes_a_job";
/// Run by `sh -c` inside the new namespace: loopback up, UDP dropped both ways, then
/// this test binary again (`$0`), for this one test.
const SETUP: &str = "set -e
ip link set lo up
nft add table inet starling_no_udp
nft add chain inet starling_no_udp in '{ type filter hook input priority 0; }'
nft add rule inet starling_no_udp in meta l4proto udp drop
nft add chain inet starling_no_udp out '{ type filter hook output priority 0; }'
nft add rule inet starling_no_udp out meta l4proto udp drop
exec \"$0\" --exact \"$1\" --nocapture --test-threads=1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_udp_falls_back_to_the_websocket_and_completes_a_job(
) -> anyhow::Result<()> {
    if std::env::var_os(INSIDE).is_some() {
        return inside_the_namespace().await;
    }
    let probe = Command::new("unshare").args(["--net", "true"]).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => anyhow::bail!(
            "this test needs a network namespace with UDP dropped, and `unshare --net` \
             failed (run the tests as root, or with CAP_SYS_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => anyhow::bail!("cannot run unshare (util-linux): {e}"),
    }
    anyhow::ensure!(
        Command::new("nft").arg("--version").output().is_ok(),
        "this test drops UDP with nft: scripts/setup.sh installs Debian's nftables"
    );
    let status = Command::new("unshare")
        .args(["--net", "sh", "-c", SETUP])
        .arg(std::env::current_exe()?)
        .arg(TEST)
        .env(INSIDE, "1")
        .status()?;
    anyhow::ensure!(
        status.success(),
        "the test inside the UDP-blocked namespace failed ({status}); its output is above"
    );
    Ok(())
}

async fn inside_the_namespace() -> anyhow::Result<()> {
    // The namespace really drops UDP on loopback: a datagram sent to a bound socket
    // never arrives.
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0")?;
    receiver.set_read_timeout(Some(Duration::from_millis(300)))?;
    let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let _ = sender.send_to(b"probe", receiver.local_addr()?);
    let mut buf = [0u8; 16];
    anyhow::ensure!(
        receiver.recv_from(&mut buf).is_err(),
        "UDP still flows in the namespace: the nftables rule did not take"
    );

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
