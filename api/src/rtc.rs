//! `POST /api/v1/rtc/offer`: WebRTC signaling without trickle ICE.

use serde::{Deserialize, Serialize};

/// Offer or answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sdp {
    /// Session description text.
    pub sdp: String,
}
