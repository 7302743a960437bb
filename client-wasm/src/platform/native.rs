//! Native transport: a `webrtc`-crate data channel through `starling-webrtc-native`.

use crate::{Transport, TransportError, TransportKind};
use starling_protocol::ChannelBinding;
use starling_webrtc_native::PeerLink;

/// A data channel to the relay.
pub struct NativeTransport {
    link: PeerLink,
    binding: ChannelBinding,
    kind: TransportKind,
}

impl NativeTransport {
    /// Signals through `relay` (e.g. `http://127.0.0.1:8080`) and opens the channel,
    /// gathering with the STUN and TURN servers the relay advertises.
    pub async fn connect(relay: &str) -> Result<Self, TransportError> {
        let http = starling_webrtc_native::signaling_client()
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Self::connect_with(relay, &http, false).await
    }

    /// [`NativeTransport::connect`], signaling with `http` (which may trust an https
    /// relay's self-signed certificate); with `relay_only`, offering TURN-relayed
    /// candidates only (as the page's `?ice=relay`), so the channel goes through TURN or
    /// fails.
    pub async fn connect_with(
        relay: &str,
        http: &reqwest::Client,
        relay_only: bool,
    ) -> Result<Self, TransportError> {
        let base = relay.trim_end_matches('/');
        let servers = match starling_webrtc_native::fetch_ice_servers(
            http,
            &format!("{base}/api/v1/rtc/ice-servers"),
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
        let url = format!("{base}/api/v1/rtc/offer");
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
            link,
            binding,
            kind,
        })
    }

    /// Closes the channel and the peer connection.
    pub async fn close(self) {
        self.link.close().await;
    }
}

impl Transport for NativeTransport {
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError> {
        self.link
            .send(frame)
            .await
            .map_err(|_| TransportError::Closed)
    }

    async fn recv(&mut self) -> Option<Vec<u8>> {
        self.link.recv().await
    }

    fn binding(&self) -> &ChannelBinding {
        &self.binding
    }

    fn kind(&self) -> TransportKind {
        self.kind
    }
}
