//! A hostile volunteer, on the project's own crates: it speaks WebRTC through
//! `starling-webrtc-native` like an honest one, but puts whatever bytes it likes on the channel
//! and on the signaling route. Big messages are streamed frame by frame from a small
//! buffer, so the attacker's own memory stays flat and a test measuring the process sees
//! what the relay holds.

// Each test binary that includes `common` uses some of these.
#![allow(dead_code)]

use starling_protocol::codec::{FRAME_LAST, FRAME_MORE};
use starling_protocol::{encode, LeaseId, ToRelay, MAX_CHUNK_BYTES};
use starling_webrtc_native::{PeerError, PeerLink};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head`, then `zeros` zero bytes, then `tail` as one message's frames. With
/// `finish` false every frame says "more follows", so the message never ends. Stops at
/// the first failed send (the relay closed the channel) and returns the bytes sent.
pub async fn send_streamed(
    link: &PeerLink,
    head: &[u8],
    zeros: usize,
    tail: &[u8],
    finish: bool,
) -> usize {
    let total = head.len() + zeros + tail.len();
    let body = MAX_CHUNK_BYTES - 1;
    let mut sent = 0;
    while sent < total {
        let end = (sent + body).min(total);
        let last = end == total && finish;
        let mut frame = Vec::with_capacity(end - sent + 1);
        frame.push(if last { FRAME_LAST } else { FRAME_MORE });
        for at in sent..end {
            frame.push(if at < head.len() {
                head[at]
            } else if at < head.len() + zeros {
                0
            } else {
                tail[at - head.len() - zeros]
            });
        }
        match link.send(frame).await {
            Ok(()) => sent = end,
            Err(PeerError::Closed) | Err(_) => break,
        }
    }
    sent
}

/// The frames of a `ToRelay::Result` whose output is `output_len` zero bytes, streamed
/// without ever holding the message: the encoding of an empty output ends with its
/// length (0), `elapsed_ms` (0) and `more` (0), one byte each, so the output goes in
/// between.
pub async fn send_big_result(link: &PeerLink, lease: LeaseId, output_len: usize) -> usize {
    let empty = encode(&ToRelay::Result {
        lease,
        output: Vec::new(),
        elapsed_ms: 0,
        more: 0,
    });
    let mut head = empty[..empty.len() - 3].to_vec();
    let mut n = output_len;
    // postcard's varint: 7 bits a byte, low first.
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            head.push(byte);
            break;
        }
        head.push(byte | 0x80);
    }
    send_streamed(link, &head, output_len, &[0, 0], true).await
}

/// An HTTP/1.1 POST written by hand: the request declares `declared_len` body bytes but
/// only `body` is sent, so a server that answers anyway has not waited for the rest.
/// Returns the status and the response's body; fails if no answer comes within 10 s.
pub async fn post_raw(
    base_url: &str,
    path: &str,
    declared_len: usize,
    body: &[u8],
) -> anyhow::Result<(u16, String)> {
    let host = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {declared_len}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                // A reset after the answer (the server dropped what it did not read).
                Err(_) if !response.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
    .await;
    match read {
        Ok(result) => result?,
        Err(_) if response.is_empty() => {
            anyhow::bail!("no answer within 10 s (the server is waiting for the whole body)")
        }
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {text:.200}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// POSTs `{"sdp": sdp}` to the relay's signaling route.
pub async fn post_offer(base_url: &str, sdp: &str) -> anyhow::Result<(u16, String)> {
    let body = serde_json::to_vec(&serde_json::json!({ "sdp": sdp }))?;
    post_raw(base_url, "/api/v1/rtc/offer", body.len(), &body).await
}

/// `sdp` with `extra` more host candidates on loopback after its first one.
pub fn with_extra_candidates(sdp: &str, extra: usize) -> String {
    let lines: String = (0..extra)
        .map(|i| {
            format!(
                "a=candidate:{i}9 1 udp 2130706431 127.0.0.1 {} typ host\r\n",
                20000 + i
            )
        })
        .collect();
    match sdp.find("a=candidate:") {
        Some(at) => format!("{}{lines}{}", &sdp[..at], &sdp[at..]),
        None => format!("{sdp}{lines}"),
    }
}
