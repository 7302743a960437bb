//! Binding a wallet to one WebRTC connection.
//!
//! A volunteer proves its wallet once per connection: its hello carries the wallet's
//! signature over the DTLS certificate fingerprints of both ends, as the offer and answer
//! exchanged to open the connection name them. Each end's WebRTC stack checks that the
//! other end's DTLS certificate matches the fingerprint in the description it received,
//! so every message on the channel comes from whoever holds the volunteer's certificate
//! key, and the signature ties that holder to the wallet. A relay in the middle cannot
//! reuse an honest volunteer's hello: the honest volunteer signed the middleman's
//! fingerprint, not the real relay's, and the middleman cannot present the volunteer's
//! certificate to the real relay without its private key.
//!
//! Fingerprints are read from the description texts exactly as exchanged, and strictly:
//! every `a=fingerprint` line must be well formed and they must all agree, the same rule
//! the WebRTC stacks apply, so no description can show this reader one certificate and
//! the DTLS handshake another.

use std::fmt;

/// Domain separation: a channel signature can never be replayed as any other signature.
pub(crate) const CHANNEL_DOMAIN: &[u8] = b"starling/channel/v1\0";
/// Longest digest accepted (SHA-512).
const MAX_DIGEST_BYTES: usize = 64;

/// Which end of the connection a description belongs to, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The relay, which answers.
    Relay,
    /// The volunteer, which offers.
    Volunteer,
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Relay => "the relay's answer",
            Self::Volunteer => "the volunteer's offer",
        })
    }
}

/// Why a description's certificate fingerprint could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// No `a=fingerprint` line: there is no DTLS certificate to bind to.
    #[error("{0} names no DTLS certificate fingerprint (a=fingerprint)")]
    Missing(End),
    /// Two `a=fingerprint` lines disagree.
    #[error("{0} names more than one DTLS certificate fingerprint")]
    Conflicting(End),
    /// An `a=fingerprint` line is not `algorithm hex:hex:...`.
    #[error("{end} has a malformed fingerprint line: {line:?}")]
    Malformed {
        /// Whose description.
        end: End,
        /// The line, cut to 120 characters.
        line: String,
    },
}

/// A DTLS certificate fingerprint as SDP writes it (`sha-256 ab:cd:...`), in lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint that `sdp`'s every `a=fingerprint` line names.
    pub fn from_sdp(sdp: &str, end: End) -> Result<Self, BindingError> {
        let mut found: Option<Fingerprint> = None;
        // A bare CR ends a line here too: this reader must see every line any stack
        // might, so a fingerprint hidden from it is never one a handshake checks.
        for line in sdp.split(['\r', '\n']) {
            let Some(attribute) = line.trim_start().strip_prefix("a=") else {
                continue;
            };
            let (name, value) = attribute.split_once(':').unwrap_or((attribute, ""));
            if !name.trim().eq_ignore_ascii_case("fingerprint") {
                continue;
            }
            let malformed = || BindingError::Malformed {
                end,
                line: line.chars().take(120).collect(),
            };
            let fingerprint = Self::parse(value).ok_or_else(malformed)?;
            match &found {
                Some(first) if *first != fingerprint => return Err(BindingError::Conflicting(end)),
                _ => found = Some(fingerprint),
            }
        }
        found.ok_or(BindingError::Missing(end))
    }

    /// `algorithm hex:hex:...` with one space between, a token of letters, digits and
    /// dashes, and 1 to 64 two-digit hex bytes.
    fn parse(value: &str) -> Option<Self> {
        let (algorithm, digest) = value.split_once(' ')?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let bytes: Vec<&str> = digest.split(':').collect();
        let digest_ok = (1..=MAX_DIGEST_BYTES).contains(&bytes.len())
            && bytes
                .iter()
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        (algorithm_ok && digest_ok).then(|| {
            Self(format!(
                "{} {}",
                algorithm.to_ascii_lowercase(),
                digest.to_ascii_lowercase()
            ))
        })
    }

    /// The fingerprint as written, in lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The two certificate fingerprints that identify one WebRTC connection, as both ends
/// read them from the same offer and answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelBinding {
    /// The relay's certificate, from the answer.
    pub relay: Fingerprint,
    /// The volunteer's certificate, from the offer.
    pub volunteer: Fingerprint,
}

impl ChannelBinding {
    /// Reads the binding from the offer (the volunteer's description) and the answer (the
    /// relay's), exactly as exchanged.
    pub fn from_descriptions(offer: &str, answer: &str) -> Result<Self, BindingError> {
        Ok(Self {
            relay: Fingerprint::from_sdp(answer, End::Relay)?,
            volunteer: Fingerprint::from_sdp(offer, End::Volunteer)?,
        })
    }

    /// What a wallet signs to claim this connection: both fingerprints, each ended by a
    /// zero byte (which no fingerprint contains), so no two bindings share a message.
    pub(crate) fn message(&self) -> Vec<u8> {
        let mut message = CHANNEL_DOMAIN.to_vec();
        for fingerprint in [&self.relay, &self.volunteer] {
            message.extend_from_slice(fingerprint.0.as_bytes());
            message.push(0);
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WalletKey;

    /// An offer as Chromium writes one for a single data channel (candidates trimmed).
    const CHROMIUM_OFFER: &str = "v=0\r\n\
        o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
        s=-\r\n\
        t=0 0\r\n\
        a=group:BUNDLE 0\r\n\
        a=extmap-allow-mixed\r\n\
        a=msid-semantic: WMS\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=candidate:1 1 udp 2113937151 127.0.0.1 50000 typ host generation 0\r\n\
        a=ice-ufrag:eL8Q\r\n\
        a=ice-pwd:KnIZmNzUSeTh5UGgzxGl4D4G\r\n\
        a=ice-options:trickle\r\n\
        a=fingerprint:sha-256 9F:8E:1D:63:02:43:0C:A7:E2:CE:0B:5A:FB:D6:31:E0:4C:B4:8F:4B:6F:2F:D4:B3:8C:7E:1E:0A:C1:D9:49:33\r\n\
        a=setup:actpass\r\n\
        a=mid:0\r\n\
        a=sctp-port:5000\r\n\
        a=max-message-size:262144\r\n";

    /// An answer as the `webrtc` crate writes one: the fingerprint at session level.
    const WEBRTC_RS_ANSWER: &str = "v=0\r\n\
        o=- 1234 1 IN IP4 0.0.0.0\r\n\
        s=-\r\n\
        t=0 0\r\n\
        a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
        a=group:BUNDLE 0\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
        c=IN IP4 0.0.0.0\r\n\
        a=setup:passive\r\n\
        a=mid:0\r\n\
        a=fingerprint:sha-256 AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89\r\n\
        a=sctp-port:5000\r\n";

    fn binding() -> ChannelBinding {
        ChannelBinding::from_descriptions(CHROMIUM_OFFER, WEBRTC_RS_ANSWER).expect("valid")
    }

    #[test]
    fn both_ends_fingerprints_are_read_in_lower_case() {
        let binding = binding();
        assert_eq!(
            binding.volunteer.as_str(),
            "sha-256 9f:8e:1d:63:02:43:0c:a7:e2:ce:0b:5a:fb:d6:31:e0:4c:b4:8f:4b:6f:2f:d4:b3:8c:7e:1e:0a:c1:d9:49:33"
        );
        assert!(binding.relay.as_str().starts_with("sha-256 ab:cd:ef:01"));
        // Line endings do not matter: some stacks write bare newlines.
        let bare = CHROMIUM_OFFER.replace("\r\n", "\n");
        assert_eq!(
            Fingerprint::from_sdp(&bare, End::Volunteer),
            Ok(binding.volunteer.clone())
        );
        // A second certificate after a bare CR, where a reader of LF-ended lines would
        // see only the end of another attribute's value.
        let hidden = CHROMIUM_OFFER.replace(
            "a=setup:actpass\r\n",
            "a=setup:actpass\ra=fingerprint:sha-256 00:11\r\n",
        );
        assert_eq!(
            Fingerprint::from_sdp(&hidden, End::Volunteer),
            Err(BindingError::Conflicting(End::Volunteer))
        );
    }

    #[test]
    fn descriptions_without_one_clear_fingerprint_are_refused() {
        let none = CHROMIUM_OFFER.replace("a=fingerprint", "a=x-fingerprint");
        assert_eq!(
            Fingerprint::from_sdp(&none, End::Volunteer),
            Err(BindingError::Missing(End::Volunteer))
        );
        // A second certificate, as a middleman hiding its own behind the real one's.
        let two = WEBRTC_RS_ANSWER.replacen("AB:CD:EF:01", "AB:CD:EF:02", 1);
        assert_eq!(
            Fingerprint::from_sdp(&two, End::Relay),
            Err(BindingError::Conflicting(End::Relay))
        );
        for bad in [
            "a=fingerprint:sha-256\r\n",
            "a=fingerprint:sha-256 zz:00\r\n",
            "a=fingerprint:sha-256  ab:cd\r\n",
            "a=fingerprint:sha 256 ab:cd\r\n",
            "a=fingerprint:sha-256 abc:d\r\n",
            "a=FINGERPRINT :sha-256\tab:cd\r\n",
        ] {
            let sdp = format!("{CHROMIUM_OFFER}{bad}");
            assert!(
                matches!(
                    Fingerprint::from_sdp(&sdp, End::Volunteer),
                    Err(BindingError::Malformed { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn a_channel_signature_holds_only_for_its_wallet_and_its_connection() {
        let key = WalletKey::from_seed([7; 32]);
        let other = WalletKey::from_seed([8; 32]);
        let binding = binding();
        let proof = key.sign_channel(&binding);
        assert_eq!(key.address().verify_channel(&binding, &proof), Ok(()));
        assert!(other.address().verify_channel(&binding, &proof).is_err());
        // The same wallet on another connection (a middleman's certificate either end).
        for changed in [
            ChannelBinding {
                relay: binding.volunteer.clone(),
                ..binding.clone()
            },
            ChannelBinding {
                volunteer: binding.relay.clone(),
                ..binding.clone()
            },
        ] {
            assert!(key.address().verify_channel(&changed, &proof).is_err());
        }
        // Swapping the two ends is another message too.
        let swapped = ChannelBinding {
            relay: binding.volunteer.clone(),
            volunteer: binding.relay.clone(),
        };
        assert!(key.address().verify_channel(&swapped, &proof).is_err());
    }
}
