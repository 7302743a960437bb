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
//!   browser (`web`) or of the `webrtc` crate (`native`), chosen by one alias, each with
//!   the WebSocket it falls back to when WebRTC cannot connect ([`TransportChoice`]).

pub mod engine;
pub mod platform;
pub mod reconnect;
pub mod volunteer;

pub use engine::{
    local_matmul, ComputeError, CpuReference, CustomKernels, Engine, MatmulTrials, BENCHMARK_N,
    CPU_REFERENCE, CUSTOM_KERNELS, MATMUL_TRIALS,
};
use starling_protocol::Binding;
use std::fmt;
use std::time::Duration;
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

/// How long [`TransportChoice::Auto`] waits for the WebRTC data channel to open before it
/// falls back to the WebSocket: a loopback or LAN channel opens in well under a second,
/// one across the internet in one or two; where UDP is blocked it never opens, and
/// waiting longer would only delay the first unit.
pub const WEBRTC_FALLBACK_AFTER: Duration = Duration::from_secs(5);

/// Which transport to open to the relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportChoice {
    /// WebRTC, or the WebSocket if the data channel has not opened within
    /// [`WEBRTC_FALLBACK_AFTER`].
    #[default]
    Auto,
    /// WebRTC only.
    WebRtc,
    /// The WebSocket only (`/api/v1/ws`).
    WebSocket,
}

impl std::str::FromStr for TransportChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "webrtc" => Ok(Self::WebRtc),
            "websocket" => Ok(Self::WebSocket),
            _ => Err(format!(
                "unknown transport {:?}: use auto, webrtc or websocket",
                text.chars().take(32).collect::<String>()
            )),
        }
    }
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
    /// The WebSocket fallback.
    WebSocket,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WebRtcDirect => "WebRTC (direct)",
            Self::WebRtcTurn => "WebRTC (TURN)",
            Self::WebRtcTcp => "WebRTC (direct, TCP)",
            Self::WebRtc => "WebRTC",
            Self::WebSocket => "WebSocket fallback",
        })
    }
}

/// An ordered, reliable message channel to the relay (a WebRTC data channel, or the
/// WebSocket fallback).
// Futures here are not Send on wasm32 (browser objects are single-threaded), so the trait
// deliberately leaves auto-trait bounds off.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Sends one frame (at most 64 KiB); waits while the send buffer is full.
    async fn send(&self, frame: Vec<u8>) -> Result<(), TransportError>;
    /// Next frame; `None` once the channel closed.
    async fn recv(&mut self) -> Option<Vec<u8>>;
    /// What the hello's proof signs: the connection's two certificate fingerprints, or
    /// the relay's challenge and host on a WebSocket.
    fn binding(&self) -> &Binding;
    /// Which transport this is.
    fn kind(&self) -> TransportKind;
}
