//! The relay side against the peer it serves in production: headless Chromium, which
//! offers from JavaScript. Skipped (with a note) where no Chromium is installed.

use super::{numbered, read_request, recv_soon, relay_config};
use crate::{answer, PendingPeer};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const PAGE: &str = r#"<!doctype html><script>
const report = (path, text) => fetch(path, {method: "POST", body: text});
(async () => {
  const pc = new RTCPeerConnection();
  const dc = pc.createDataChannel("starling");
  dc.binaryType = "arraybuffer";
  dc.onopen = () => dc.send("hello from chromium");
  dc.onmessage = (e) => dc.send(e.data);
  dc.onclose = () => report("/closed", "");
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const response = await fetch("/api/v1/rtc/offer", {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp}),
  });
  const reply = await response.json();
  await pc.setRemoteDescription({type: "answer", sdp: reply.sdp});
})().catch((e) => report("/error", String(e)));
</script>"#;

/// What the page reports back.
enum Event {
    Answered(PendingPeer, Instant),
    Closed,
    Failed(String),
}

fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

async fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn serve(mut stream: TcpStream, events: mpsc::Sender<Event>) {
    let Some((head, body)) = read_request(&mut stream).await else {
        return;
    };
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    match path.as_str() {
        "/" => respond(&mut stream, "200 OK", "text/html", PAGE).await,
        "/api/v1/rtc/offer" => {
            let started = Instant::now();
            let offer: serde_json::Value = serde_json::from_str(&body).expect("JSON offer");
            let offer = offer["sdp"].as_str().expect("an sdp field");
            match answer(&relay_config(), offer).await {
                Ok((sdp, pending)) => {
                    let reply = serde_json::json!({ "sdp": sdp }).to_string();
                    respond(&mut stream, "200 OK", "application/json", &reply).await;
                    let _ = events.send(Event::Answered(pending, started)).await;
                }
                Err(e) => {
                    respond(&mut stream, "422 Unprocessable", "text/plain", "").await;
                    let _ = events
                        .send(Event::Failed(format!("answer failed: {e}\n{offer}")))
                        .await;
                }
            }
        }
        "/closed" => {
            respond(&mut stream, "204 No Content", "text/plain", "").await;
            let _ = events.send(Event::Closed).await;
        }
        "/error" => {
            respond(&mut stream, "204 No Content", "text/plain", "").await;
            let _ = events.send(Event::Failed(format!("page: {body}"))).await;
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", "").await,
    }
}

async fn next_event(events: &mut mpsc::Receiver<Event>, what: &str) -> Event {
    match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
        Ok(Some(Event::Failed(why))) => panic!("{what}: {why}"),
        Ok(Some(event)) => event,
        Ok(None) => panic!("{what}: the server stopped"),
        Err(_) => panic!("{what}: nothing from the page in 20 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_offerer_connects_exchanges_and_sees_close() {
    // No silent skip: scripts/setup.sh installs Chromium wherever the suite runs.
    let browser = chromium().expect("Chromium at /usr/bin/chromium (scripts/setup.sh installs it)");
    let listener = TcpListener::bind((super::LOCALHOST, 0))
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let (events_tx, mut events) = mpsc::channel(8);
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, events_tx.clone()));
        }
    });
    let profile = std::env::temp_dir().join(format!(
        "starling-webrtc-native-chromium-{}",
        std::process::id()
    ));
    let mut child = tokio::process::Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start Chromium");

    let Event::Answered(pending, answered_at) = next_event(&mut events, "offer").await else {
        panic!("the page reported before offering");
    };
    let mut relay = pending.open().await.expect("Chromium's channel opens");
    println!("Chromium: answer to open in {:?}", answered_at.elapsed());

    assert_eq!(
        recv_soon(&mut relay).await.as_deref(),
        Some(&b"hello from chromium"[..])
    );
    let largest = numbered(1, crate::MAX_MESSAGE_BYTES);
    relay.send(largest.clone()).await.expect("send");
    assert_eq!(recv_soon(&mut relay).await, Some(largest), "64 KiB echo");
    for seq in 0..100 {
        relay.send(numbered(seq, 1000)).await.expect("send");
    }
    for seq in 0..100 {
        assert_eq!(recv_soon(&mut relay).await, Some(numbered(seq, 1000)));
    }

    let closed_at = Instant::now();
    relay.close().await;
    assert!(matches!(
        next_event(&mut events, "close").await,
        Event::Closed
    ));
    println!("Chromium saw the close after {:?}", closed_at.elapsed());
    assert!(closed_at.elapsed() < Duration::from_secs(3));

    let _ = child.kill().await;
    server.abort();
    // Chromium's helper processes outlive the browser by a moment and write into the
    // profile as they exit: remove it until it stays gone.
    for _ in 0..20 {
        let _ = std::fs::remove_dir_all(&profile);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !profile.exists() {
            break;
        }
    }
}
