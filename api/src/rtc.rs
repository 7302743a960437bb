//! `POST /api/v1/rtc/offer`: WebRTC signaling without trickle ICE; `GET
//! /api/v1/rtc/ice-servers`: the STUN and TURN servers to gather candidates with first.

use serde::{Deserialize, Serialize};

/// Offer or answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sdp {
    /// Session description text.
    pub sdp: String,
}

/// `GET /api/v1/rtc/ice-servers`: the STUN and TURN servers a volunteer should give its
/// peer connection before it makes its offer, in the shape of the browser's
/// `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServers {
    /// The servers, as `RTCIceServer` dictionaries; empty when the relay names none (the
    /// volunteer then connects with its host candidates only).
    pub ice_servers: Vec<IceServer>,
    /// Seconds the TURN credentials below stay valid; fetch again before connecting
    /// after that. Absent when they do not expire (none, or a static pair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// One entry of [`IceServers`], as the browser's `RTCIceServer` has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs (RFC 7064, RFC 7065).
    pub urls: Vec<String>,
    /// The TURN user name; for minted credentials `<unix expiry>:<random id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The TURN password; for minted credentials base64(HMAC-SHA1(secret, username)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
