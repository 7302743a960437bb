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
    /// Connects to `relay` (e.g. `http://127.0.0.1:8080`) over WebRTC, falling back to
    /// the WebSocket if the data channel has not opened within [`WEBRTC_FALLBACK_AFTER`].
    pub async fn connect(relay: &str) -> Result<Self, TransportError> {
        Self::connect_with(relay, TransportChoice::Auto).await
    }

    /// Connects to `relay` over the transport `choice` names.
    pub async fn connect_with(
        relay: &str,
        choice: TransportChoice,
    ) -> Result<Self, TransportError> {
        let relay = relay.trim_end_matches('/');
        match choice {
            TransportChoice::WebRtc => Self::webrtc(relay).await,
            TransportChoice::WebSocket => Self::websocket(relay).await,
            TransportChoice::Auto => {
                match tokio::time::timeout(WEBRTC_FALLBACK_AFTER, Self::webrtc(relay)).await {
                    Ok(Ok(transport)) => Ok(transport),
                    Ok(Err(e)) => {
                        tracing::info!("WebRTC failed ({e}); falling back to the WebSocket");
                        Self::websocket(relay).await
                    }
                    Err(_) => {
                        tracing::info!(
                            "no WebRTC channel within {WEBRTC_FALLBACK_AFTER:?}; falling back \
                             to the WebSocket"
                        );
                        Self::websocket(relay).await
                    }
                }
            }
        }
    }

    async fn webrtc(relay: &str) -> Result<Self, TransportError> {
        let link = starling_webrtc_native::connect(&format!("{relay}/api/v1/rtc/offer"))
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        let descriptions = link.descriptions();
        let binding = ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Ok(Self {
            link: Link::WebRtc(link),
            binding: Binding::Dtls(binding),
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
        match self.link {
            // This build offers no TURN server, so its channel is always direct.
            Link::WebRtc(_) => TransportKind::WebRtcDirect,
            Link::WebSocket { .. } => TransportKind::WebSocket,
        }
    }
}

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
