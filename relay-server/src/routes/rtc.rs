//! `POST /api/v1/rtc/offer`: WebRTC signaling without trickle ICE. The volunteer posts
//! a complete offer, gets a complete answer, and the data channel opens on its own.
//! `GET /api/v1/ws`: the WebSocket a volunteer falls back to when WebRTC cannot connect.

use crate::app::AppState;
use crate::error::ApiError;
use crate::rtc::link::{Link, WsLink, MAX_WS_MESSAGE_BYTES};
use crate::rtc::{screen_offer, OfferError, MAX_OFFER_BODY_BYTES, MAX_OFFER_SDP_BYTES};
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use starling_api::{IceServers, Problem, Sdp};
use starling_protocol::channel::End;
use starling_protocol::NamedCertificate;
use std::net::SocketAddr;

/// Answers a volunteer's offer and serves the peer once its channel opens.
#[utoipa::path(post, path = "/api/v1/rtc/offer", tag = "network", request_body = Sdp, responses(
    (status = 200, description = "The relay's answer", body = Sdp),
    (status = 400, description = "Body is not `{sdp}`", body = Problem, content_type = "application/problem+json"),
    (status = 413, description = "The offer is over 16 KiB (the body is not read past 32 KiB)", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "The offer cannot be answered (no single certificate, a fingerprint under an algorithm other than sha-256, sha-384 or sha-512, more than 8 candidates, not SDP)", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "Too many peers answered and not yet proved, from this address (8) or in all (256)", body = Problem, content_type = "application/problem+json"),
))]
pub async fn offer(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Json<Sdp>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Sdp>, ApiError> {
    // A relay on its way down would only close the connection again.
    if state.shutdown.stopping() {
        return Err(ApiError::Unavailable("the relay is shutting down".into()));
    }
    let Json(offer) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge {
                limit: MAX_OFFER_BODY_BYTES,
            }
        } else {
            ApiError::Malformed {
                detail: e.body_text(),
            }
        }
    })?;
    // Held until the peer's hello proves a wallet, or the peer is gone.
    let address = client.map(|Extension(ConnectInfo(a))| a.ip());
    let slot = state.pending_peers.admit(address).map_err(offer_error)?;
    let sdp = screen_offer(&offer.sdp, state.rtc.bind_ip).map_err(offer_error)?;
    // The volunteer's hello signs this certificate's fingerprint, and the session checks
    // the certificate DTLS presents against every fingerprint the offer names: an offer
    // that names no single certificate, or names it under an algorithm no one here can
    // check, could never be bound to a wallet, so it is not answered at all.
    NamedCertificate::from_sdp(&sdp, End::Volunteer)
        .and_then(|certificate| certificate.ensure_checkable())
        .map_err(|e| ApiError::Invalid {
            detail: format!("cannot answer this offer: {e}"),
            field: Some("sdp".into()),
        })?;
    let (answer, pending) = starling_webrtc_native::answer(&state.rtc, &sdp)
        .await
        .map_err(|e| ApiError::Invalid {
            detail: format!("cannot answer this offer: {e}"),
            field: Some("sdp".into()),
        })?;
    let scheduler = state.scheduler.clone();
    let shutdown = state.shutdown.clone();
    state.shutdown.spawn_session(async move {
        let opened = tokio::select! {
            opened = pending.open() => opened,
            () = shutdown.wait() => return,
        };
        match opened {
            Ok(link) => {
                let link = Link::WebRtc(link);
                crate::rtc::session::serve(scheduler, link, slot, address, shutdown.wait()).await
            }
            Err(e) => tracing::info!("peer never opened its channel: {e}"),
        }
    });
    Ok(Json(Sdp { sdp: answer }))
}

/// Opens a WebSocket for a volunteer whose WebRTC connection could not open (UDP
/// blocked, no TURN). The same frames and messages as the data channel; the relay sends
/// a fresh challenge first, and the hello's proof signs it with the `Host` the
/// volunteer dialed (`ChallengeBinding`). Unproved sockets count against the same
/// pending-peer caps as offers, and have the same hello timeout and size limits.
#[utoipa::path(get, path = "/api/v1/ws", tag = "network", responses(
    (status = 101, description = "Switched to a WebSocket of binary messages: the relay's `Challenge`, then the volunteer's `Hello` and the session as on the data channel"),
    (status = 400, description = "Not a WebSocket upgrade, or no `Host` header", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "Too many peers connected and not yet proved, from this address (8) or in all (256)", body = Problem, content_type = "application/problem+json"),
))]
pub async fn websocket(
    State(state): State<AppState>,
    client: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if state.shutdown.stopping() {
        return Err(ApiError::Unavailable("the relay is shutting down".into()));
    }
    let upgrade = upgrade.map_err(|e| ApiError::Malformed {
        detail: format!("{e}: /api/v1/ws is a WebSocket (GET with Upgrade: websocket)"),
    })?;
    let relay_host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| !host.is_empty() && host.len() <= 255)
        .ok_or_else(|| ApiError::Malformed {
            detail: "a WebSocket upgrade needs a Host header (at most 255 bytes): the hello's proof signs it".into(),
        })?
        .to_owned();
    let address = client.map(|Extension(ConnectInfo(a))| a.ip());
    // Held until the peer's hello proves a wallet, or the peer is gone.
    let slot = state.pending_peers.admit(address).map_err(offer_error)?;
    let scheduler = state.scheduler.clone();
    let shutdown = state.shutdown.clone();
    let sessions = state.shutdown.clone();
    Ok(upgrade
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move {
            sessions.spawn_session(async move {
                let link = Link::WebSocket(WsLink::open(socket, &relay_host, address).await);
                crate::rtc::session::serve(scheduler, link, slot, address, shutdown.wait()).await
            });
        }))
}

fn offer_error(e: OfferError) -> ApiError {
    match e {
        OfferError::TooLarge(_) => ApiError::TooLarge {
            limit: MAX_OFFER_SDP_BYTES,
        },
        OfferError::AddressBusy | OfferError::RelayBusy => ApiError::PeersPending {
            detail: e.to_string(),
            // Pending peers open or time out within the open and hello timeouts.
            retry_after_secs: 5,
        },
        OfferError::TooManyCandidates(_) | OfferError::BareCarriageReturn => ApiError::Invalid {
            detail: format!("cannot answer this offer: {e}"),
            field: Some("sdp".into()),
        },
    }
}

/// The STUN and TURN servers to gather candidates with before making an offer, with TURN
/// credentials minted for this request.
#[utoipa::path(get, path = "/api/v1/rtc/ice-servers", tag = "network", responses(
    (status = 200, description = "The servers, in the shape of `RTCConfiguration.iceServers`; minted TURN credentials expire after `ttl_secs`", body = IceServers),
    (status = 429, description = "Too many requests from this address", body = Problem, content_type = "application/problem+json"),
))]
pub async fn ice_servers(
    State(state): State<AppState>,
) -> ([(header::HeaderName, &'static str); 1], Json<IceServers>) {
    // A minted credential is this request's alone: no cache may hand it to another.
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(state.ice_servers.servers(std::time::SystemTime::now())),
    )
}
