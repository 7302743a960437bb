//! What a volunteer's session runs over: a WebRTC data channel, or the WebSocket a
//! volunteer falls back to when WebRTC cannot connect (UDP blocked, no TURN). Both carry
//! the same frames (the codec's chunks, at most 64 KiB each) and the session
//! (`session.rs`) serves both with one loop; they differ only in what a hello's proof
//! signs ([`Link::binding`]) and where the peer's traffic comes from.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{SplitStream, StreamExt};
use futures::SinkExt;
use starling_protocol::channel::End;
use starling_protocol::{
    encode_frames, Binding, ChallengeBinding, ChannelBinding, NamedCertificate, ToVolunteer,
    CHALLENGE_BYTES, MAX_CHUNK_BYTES,
};
use starling_webrtc_native::{PeerLink, PeerSender};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest WebSocket message (and frame) read: one codec chunk and its header. A
/// bigger one is refused by the WebSocket layer before it is buffered whole.
pub const MAX_WS_MESSAGE_BYTES: usize = MAX_CHUNK_BYTES + 64;
/// Frames queued for the WebSocket writer: a sender waits past this, as a WebRTC sender
/// waits on its channel's send buffer, so a peer that stops reading holds a few frames.
const WS_QUEUE_FRAMES: usize = 4;
/// How long closing waits for the close frame (and a `Refused` before it) to go out.
const WS_CLOSE_GRACE: Duration = Duration::from_secs(2);

/// One volunteer's connection, before and after its hello.
#[derive(Debug)]
pub enum Link {
    /// A WebRTC data channel (`POST /api/v1/rtc/offer`).
    WebRtc(PeerLink),
    /// The WebSocket fallback (`GET /api/v1/ws`).
    WebSocket(WsLink),
}

/// Sends frames on a [`Link`]; a clone can outlive a borrow of the link.
#[derive(Clone, Debug)]
pub enum LinkSender {
    /// The data channel's sender.
    WebRtc(PeerSender),
    /// The queue the WebSocket's writer task drains.
    WebSocket(mpsc::Sender<Message>),
}

/// The link is closed.
#[derive(Debug)]
pub struct LinkClosed;

impl LinkSender {
    /// Sends one frame; waits while the link's buffer is full.
    pub async fn send(&self, frame: Vec<u8>) -> Result<(), LinkClosed> {
        match self {
            Self::WebRtc(tx) => tx.send(frame).await.map_err(|_| LinkClosed),
            Self::WebSocket(tx) => tx
                .send(Message::Binary(frame.into()))
                .await
                .map_err(|_| LinkClosed),
        }
    }
}

impl Link {
    /// A sender for this link.
    pub fn sender(&self) -> LinkSender {
        match self {
            Self::WebRtc(link) => LinkSender::WebRtc(link.sender()),
            Self::WebSocket(link) => LinkSender::WebSocket(link.outbound.clone()),
        }
    }

    /// The next frame; `Ok(None)` once the peer closed. `Err` says why the peer's
    /// traffic is refused (a frame that is not binary, or over the size limit), without
    /// quoting it.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, String> {
        match self {
            Self::WebRtc(link) => Ok(link.recv().await),
            Self::WebSocket(link) => link.recv().await,
        }
    }

    /// What the hello's proof must sign on this connection, after checking what the
    /// transport itself can: for WebRTC, that the certificate DTLS presented is the one
    /// every fingerprint of the offer names.
    pub async fn binding(&self) -> Result<Binding, String> {
        match self {
            Self::WebRtc(link) => {
                // The offer was checked for a fingerprint before it was answered
                // (routes::rtc), so this fails only on a relay whose own answer names none.
                let descriptions = link.descriptions();
                let binding =
                    ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)
                        .map_err(|e| e.to_string())?;
                // The handshake checked the certificate against one of the offer's
                // fingerprints (webrtc-rs: the first, sha-256 only). An offer may name its
                // certificate under several algorithms (RFC 8122), so all of them are
                // checked here, before anything the peer sends is read: one certificate's
                // sha-256 beside another's sha-384 names two certificates, and such a peer
                // is refused.
                let presented = link
                    .remote_certificate()
                    .await
                    .ok_or_else(|| "the DTLS handshake presented no certificate".to_owned())?;
                NamedCertificate::from_sdp(&descriptions.offer, End::Volunteer)
                    .and_then(|named| named.check(&presented))
                    .map_err(|e| e.to_string())?;
                Ok(Binding::Dtls(binding))
            }
            Self::WebSocket(link) => Ok(Binding::Challenge(link.binding.clone())),
        }
    }

    /// Where the peer's traffic comes from: the ICE-selected pair's remote address, or
    /// the WebSocket's TCP peer.
    pub async fn remote_address(&self) -> Option<IpAddr> {
        match self {
            Self::WebRtc(link) => link.remote_address().await,
            Self::WebSocket(link) => link.remote,
        }
    }

    /// Which transport, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::WebRtc(_) => "webrtc",
            Self::WebSocket(_) => "websocket",
        }
    }

    /// Closes the connection, after what was queued to send.
    pub async fn close(self) {
        match self {
            Self::WebRtc(link) => link.close().await,
            Self::WebSocket(link) => link.close().await,
        }
    }
}

/// A volunteer's WebSocket: the inbound half read by the session, the outbound half
/// owned by a writer task fed through a bounded queue (the sink needs `&mut`, the
/// session's senders are shared).
#[derive(Debug)]
pub struct WsLink {
    inbound: SplitStream<WebSocket>,
    outbound: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<()>,
    binding: ChallengeBinding,
    remote: Option<IpAddr>,
}

impl WsLink {
    /// Takes over an upgraded socket from `remote`, reached as `relay_host` (the
    /// request's `Host`), and sends the connection's fresh challenge first.
    pub async fn open(socket: WebSocket, relay_host: &str, remote: Option<IpAddr>) -> Self {
        let challenge: [u8; CHALLENGE_BYTES] = rand::random();
        let (mut sink, inbound) = socket.split();
        let (outbound, mut queue) = mpsc::channel::<Message>(WS_QUEUE_FRAMES);
        let writer = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                let closing = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || closing {
                    break;
                }
            }
        });
        for frame in encode_frames(&ToVolunteer::Challenge { challenge }) {
            // A closed queue means a writer that already failed: the session's first
            // read then finds the socket closed.
            let _ = outbound.send(Message::Binary(frame.into())).await;
        }
        Self {
            inbound,
            outbound,
            writer,
            binding: ChallengeBinding::new(challenge, relay_host),
            remote,
        }
    }

    async fn recv(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            match self.inbound.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Binary(bytes))) => return Ok(Some(bytes.into())),
                Some(Ok(Message::Text(_))) => {
                    return Err("a text WebSocket message: the protocol sends binary \
                                messages only"
                        .into())
                }
                // Answered by the WebSocket layer; at most 125 bytes each.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(e)) => return Err(ws_refusal(&e)),
            }
        }
    }

    async fn close(self) {
        let _ = self
            .outbound
            .send(Message::Close(Some(CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
        drop(self.outbound);
        let mut writer = self.writer;
        if tokio::time::timeout(WS_CLOSE_GRACE, &mut writer)
            .await
            .is_err()
        {
            writer.abort();
        }
    }
}

/// Why a WebSocket read failed, as a refusal: the size limit by name, anything else as
/// malformed traffic (the WebSocket layer's error names no peer bytes).
fn ws_refusal(e: &axum::Error) -> String {
    let text = e.to_string();
    if text.contains("Space limit exceeded") || text.to_ascii_lowercase().contains("too long") {
        format!("a WebSocket message over the {MAX_WS_MESSAGE_BYTES}-byte limit")
    } else {
        format!(
            "malformed WebSocket traffic: {}",
            text.chars().take(120).collect::<String>()
        )
    }
}
