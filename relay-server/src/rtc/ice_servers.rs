//! The STUN and TURN servers the relay tells volunteers to gather candidates with
//! (`GET /api/v1/rtc/ice-servers`), and the TURN credentials it mints for them.
//!
//! A volunteer behind a NAT that lets no UDP through, or a firewall that does, reaches
//! the relay's host candidate through a TURN server's relayed address. The relay itself
//! needs no TURN server: the volunteer's allocation sends to the relay's host candidate
//! (`--rtc-ip`), which must therefore be reachable from the TURN server.
//!
//! Credentials follow coturn's `use-auth-secret` scheme (the "TURN REST API" draft,
//! draft-uberti-behave-turn-rest): the relay and coturn share a secret; the relay hands
//! each volunteer the user name `<unix expiry>:<random id>` and the password
//! base64(HMAC-SHA1(secret, user name)), which coturn recomputes and refuses once the
//! expiry has passed. What the page sees is therefore worth an hour of relaying, never
//! the secret. A static user and password pair (coturn's `lt-cred-mech`) is supported
//! too, for TURN services that offer nothing else; anyone who loads the page can read it
//! and use it until the operator changes it.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use starling_api::{IceServer, IceServers};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest accepted STUN or TURN URL: a host name (at most 253 bytes), a port and a
/// transport parameter fit well within it.
const MAX_URL_BYTES: usize = 300;

/// How TURN servers are authenticated.
#[derive(Clone, Default)]
pub enum TurnCredentials {
    /// No TURN servers are advertised.
    #[default]
    None,
    /// coturn's `use-auth-secret`: a fresh credential per request, valid for `ttl`.
    Minted {
        /// Shared with coturn's `static-auth-secret`.
        secret: Vec<u8>,
        /// How long each minted credential is valid.
        ttl: Duration,
    },
    /// One long-lived pair for every volunteer (coturn's `lt-cred-mech` with a `user=`).
    Static {
        /// The TURN user name.
        username: String,
        /// Its password.
        credential: String,
    },
}

// The secret and the static password never reach a log line.
impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Minted { ttl, .. } => f
                .debug_struct("Minted")
                .field("ttl", ttl)
                .finish_non_exhaustive(),
            Self::Static { username, .. } => f
                .debug_struct("Static")
                .field("username", username)
                .finish_non_exhaustive(),
        }
    }
}

/// The ICE servers advertised to volunteers.
#[derive(Debug, Clone, Default)]
pub struct IceServersConfig {
    /// `stun:` and `stuns:` URLs.
    pub stun: Vec<String>,
    /// `turn:` and `turns:` URLs, all sharing [`IceServersConfig::credentials`].
    pub turn: Vec<String>,
    /// How the TURN servers are authenticated.
    pub credentials: TurnCredentials,
}

/// Why the ICE server options do not make a working configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IceConfigError {
    /// A URL with the wrong scheme, no host, or characters no URL has.
    #[error("`{url}` is not a {expected} URL (e.g. {example})")]
    BadUrl {
        /// The URL, cut to a bounded length.
        url: String,
        /// "STUN" or "TURN".
        expected: &'static str,
        /// A valid one.
        example: &'static str,
    },
    /// TURN servers without credentials: coturn would refuse every allocation, and a
    /// TURN server that needs none relays anyone's traffic.
    #[error("--turn needs credentials: --turn-secret (coturn's static-auth-secret) or --turn-user with --turn-credential")]
    TurnWithoutCredentials,
    /// Credentials without a TURN server to use them on.
    #[error("TURN credentials were given without a --turn URL to use them on")]
    CredentialsWithoutTurn,
    /// A minted credential valid for no time, or for more than a day.
    #[error("--turn-ttl-secs must be between 60 and 86400 seconds")]
    BadTtl,
}

/// The relay's flags for ICE servers (flattened into its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct IceServerArgs {
    /// A STUN server volunteers use to learn their public address (repeatable), e.g.
    /// `stun:stun.example.org:3478`.
    #[arg(long = "stun", value_name = "URL", value_parser = parse_stun_url)]
    pub stun: Vec<String>,
    /// A TURN server volunteers relay through when no direct path works (repeatable),
    /// e.g. `turn:turn.example.org:3478?transport=udp` or `turns:turn.example.org:443`.
    /// Needs --turn-secret or --turn-user and --turn-credential.
    #[arg(long = "turn", value_name = "URL", value_parser = parse_turn_url)]
    pub turn: Vec<String>,
    /// coturn's `static-auth-secret`: each volunteer gets its own credential, valid for
    /// --turn-ttl-secs. Prefer the environment variable: flags show in `ps`.
    #[arg(long, env = "STARLING_TURN_SECRET", hide_env_values = true, conflicts_with_all = ["turn_user", "turn_credential"])]
    pub turn_secret: Option<String>,
    /// Seconds a minted TURN credential is valid (60 to 86400).
    #[arg(long, default_value_t = 3600)]
    pub turn_ttl_secs: u64,
    /// A fixed TURN user name for every volunteer (with --turn-credential). Weaker than
    /// --turn-secret: anyone who loads the page can read the pair and relay through the
    /// TURN server until it is changed.
    #[arg(long, requires = "turn_credential")]
    pub turn_user: Option<String>,
    /// The fixed TURN user's password.
    #[arg(
        long,
        env = "STARLING_TURN_CREDENTIAL",
        hide_env_values = true,
        requires = "turn_user"
    )]
    pub turn_credential: Option<String>,
}

impl IceServerArgs {
    /// The configuration these flags describe, checked.
    pub fn into_config(self) -> Result<IceServersConfig, IceConfigError> {
        let credentials = match (self.turn_secret, self.turn_user, self.turn_credential) {
            (Some(secret), _, _) => TurnCredentials::Minted {
                secret: secret.into_bytes(),
                ttl: Duration::from_secs(self.turn_ttl_secs),
            },
            (None, Some(username), Some(credential)) => TurnCredentials::Static {
                username,
                credential,
            },
            _ => TurnCredentials::None,
        };
        let config = IceServersConfig {
            stun: self.stun,
            turn: self.turn,
            credentials,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Checks a `--stun` URL: `stun:host[:port]` or `stuns:host[:port]` (RFC 7064).
pub fn parse_stun_url(text: &str) -> Result<String, IceConfigError> {
    checked_url(
        text,
        &["stun:", "stuns:"],
        "STUN",
        "stun:stun.example.org:3478",
    )
}

/// Checks a `--turn` URL: `turn:host[:port][?transport=udp|tcp]` or `turns:...`
/// (RFC 7065).
pub fn parse_turn_url(text: &str) -> Result<String, IceConfigError> {
    checked_url(
        text,
        &["turn:", "turns:"],
        "TURN",
        "turn:turn.example.org:3478?transport=udp",
    )
}

fn checked_url(
    text: &str,
    schemes: &[&str],
    expected: &'static str,
    example: &'static str,
) -> Result<String, IceConfigError> {
    let bad = || IceConfigError::BadUrl {
        url: text.chars().take(80).collect(),
        expected,
        example,
    };
    if text.len() > MAX_URL_BYTES || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let rest = schemes
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))
        .ok_or_else(bad)?;
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    // `//` is not part of these schemes: browsers refuse `turn://host`.
    if authority.is_empty() || authority.starts_with('/') || authority.contains(['/', '@']) {
        return Err(bad());
    }
    let transport_ok = query.is_empty()
        || (expected == "TURN" && matches!(query, "transport=udp" | "transport=tcp"));
    if !transport_ok {
        return Err(bad());
    }
    Ok(text.to_owned())
}

impl IceServersConfig {
    /// Checks that the parts fit together.
    pub fn validate(&self) -> Result<(), IceConfigError> {
        match (&self.credentials, self.turn.is_empty()) {
            (TurnCredentials::None, false) => Err(IceConfigError::TurnWithoutCredentials),
            (TurnCredentials::Minted { .. } | TurnCredentials::Static { .. }, true) => {
                Err(IceConfigError::CredentialsWithoutTurn)
            }
            (TurnCredentials::Minted { ttl, .. }, false)
                if *ttl < Duration::from_secs(60) || *ttl > Duration::from_secs(86_400) =>
            {
                Err(IceConfigError::BadTtl)
            }
            _ => Ok(()),
        }
    }

    /// What one volunteer asking at `now` is told; minted credentials get a fresh random
    /// id each time, so no two volunteers share one.
    pub fn servers(&self, now: SystemTime) -> IceServers {
        let mut ice_servers = Vec::new();
        if !self.stun.is_empty() {
            ice_servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        let mut ttl_secs = None;
        if !self.turn.is_empty() {
            let (username, credential) = match &self.credentials {
                TurnCredentials::None => (None, None),
                TurnCredentials::Static {
                    username,
                    credential,
                } => (Some(username.clone()), Some(credential.clone())),
                TurnCredentials::Minted { secret, ttl } => {
                    let expiry = now
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .saturating_add(*ttl)
                        .as_secs();
                    let id = hex::encode(rand::random::<[u8; 8]>());
                    let (username, credential) = mint(secret, expiry, &id);
                    ttl_secs = Some(ttl.as_secs());
                    (Some(username), Some(credential))
                }
            };
            ice_servers.push(IceServer {
                urls: self.turn.clone(),
                username,
                credential,
            });
        }
        IceServers {
            ice_servers,
            ttl_secs,
        }
    }
}

/// A TURN credential in coturn's `use-auth-secret` scheme: the user name
/// `<expiry>:<id>` (expiry in Unix seconds) and its password,
/// base64(HMAC-SHA1(secret, user name)).
pub fn mint(secret: &[u8], expiry_unix: u64, id: &str) -> (String, String) {
    let username = format!("{expiry_unix}:{id}");
    // HMAC takes a key of any length; `new_from_slice` fails for no length.
    let mut mac =
        <Hmac<Sha1> as Mac>::new_from_slice(secret).expect("HMAC accepts keys of every length");
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_the_credential_coturn_computes() {
        // From `echo -n 1700000000:test-volunteer | openssl dgst -sha1 -hmac
        // north-sea-secret -binary | base64`: an implementation other than ours.
        let (username, credential) = mint(b"north-sea-secret", 1_700_000_000, "test-volunteer");
        assert_eq!(username, "1700000000:test-volunteer");
        assert_eq!(credential, "9MqJTtCnjFsUAG/aHQ921MJM60U=");
    }

    fn minted(ttl: Duration) -> IceServersConfig {
        IceServersConfig {
            stun: vec!["stun:stun.example.org".into()],
            turn: vec![
                "turn:turn.example.org:3478?transport=udp".into(),
                "turns:turn.example.org:5349".into(),
            ],
            credentials: TurnCredentials::Minted {
                secret: b"s3cret".to_vec(),
                ttl,
            },
        }
    }

    #[test]
    fn each_volunteer_gets_its_own_credential_expiring_after_the_ttl() {
        let config = minted(Duration::from_secs(3600));
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let first = config.servers(now);
        let second = config.servers(now);
        assert_eq!(first.ttl_secs, Some(3600));
        assert_eq!(first.ice_servers.len(), 2);
        assert_eq!(first.ice_servers[0].urls, ["stun:stun.example.org"]);
        assert_eq!(first.ice_servers[0].username, None);
        let turn = &first.ice_servers[1];
        let username = turn.username.clone().unwrap_or_default();
        let (expiry, id) = username.split_once(':').unwrap_or_default();
        assert_eq!(expiry, "1800003600");
        assert_eq!(id.len(), 16, "a random 64-bit id in hex: {username}");
        assert_eq!(
            turn.credential.as_deref(),
            Some(mint(b"s3cret", 1_800_003_600, id).1.as_str())
        );
        assert_ne!(
            first.ice_servers[1].username, second.ice_servers[1].username,
            "two asks, two credentials"
        );
    }

    #[test]
    fn the_secret_never_appears_in_what_volunteers_or_logs_see() {
        let config = minted(Duration::from_secs(600));
        let json = serde_json::to_string(&config.servers(SystemTime::now())).unwrap_or_default();
        assert!(!json.contains("s3cret"), "{json}");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("115, 51"),
            "{debug}"
        );
    }

    #[test]
    fn no_servers_means_an_empty_list() {
        let servers = IceServersConfig::default().servers(SystemTime::now());
        assert_eq!(servers, IceServers::default());
        assert_eq!(
            serde_json::to_value(&servers).unwrap_or_default(),
            serde_json::json!({"ice_servers": []})
        );
    }

    #[test]
    fn urls_are_checked_per_scheme() {
        for good in [
            "stun:stun.l.google.com:19302",
            "stuns:stun.example.org",
            "stun:[2001:db8::1]:3478",
        ] {
            assert_eq!(parse_stun_url(good).as_deref(), Ok(good));
        }
        for good in [
            "turn:127.0.0.1:3478",
            "turn:turn.example.org?transport=tcp",
            "turns:turn.example.org:443?transport=tcp",
        ] {
            assert_eq!(parse_turn_url(good).as_deref(), Ok(good));
        }
        for bad in [
            "turn:turn.example.org",
            "http://stun.example.org",
            "stun://stun.example.org",
            "stun:",
            "stun:user@host",
            "stun:host?transport=udp",
            "stun:host name",
        ] {
            assert!(parse_stun_url(bad).is_err(), "{bad}");
        }
        for bad in [
            "stun:stun.example.org",
            "turn:host?transport=sctp",
            "turn:host/path",
            "turns:",
        ] {
            assert!(parse_turn_url(bad).is_err(), "{bad}");
        }
        let long = format!("stun:{}", "a".repeat(400));
        match parse_stun_url(&long) {
            Err(IceConfigError::BadUrl { url, .. }) => assert_eq!(url.len(), 80),
            other => panic!("a long URL is refused, cut short: {other:?}"),
        }
    }

    #[test]
    fn turn_needs_credentials_and_credentials_need_turn() {
        let mut config = minted(Duration::from_secs(3600));
        assert_eq!(config.validate(), Ok(()));
        config.credentials = TurnCredentials::None;
        assert_eq!(
            config.validate(),
            Err(IceConfigError::TurnWithoutCredentials)
        );
        let config = IceServersConfig {
            stun: vec![],
            turn: vec![],
            credentials: TurnCredentials::Static {
                username: "u".into(),
                credential: "p".into(),
            },
        };
        assert_eq!(
            config.validate(),
            Err(IceConfigError::CredentialsWithoutTurn)
        );
        assert_eq!(
            minted(Duration::from_secs(5)).validate(),
            Err(IceConfigError::BadTtl)
        );
    }
}
