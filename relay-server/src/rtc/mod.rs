//! Volunteers' connections: what an offer (or a WebSocket) may cost before its peer
//! proves a wallet ([`admission`]), the two transports a session runs over ([`link`]:
//! WebRTC, or the WebSocket fallback), the session that serves one proved peer
//! ([`session`]: hello, leases, results, receipts), and the STUN and TURN servers
//! volunteers are told to use ([`ice_servers`]). The HTTP side is `routes::rtc`; the
//! peer connection itself is `starling-webrtc-native`'s.

pub mod admission;
pub mod ice_servers;
pub mod link;
pub mod session;

pub use admission::{
    reachable_from, screen_offer, OfferError, PendingPeers, PendingSlot, MAX_OFFER_BODY_BYTES,
    MAX_OFFER_CANDIDATES, MAX_OFFER_SDP_BYTES, MAX_PENDING_PEERS, MAX_PENDING_PER_ADDRESS,
};
