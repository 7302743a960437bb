//! `POST /api/v1/sites`: a site owner registers the wallet the site's share is paid to.

use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SiteRegistration {
    /// The site's origin, as browsers spell it: `https://example.com` (no path).
    pub origin: String,
    /// The wallet paid the site's share (st1…); it must also appear in
    /// `{origin}/.well-known/starling-site`.
    pub wallet: String,
    /// The wallet's ed25519 signature (128 hex characters) over the origin and the wallet
    /// (`WalletKey::sign_site`).
    pub signature: String,
}

/// A registered site: the answer to `POST /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Site {
    /// The origin, as the relay normalised it.
    pub origin: String,
    /// The wallet paid the site's share.
    pub wallet: String,
    /// When it was registered, Unix ms.
    pub registered_ms: i64,
}
