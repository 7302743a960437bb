//! Native transport: a `webrtc`-crate data channel through `starling-webrtc-native`.

use crate::{Transport, TransportError};
use starling_protocol::ChannelBinding;
use starling_webrtc_native::PeerLink;

/// A data channel to the relay.
pub struct NativeTransport {
    link: PeerLink,
    binding: ChannelBinding,
}

impl NativeTransport {
    /// Signals through `relay` (e.g. `http://127.0.0.1:8080`) and opens the channel.
    pub async fn connect(relay: &str) -> Result<Self, TransportError> {
        let url = format!("{}/api/v1/rtc/offer", relay.trim_end_matches('/'));
        let link = starling_webrtc_native::connect(&url)
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Self::bound(link)
    }

    /// [`NativeTransport::connect`], signaling with `http` (which may trust an https
    /// relay's self-signed certificate).
    pub async fn connect_with(relay: &str, http: &reqwest::Client) -> Result<Self, TransportError> {
        let url = format!("{}/api/v1/rtc/offer", relay.trim_end_matches('/'));
        let link = starling_webrtc_native::connect_with(&url, http)
            .await
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Self::bound(link)
    }

    fn bound(link: PeerLink) -> Result<Self, TransportError> {
        let descriptions = link.descriptions();
        let binding = ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        Ok(Self { link, binding })
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
}
