//! Native transport: a `webrtc`-crate data channel through `starling-webrtc-native`, or
//! the relay's WebSocket (`/api/v1/ws`, through `tokio-tungstenite`) where WebRTC cannot
//! connect.

use crate::{Transport, TransportChoice, TransportError, TransportKind, WEBRTC_FALLBACK_AFTER};
use futures::lock::Mutex;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use starling_protocol::{Binding, ChallengeBinding, ChannelBinding, Reassembler, ToVolunteer};
use starling_webrtc_native::PeerLink;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The relay's challenge is a few dozen bytes; nothing bigger is read before it.
const CHALLENGE_MAX_BYTES: usize = 1024;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connection to the relay.
pub struct NativeTransport {
    link: Link,
    binding: Binding,
    kind: TransportKind,
}

enum Link {
    WebRtc(PeerLink),
    WebSocket {
        // `send` takes `&self`; the sink needs `&mut`.
        sink: Mutex<SplitSink<Socket, Message>>,
        stream: SplitStream<Socket>,
    },
}

impl NativeTransport {
    /// Connects to `relay` (e.g. `http://127.0.0.1:8080`) over WebRTC, gathering with the
    /// STUN and TURN servers the relay advertises, and falls back to the WebSocket if the
    /// data channel has not opened within [`WEBRTC_FALLBACK_AFTER`].
    pub async fn connect(relay: &str) -> Result<Self, TransportError> {
        let http = starling_webrtc_native::signaling_client()
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Self::connect_with(relay, &http, TransportChoice::Auto, false).await
    }

    /// Connects to `relay` over the transport `choice` names, signaling with `http`
    /// (which may trust an https relay's self-signed certificate); with `relay_only`,
    /// WebRTC offers TURN-relayed candidates only (as the page's `?ice=relay`), so the
    /// channel goes through TURN or fails.
    pub async fn connect_with(
        relay: &str,
        http: &reqwest::Client,
        choice: TransportChoice,
        relay_only: bool,
    ) -> Result<Self, TransportError> {
        let relay = relay.trim_end_matches('/');
        let webrtc = Self::webrtc(relay, http, relay_only);
        match choice {
            TransportChoice::WebRtc => webrtc.await,
            TransportChoice::WebSocket => Self::websocket(relay).await,
            TransportChoice::Auto => {
                match tokio::time::timeout(WEBRTC_FALLBACK_AFTER, webrtc).await {
                    Ok(Ok(transport)) => Ok(transport),
                    Ok(Err(e)) => {
                        tracing::info!("WebRTC failed ({e}); falling back to the WebSocket");
                        Self::websocket(relay).await
                    }
                    Err(_) => {
                        tracing::info!(
                            "no WebRTC channel within {WEBRTC_FALLBACK_AFTER:?}; falling back to \
                         the WebSocket"
                        );
                        Self::websocket(relay).await
                    }
                }
            }
        }
    }

    async fn webrtc(
        relay: &str,
        http: &reqwest::Client,
        relay_only: bool,
    ) -> Result<Self, TransportError> {
        let servers = match starling_webrtc_native::fetch_ice_servers(
            http,
            &format!("{relay}/api/v1/rtc/ice-servers"),
        )
        .await
        {
            Ok(servers) => servers,
            // An older relay, or a rate limit: host candidates still reach a relay
            // that is not behind a NAT, unless only TURN may be used.
            Err(e) if !relay_only => {
                tracing::warn!("no ICE servers from the relay: {e}");
                Vec::new()
            }
            Err(e) => return Err(TransportError::Connect(e.to_string())),
        };
        if relay_only && servers.is_empty() {
            return Err(TransportError::Connect(
                "relayed candidates only were asked for, and the relay advertises no TURN server"
                    .into(),
            ));
        }
        let ice = starling_webrtc_native::IceOptions {
            servers,
            relay_only,
        };
        let url = format!("{relay}/api/v1/rtc/offer");
        let link = starling_webrtc_native::connect_with(&url, http, &ice)
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let kind = match link.relayed().await {
            Some(true) => TransportKind::WebRtcTurn,
            Some(false) => TransportKind::WebRtcDirect,
            None => TransportKind::WebRtc,
        };
        let descriptions = link.descriptions();
        let binding = ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Ok(Self {
            link: Link::WebRtc(link),
            binding: Binding::Dtls(binding),
            kind,
        })
    }

    /// Opens `/api/v1/ws` and reads the relay's challenge, which the hello signs with the
    /// relay's host as this URL names it.
    async fn websocket(relay: &str) -> Result<Self, TransportError> {
        let (url, host) = websocket_url(relay)?;
        let (socket, _) = tokio::time::timeout(
            WEBRTC_FALLBACK_AFTER * 3,
            tokio_tungstenite::connect_async(url.as_str()),
        )
        .await
        .map_err(|_| TransportError::Connect(format!("{url} did not answer")))?
        .map_err(|e| TransportError::Connect(format!("{url}: {e}")))?;
        let (sink, mut stream) = socket.split();
        let mut reassembler = Reassembler::new(CHALLENGE_MAX_BYTES);
        let challenge = loop {
            let message = tokio::time::timeout(WEBRTC_FALLBACK_AFTER, stream.next())
                .await
                .map_err(|_| TransportError::Connect(format!("no challenge from {url}")))?
                .ok_or(TransportError::Closed)?
                .map_err(|e| TransportError::Connect(format!("{url}: {e}")))?;
            let Message::Binary(frame) = message else {
                continue;
            };
            match reassembler.push_message(&frame) {
                Ok(Some(ToVolunteer::Challenge { challenge })) => break challenge,
                Ok(Some(ToVolunteer::Refused { reason })) => {
                    return Err(TransportError::Connect(format!("refused: {reason}")))
                }
                Ok(Some(_)) => {
                    return Err(TransportError::Connect(format!(
                        "{url} sent no challenge first"
                    )))
                }
                Ok(None) => {}
                Err(e) => return Err(TransportError::Connect(format!("{url}: {e}"))),
            }
        };
        Ok(Self {
            link: Link::WebSocket {
                sink: Mutex::new(sink),
                stream,
            },
            binding: Binding::Challenge(ChallengeBinding::new(challenge, &host)),
            kind: TransportKind::WebSocket,
        })
    }

    /// Closes the connection.
    pub async fn close(self) {
        match self.link {
            Link::WebRtc(link) => link.close().await,
            Link::WebSocket { sink, .. } => {
                let _ = sink.into_inner().close().await;
            }
        }
    }
}

/// The WebSocket URL of the relay at `relay` (`http://` becomes `ws://`, `https://`
/// `wss://`) and the host its hello signs.
fn websocket_url(relay: &str) -> Result<(String, String), TransportError> {
    let (scheme, rest) = if let Some(rest) = relay.strip_prefix("http://") {
        ("ws", rest)
    } else if let Some(rest) = relay.strip_prefix("https://") {
        ("wss", rest)
    } else {
        return Err(TransportError::Connect(format!(
            "the relay's URL {relay:?} is not http:// or https://"
        )));
    };
    let host = rest.split('/').next().unwrap_or(rest).to_owned();
    Ok((format!("{scheme}://{rest}/api/v1/ws"), host))
}

impl Transport for NativeTransport {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        match &self.link {
            Link::WebRtc(link) => link.send(frame).await.map_err(|_| TransportError::Closed),
            Link::WebSocket { sink, .. } => sink
                .lock()
                .await
                .send(Message::Binary(frame.into()))
                .await
                .map_err(|_| TransportError::Closed),
        }
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        match &mut self.link {
            Link::WebRtc(link) => link.recv().await,
            Link::WebSocket { stream, .. } => loop {
                match stream.next().await? {
                    Ok(Message::Binary(frame)) => return Some(frame.into()),
                    Ok(Message::Close(_)) | Err(_) => return None,
                    // Text is not the protocol; pings are answered by tungstenite.
                    Ok(_) => {}
                }
            },
        }
    }

    fn binding(&self) -> &Binding {
        &self.binding
    }

    fn kind(&self) -> TransportKind {
        self.kind
    }
}

/// Milliseconds on a monotonic clock that starts with the process.
pub fn now_ms() -> f64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1e3
}

/// What this device remembered under `key`: nothing natively, where a volunteer is one
/// long-running process and tries again when it restarts.
pub fn remembered(_key: &str) -> Option<String> {
    None
}

/// Natively nothing is kept past the process (see [`remembered`]).
pub fn remember(_key: &str, _value: &str) {}

#[cfg(test)]
mod tests {
    use super::websocket_url;

    #[test]
    fn the_websocket_url_and_signed_host_follow_the_relays_url() {
        let (url, host) = websocket_url("http://127.0.0.1:8080").expect("http");
        assert_eq!(url, "ws://127.0.0.1:8080/api/v1/ws");
        assert_eq!(host, "127.0.0.1:8080");
        let (url, host) = websocket_url("https://relay.example/base").expect("https");
        assert_eq!(url, "wss://relay.example/base/api/v1/ws");
        assert_eq!(host, "relay.example");
        assert!(websocket_url("relay.example").is_err());
    }
}
