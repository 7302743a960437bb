//! The Starling volunteer runtime, for browsers (wasm32) and natively. The browser app
//! (`web-ui/`) and the native `volunteer` binary (`volunteer/`, which also holds the
//! test-only fault injection) are thin shells around it.
//!
//! - [`volunteer`]: the platform-free work loop: hello, ask for work, run each unit,
//!   send the output back. It sees the network only through [`Transport`].
//! - [`engine`]: runs units on the GPU through wgpu, or on the kernels' CPU reference when
//!   no adapter is available.
//! - [`reconnect`]: when to try the relay again after a loss (jittered backoff), for
//!   every transport.
//! - [`platform`]: the one place that differs per target: the WebRTC data channel of the
//!   browser (`web`) or of the `webrtc` crate (`native`), chosen by one alias.

pub mod engine;
pub mod platform;
pub mod reconnect;
pub mod volunteer;

pub use engine::{ComputeError, Engine};
use starling_protocol::ChannelBinding;
pub use volunteer::{duty_cycle_rest_ms, run, run_paced, Event, Profile, VolunteerError};

/// Why the transport failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Signaling or channel setup failed.
    #[error("could not connect to the relay: {0}")]
    Connect(String),
    /// The channel closed.
    #[error("the connection to the relay closed")]
    Closed,
}

/// How the channel to the relay travels, for the device card and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// WebRTC straight between this device and the relay (host, server-reflexive or
    /// peer-reflexive candidates at both ends).
    WebRtcDirect,
    /// WebRTC through a TURN server's relayed address.
    WebRtcTurn,
    /// WebRTC straight to the relay, over ICE-TCP (the relay's `--rtc-tcp`): what a
    /// network that drops UDP leaves.
    WebRtcTcp,
    /// WebRTC, path unknown (the browser's statistics did not name the selected pair).
    WebRtc,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::WebRtcDirect => "WebRTC (direct)",
            Self::WebRtcTurn => "WebRTC (TURN)",
            Self::WebRtcTcp => "WebRTC (direct, TCP)",
            Self::WebRtc => "WebRTC",
        })
    }
}

/// An ordered, reliable message channel to the relay (one WebRTC data channel).
// Futures here are not Send on wasm32 (browser objects are single-threaded), so the trait
// deliberately leaves auto-trait bounds off.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Sends one frame (at most 64 KiB); waits while the send buffer is full.
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError>;
    /// Next frame; `None` once the channel closed.
    async fn recv(&mut self) -> Option<Vec<u8>>;
    /// The connection's two certificate fingerprints, which the hello's proof signs.
    fn binding(&self) -> &ChannelBinding;
    /// How the channel travels, as known once it is open.
    fn kind(&self) -> TransportKind;
}
