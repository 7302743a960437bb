//! `/api/v1/sites`: a site owner registers the wallet the site's share is paid to.

use crate::app::AppState;
use crate::error::ApiError;
use crate::routes::extract::JsonBody;
use crate::routes::wallets::parse_address;
use crate::routes::wire;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use starling_api::{Problem, Site, SiteRegistration};
use starling_protocol::{Signature, SiteOrigin};

/// `POST /api/v1/sites`: registers a site's wallet for its origin, so volunteers coming
/// through the site's widget earn it the site share. Proved twice: the signature proves
/// the wallet's key, and the relay fetches `{origin}/.well-known/starling-site` (https)
/// and requires the wallet's address in it, which proves the origin. Registering again
/// replaces the origin's wallet. 201 with the registration.
#[utoipa::path(
    post,
    path = "/api/v1/sites",
    tag = "sites",
    request_body = SiteRegistration,
    responses(
        (status = 201, description = "The registration", body = Site),
        (status = 400, description = "Body is not a site registration", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad origin, address or signature; a signature that is not the wallet's; or the origin's well-known file could not be fetched or does not name the wallet", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations are being checked at once", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SiteRegistration>,
) -> Result<(StatusCode, Json<Site>), ApiError> {
    let origin: SiteOrigin = request.origin.parse().map_err(|e| ApiError::Invalid {
        detail: format!("origin: {e}"),
        field: Some("origin".into()),
    })?;
    let wallet = parse_address(&request.wallet, "wallet")?;
    let mut signature = [0u8; 64];
    hex::decode_to_slice(&request.signature, &mut signature).map_err(|_| ApiError::Invalid {
        detail: "signature must be 128 hex characters".into(),
        field: Some("signature".into()),
    })?;
    wallet
        .verify_site(&origin, &Signature(signature))
        .map_err(|_| ApiError::Invalid {
            detail: format!("the signature is not {wallet}'s over this origin and wallet"),
            field: Some("signature".into()),
        })?;
    // The signature first: an unsigned request never makes the relay fetch anything.
    state.sites.prove(&origin, &wallet).await?;
    let registered_ms = state
        .scheduler
        .storage()
        .register_site(&origin, &wallet)
        .await?;
    tracing::info!(%origin, %wallet, "site registered");
    Ok((
        StatusCode::CREATED,
        Json(wire::site(&origin, &wallet, registered_ms)),
    ))
}
