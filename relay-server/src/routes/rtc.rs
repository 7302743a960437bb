//! `POST /api/v1/rtc/offer`: WebRTC signaling without trickle ICE. The volunteer posts
//! a complete offer, gets a complete answer, and the data channel opens on its own.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::openapi::ProblemDoc;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use starling_protocol::channel::End;
use starling_protocol::Fingerprint;

/// Offer or answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Sdp {
    /// Session description text.
    pub sdp: String,
}

/// Answers a volunteer's offer and serves the peer once its channel opens.
#[utoipa::path(post, path = "/api/v1/rtc/offer", tag = "network", request_body = Sdp, responses(
    (status = 200, description = "The relay's answer", body = Sdp),
    (status = 400, description = "Body is not `{sdp}`", body = ProblemDoc, content_type = "application/problem+json"),
    (status = 422, description = "The offer cannot be answered", body = ProblemDoc, content_type = "application/problem+json"),
))]
pub async fn offer(
    State(state): State<AppState>,
    body: Result<Json<Sdp>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Sdp>, ApiError> {
    // A relay on its way down would only close the connection again.
    if state.shutdown.stopping() {
        return Err(ApiError::Unavailable("the relay is shutting down".into()));
    }
    let Json(offer) = body.map_err(|e| ApiError::Malformed {
        detail: e.body_text(),
    })?;
    // The volunteer's hello signs this fingerprint: an offer that names no single
    // certificate could never be bound to a wallet, so it is not answered at all.
    Fingerprint::from_sdp(&offer.sdp, End::Volunteer).map_err(|e| ApiError::Invalid {
        detail: format!("cannot answer this offer: {e}"),
        field: Some("sdp".into()),
    })?;
    let (answer, pending) = starling_peer::answer(&state.rtc, &offer.sdp)
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
            Ok(link) => crate::scheduler::session::serve(scheduler, link, shutdown.wait()).await,
            Err(e) => tracing::warn!("peer never opened its channel: {e}"),
        }
    });
    Ok(Json(Sdp { sdp: answer }))
}
