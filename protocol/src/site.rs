//! Embedding sites: the origin a site is served from, in the one spelling browsers use
//! (`https://example.com`, `http://127.0.0.1:8080`), and what a volunteer's hello claims
//! about the site it came through.
//!
//! A site owner registers `(origin, wallet)` with the relay, signed by the wallet's key
//! ([`crate::WalletKey::sign_site`]) and proved by a file the origin serves. A hello then
//! names both; the relay pays a site share only when the pair is registered, so a
//! volunteer that names a wallet of its own as the "site" earns nothing by it.

use crate::wallet::WalletAddress;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest origin accepted, in bytes (a DNS name is at most 253, plus scheme and port).
pub const MAX_ORIGIN_BYTES: usize = 300;

/// The site a volunteer came through, as its hello claims it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteClaim {
    /// The site's wallet, paid the site's share when the claim checks out.
    pub wallet: WalletAddress,
    /// The embedding page's origin as the browser reported it to the widget
    /// (`location.ancestorOrigins`, or the origin of `document.referrer`). Unchecked text
    /// from the peer: the relay parses it with [`SiteOrigin::from_str`].
    pub origin: String,
}

/// A web origin in canonical form: `https://` or `http://`, a lower-case host, and a port
/// only where it is not the scheme's default. No path, query, fragment or user info.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteOrigin {
    text: String,
    https: bool,
    host_end: usize,
    port: u16,
}

/// Why an origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Not `scheme://host[:port]` with an http or https scheme.
    #[error(
        "an origin is https://HOST or https://HOST:PORT, with no path (http:// for local tests)"
    )]
    Format,
    /// Longer than [`MAX_ORIGIN_BYTES`].
    #[error("an origin is at most {MAX_ORIGIN_BYTES} bytes")]
    TooLong,
}

impl SiteOrigin {
    /// Whether the scheme is https.
    pub fn is_https(&self) -> bool {
        self.https
    }

    /// The host: a DNS name, an IPv4 address, or an IPv6 address in brackets.
    pub fn host(&self) -> &str {
        let start = if self.https { 8 } else { 7 };
        &self.text[start..self.host_end]
    }

    /// The port, the scheme's default when none is written.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for SiteOrigin {
    type Err = OriginError;

    fn from_str(raw: &str) -> Result<Self, OriginError> {
        if raw.len() > MAX_ORIGIN_BYTES {
            return Err(OriginError::TooLong);
        }
        let lower = raw.to_ascii_lowercase();
        // A trailing slash is what `new URL(origin).href` adds; nothing else may follow.
        let lower = lower.strip_suffix('/').unwrap_or(&lower);
        let (https, rest) = if let Some(rest) = lower.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = lower.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(OriginError::Format);
        };
        let default_port = if https { 443 } else { 80 };
        // The host ends at the port's colon, after any IPv6 brackets.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let close = v6.find(']').ok_or(OriginError::Format)?;
            let inner = &v6[..close];
            if inner.is_empty()
                || !inner
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(OriginError::Format);
            }
            (&rest[..close + 2], &v6[close + 1..])
        } else {
            let colon = rest.find(':').unwrap_or(rest.len());
            let host = &rest[..colon];
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            };
            if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
                return Err(OriginError::Format);
            }
            (host, &rest[colon..])
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => default_port,
            None => return Err(OriginError::Format),
            Some(digits) => {
                if digits.is_empty()
                    || digits.len() > 5
                    || !digits.chars().all(|c| c.is_ascii_digit())
                {
                    return Err(OriginError::Format);
                }
                digits
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or(OriginError::Format)?
            }
        };
        let scheme = if https { "https://" } else { "http://" };
        let text = if port == default_port {
            format!("{scheme}{host}")
        } else {
            format!("{scheme}{host}:{port}")
        };
        Ok(Self {
            host_end: scheme.len() + host.len(),
            text,
            https,
            port,
        })
    }
}

impl TryFrom<String> for SiteOrigin {
    type Error = OriginError;
    fn try_from(s: String) -> Result<Self, OriginError> {
        s.parse()
    }
}

impl From<SiteOrigin> for String {
    fn from(o: SiteOrigin) -> String {
        o.text
    }
}

impl fmt::Display for SiteOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_take_the_spelling_browsers_use() {
        for (raw, canonical) in [
            ("https://Example.COM", "https://example.com"),
            ("https://example.com/", "https://example.com"),
            ("https://example.com:443", "https://example.com"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://localhost:80", "http://localhost"),
            ("https://[::1]:8443", "https://[::1]:8443"),
        ] {
            let origin: SiteOrigin = raw.parse().expect(raw);
            assert_eq!(origin.as_str(), canonical);
        }
        let o: SiteOrigin = "https://[::1]:8443".parse().expect("v6");
        assert_eq!((o.host(), o.port(), o.is_https()), ("[::1]", 8443, true));
        let o: SiteOrigin = "http://blog.example".parse().expect("name");
        assert_eq!(
            (o.host(), o.port(), o.is_https()),
            ("blog.example", 80, false)
        );
    }

    #[test]
    fn anything_but_an_origin_is_refused() {
        for raw in [
            "",
            "example.com",
            "ftp://example.com",
            "https://",
            "https://example.com/path",
            "https://example.com?q",
            "https://user@example.com",
            "https://example.com:0",
            "https://example.com:99999",
            "https://exa mple.com",
            "https://-bad.example",
            "https://a..b",
            "https://[zz]",
            "null",
        ] {
            assert!(raw.parse::<SiteOrigin>().is_err(), "{raw:?} was accepted");
        }
        assert_eq!(
            format!("https://{}.com", "a".repeat(400)).parse::<SiteOrigin>(),
            Err(OriginError::TooLong)
        );
    }
}
