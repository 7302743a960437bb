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
//! every `a=fingerprint` line must be well formed, and they must all name one
//! certificate. RFC 8122 lets a description name its certificate under several hash
//! algorithms (aiortc writes sha-256, sha-384 and sha-512), so lines under different
//! algorithms may differ, but two under one algorithm must agree. Whether the lines under
//! different algorithms are of one certificate cannot be seen from the text: the end
//! that receives the description checks every one of them against the certificate the
//! DTLS handshake presents ([`NamedCertificate::check`]), because a stack may verify only
//! one. The binding signs the sha-256 fingerprint, which RFC 8122 requires of every
//! description naming several, so a description with one fingerprint is bound exactly
//! as before.
//!
//! Where WebRTC cannot connect (UDP blocked, no TURN), a volunteer falls back to a
//! WebSocket to the relay, which has no certificate of its own to bind. There the relay
//! opens with a fresh random challenge ([`crate::ToVolunteer::Challenge`]) and the hello
//! signs a [`ChallengeBinding`]: that challenge and the relay's host as the volunteer
//! dialed it. A challenge lives only in the memory of the connection it was issued on,
//! so a hello captured from one connection proves nothing on any other, and a relay
//! cannot pass another relay's challenge to its own visitors: they sign its host, not
//! the other relay's. [`Binding`] names either kind.

use sha2::{Digest, Sha256, Sha384, Sha512};
use std::fmt;

/// Domain separation: a channel signature can never be replayed as any other signature.
pub(crate) const CHANNEL_DOMAIN: &[u8] = b"starling/channel/v1\0";
/// Longest digest accepted (SHA-512).
const MAX_DIGEST_BYTES: usize = 64;
/// The algorithm every description naming several fingerprints must include (RFC 8122
/// section 5), and the one the binding signs.
const BINDING_ALGORITHM: &str = "sha-256";

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

/// Why a description does not name one DTLS certificate, or the certificate presented is
/// not the one it names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// No `a=fingerprint` line: there is no DTLS certificate to bind to.
    #[error("{0} names no DTLS certificate fingerprint (a=fingerprint)")]
    Missing(End),
    /// Two `a=fingerprint` lines under one hash algorithm disagree: two certificates.
    #[error(
        "{0} names more than one DTLS certificate (two different fingerprints under one \
         hash algorithm); name one certificate, under one or more hash algorithms"
    )]
    Conflicting(End),
    /// Fingerprints under several algorithms, none of them sha-256.
    #[error(
        "{0} names its DTLS certificate under several hash algorithms but not sha-256, \
         which RFC 8122 requires alongside the others"
    )]
    NoSha256(End),
    /// An `a=fingerprint` line is not `algorithm hex:hex:...`.
    #[error("{end} has a malformed fingerprint line: {line:?}")]
    Malformed {
        /// Whose description.
        end: End,
        /// The line, cut to 120 characters.
        line: String,
    },
    /// A fingerprint under a hash algorithm this build cannot compute, so the
    /// certificate cannot be checked against it.
    #[error(
        "{end} names a {algorithm} fingerprint, which cannot be checked: use sha-256, \
         sha-384 or sha-512"
    )]
    UnsupportedAlgorithm {
        /// Whose description.
        end: End,
        /// The algorithm token, cut to 32 characters.
        algorithm: String,
    },
    /// The DTLS handshake presented a certificate other than the one the description
    /// names under `algorithm`.
    #[error(
        "the DTLS certificate presented is not the one {end} names: its {algorithm} \
         fingerprint differs"
    )]
    WrongCertificate {
        /// Whose description.
        end: End,
        /// The algorithm whose fingerprint did not match.
        algorithm: String,
    },
}

/// A DTLS certificate fingerprint as SDP writes it (`sha-256 ab:cd:...`), in lower case.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// The fingerprint the connection's binding signs for `sdp`'s certificate (see
    /// [`NamedCertificate::binding`]).
    pub fn from_sdp(sdp: &str, end: End) -> Result<Self, BindingError> {
        NamedCertificate::from_sdp(sdp, end).map(|certificate| certificate.binding().clone())
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

    /// The hash algorithm's name, e.g. `sha-256`.
    pub fn algorithm(&self) -> &str {
        self.halves().0
    }

    /// The digest as colon-separated lower-case hex bytes.
    pub fn digest(&self) -> &str {
        self.halves().1
    }

    fn halves(&self) -> (&str, &str) {
        // `parse` built it as "algorithm digest", neither half containing a space.
        self.0.split_once(' ').unwrap_or((&self.0, ""))
    }

    /// The fingerprint of the DER-encoded certificate `der` under `algorithm` (`sha-256`,
    /// `sha-384` or `sha-512`); None for an algorithm this build cannot compute.
    pub fn of_certificate(algorithm: &str, der: &[u8]) -> Option<Self> {
        let hashed: Vec<u8> = match algorithm {
            "sha-256" => Sha256::digest(der).to_vec(),
            "sha-384" => Sha384::digest(der).to_vec(),
            "sha-512" => Sha512::digest(der).to_vec(),
            _ => return None,
        };
        let hex: Vec<String> = hashed.iter().map(|b| format!("{b:02x}")).collect();
        Some(Self(format!("{algorithm} {}", hex.join(":"))))
    }
}

/// `sdp` naming `der` also under each of `algorithms` (`sha-256`, `sha-384`, `sha-512`),
/// as other WebRTC stacks write descriptions (aiortc names its certificate under all
/// three): one `a=fingerprint` line each, in upper case, inserted after the first
/// fingerprint line, or before it with `before`. None when `sdp` has no fingerprint line
/// or an algorithm cannot be computed. For tests and tools that offer as such stacks do.
pub fn with_fingerprints(
    sdp: &str,
    der: &[u8],
    algorithms: &[&str],
    before: bool,
) -> Option<String> {
    let mut lines = String::new();
    for algorithm in algorithms {
        let fingerprint = Fingerprint::of_certificate(algorithm, der)?;
        lines.push_str(&format!(
            "a=fingerprint:{algorithm} {}\r\n",
            fingerprint.digest().to_ascii_uppercase()
        ));
    }
    let start = sdp.find("a=fingerprint:")?;
    let at = if before {
        start
    } else {
        start + sdp[start..].find('\n')? + 1
    };
    Some(format!("{}{lines}{}", &sdp[..at], &sdp[at..]))
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one DTLS certificate a description names: every fingerprint it gives for it, at
/// most one per hash algorithm, sorted by algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedCertificate {
    end: End,
    fingerprints: Vec<Fingerprint>,
}

impl NamedCertificate {
    /// The certificate that `sdp`'s `a=fingerprint` lines name, at session and media
    /// level alike.
    pub fn from_sdp(sdp: &str, end: End) -> Result<Self, BindingError> {
        let mut fingerprints: Vec<Fingerprint> = Vec::new();
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
            let fingerprint = Fingerprint::parse(value).ok_or_else(malformed)?;
            match fingerprints
                .iter()
                .find(|known| known.algorithm() == fingerprint.algorithm())
            {
                Some(known) if *known != fingerprint => return Err(BindingError::Conflicting(end)),
                Some(_) => {}
                None => fingerprints.push(fingerprint),
            }
        }
        if fingerprints.is_empty() {
            return Err(BindingError::Missing(end));
        }
        if fingerprints.len() > 1
            && !fingerprints
                .iter()
                .any(|f| f.algorithm() == BINDING_ALGORITHM)
        {
            return Err(BindingError::NoSha256(end));
        }
        fingerprints.sort();
        Ok(Self { end, fingerprints })
    }

    /// The fingerprint a channel binding signs: the only one, or the sha-256 one of
    /// several. One certificate has one sha-256 fingerprint however many others a stack
    /// adds, and a description with one fingerprint is signed exactly as before.
    pub fn binding(&self) -> &Fingerprint {
        self.fingerprints
            .iter()
            .find(|f| f.algorithm() == BINDING_ALGORITHM)
            .or(self.fingerprints.first())
            .expect("from_sdp refuses a description without a fingerprint")
    }

    /// Every fingerprint named, one per algorithm, sorted.
    pub fn fingerprints(&self) -> &[Fingerprint] {
        &self.fingerprints
    }

    /// Refuses a fingerprint under an algorithm [`Self::check`] cannot compute: seen from
    /// the text, before any handshake is spent on a certificate that cannot be checked.
    pub fn ensure_checkable(&self) -> Result<(), BindingError> {
        let computable =
            |f: &&Fingerprint| Fingerprint::of_certificate(f.algorithm(), &[]).is_some();
        match self.fingerprints.iter().find(|f| !computable(f)) {
            Some(unsupported) => Err(BindingError::UnsupportedAlgorithm {
                end: self.end,
                algorithm: unsupported.algorithm().chars().take(32).collect(),
            }),
            None => Ok(()),
        }
    }

    /// Checks that `der`, the certificate the DTLS handshake presented, is the one every
    /// fingerprint names. A WebRTC stack may check only one of several (webrtc-rs checks
    /// the first, and sha-256 only), which would let a description pair one certificate's
    /// sha-256 fingerprint with another's sha-384.
    pub fn check(&self, der: &[u8]) -> Result<(), BindingError> {
        self.ensure_checkable()?;
        for fingerprint in &self.fingerprints {
            if Fingerprint::of_certificate(fingerprint.algorithm(), der).as_ref()
                != Some(fingerprint)
            {
                return Err(BindingError::WrongCertificate {
                    end: self.end,
                    algorithm: fingerprint.algorithm().to_owned(),
                });
            }
        }
        Ok(())
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

/// Bytes in a WebSocket connection's challenge: random, so never issued twice.
pub const CHALLENGE_BYTES: usize = 32;

/// What a volunteer on a WebSocket signs to claim the connection: the relay's challenge
/// for it and the relay's host (`host[:port]`, as the URL the volunteer dialed names
/// it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChallengeBinding {
    /// The relay's challenge, sent first on the connection.
    pub challenge: [u8; CHALLENGE_BYTES],
    /// The relay's host, normalized by [`ChallengeBinding::normalize_host`].
    pub relay_host: String,
}

impl ChallengeBinding {
    /// The binding of `challenge` on the relay at `relay_host` (a URL's authority, or an
    /// HTTP `Host` header).
    pub fn new(challenge: [u8; CHALLENGE_BYTES], relay_host: &str) -> Self {
        Self {
            challenge,
            relay_host: Self::normalize_host(relay_host),
        }
    }

    /// `relay_host` as both ends write it: lower case, without a default port (`:80`,
    /// `:443`), which a URL leaves out and a `Host` header may carry.
    pub fn normalize_host(relay_host: &str) -> String {
        let host = relay_host.trim().to_ascii_lowercase();
        match host
            .strip_suffix(":80")
            .or_else(|| host.strip_suffix(":443"))
        {
            Some(bare) => bare.to_owned(),
            None => host,
        }
    }

    fn message(&self) -> Vec<u8> {
        let mut message = CHALLENGE_DOMAIN.to_vec();
        message.extend_from_slice(&self.challenge);
        message.extend_from_slice(self.relay_host.as_bytes());
        message
    }
}

/// Domain separation for a WebSocket connection's proof: never valid as a DTLS one.
const CHALLENGE_DOMAIN: &[u8] = b"starling/challenge/v1\0";

/// What a hello's proof signs: the WebRTC connection's certificates, or a WebSocket
/// connection's challenge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Binding {
    /// A WebRTC data channel, bound by both ends' DTLS certificates.
    Dtls(ChannelBinding),
    /// A WebSocket, bound by the relay's challenge and host.
    Challenge(ChallengeBinding),
}

impl Binding {
    /// The bytes a wallet signs. Each kind has its own domain, so a proof for one kind
    /// is never valid for the other.
    pub(crate) fn message(&self) -> Vec<u8> {
        match self {
            Self::Dtls(channel) => channel.message(),
            Self::Challenge(challenge) => challenge.message(),
        }
    }
}

impl From<ChannelBinding> for Binding {
    fn from(channel: ChannelBinding) -> Self {
        Self::Dtls(channel)
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

    /// `der`'s fingerprint under `algorithm`, as a stack writes it (upper case).
    fn fingerprint_line(algorithm: &str, der: &[u8]) -> String {
        let fingerprint = Fingerprint::of_certificate(algorithm, der).expect("supported");
        format!(
            "a=fingerprint:{algorithm} {}\r\n",
            fingerprint.digest().to_ascii_uppercase()
        )
    }

    /// The Chromium offer with its one fingerprint line replaced by `lines`.
    fn offer_naming(lines: &str) -> String {
        let start = CHROMIUM_OFFER
            .find("a=fingerprint")
            .expect("a fingerprint line");
        let end = start + CHROMIUM_OFFER[start..].find("\r\n").expect("a line end") + 2;
        format!(
            "{}{lines}{}",
            &CHROMIUM_OFFER[..start],
            &CHROMIUM_OFFER[end..]
        )
    }

    const CERTIFICATE: &[u8] = b"the DER of the volunteer's certificate";
    const OTHER_CERTIFICATE: &[u8] = b"the DER of a middleman's certificate";

    #[test]
    fn one_certificate_under_several_algorithms_binds_its_sha256_fingerprint() {
        // As aiortc writes it: sha-256, sha-384 and sha-512 of one certificate.
        let all = ["sha-256", "sha-384", "sha-512"]
            .map(|algorithm| fingerprint_line(algorithm, CERTIFICATE))
            .concat();
        let sha256_only = fingerprint_line("sha-256", CERTIFICATE);
        let several = NamedCertificate::from_sdp(&offer_naming(&all), End::Volunteer)
            .expect("one certificate");
        assert_eq!(several.fingerprints().len(), 3);
        assert_eq!(several.check(CERTIFICATE), Ok(()));
        // The binding, and so what a wallet signs, is the one a sha-256-only offer gives.
        let single = Fingerprint::from_sdp(&offer_naming(&sha256_only), End::Volunteer);
        assert_eq!(Ok(several.binding().clone()), single);
        // In any order, and repeated at media level.
        let reordered = ["sha-512", "sha-256", "sha-384", "sha-256"]
            .map(|algorithm| fingerprint_line(algorithm, CERTIFICATE))
            .concat();
        assert_eq!(
            NamedCertificate::from_sdp(&offer_naming(&reordered), End::Volunteer),
            Ok(several)
        );
        // Several algorithms but no sha-256: nothing both ends would sign alike.
        let no_sha256 = ["sha-384", "sha-512"]
            .map(|algorithm| fingerprint_line(algorithm, CERTIFICATE))
            .concat();
        assert_eq!(
            NamedCertificate::from_sdp(&offer_naming(&no_sha256), End::Volunteer),
            Err(BindingError::NoSha256(End::Volunteer))
        );
    }

    #[test]
    fn a_second_certificate_is_refused_from_the_text_or_at_the_handshake() {
        // Two sha-256 fingerprints: two certificates, visible in the text.
        let two_sha256 = format!(
            "{}{}",
            fingerprint_line("sha-256", CERTIFICATE),
            fingerprint_line("sha-256", OTHER_CERTIFICATE)
        );
        assert_eq!(
            NamedCertificate::from_sdp(&offer_naming(&two_sha256), End::Volunteer),
            Err(BindingError::Conflicting(End::Volunteer))
        );
        // One certificate's sha-256 beside another's sha-384: only the certificate
        // presented tells, and neither is the one both fingerprints name.
        let mixed = format!(
            "{}{}",
            fingerprint_line("sha-256", CERTIFICATE),
            fingerprint_line("sha-384", OTHER_CERTIFICATE)
        );
        let named =
            NamedCertificate::from_sdp(&offer_naming(&mixed), End::Volunteer).expect("well formed");
        for presented in [CERTIFICATE, OTHER_CERTIFICATE] {
            assert!(
                matches!(
                    named.check(presented),
                    Err(BindingError::WrongCertificate { .. })
                ),
                "{:?}",
                named.check(presented)
            );
        }
        // A fingerprint no one here can compute is refused before any handshake.
        let with_sha1 = format!(
            "{}a=fingerprint:sha-1 AB:CD\r\n",
            fingerprint_line("sha-256", CERTIFICATE)
        );
        let named = NamedCertificate::from_sdp(&offer_naming(&with_sha1), End::Volunteer)
            .expect("well formed");
        let unsupported = Err(BindingError::UnsupportedAlgorithm {
            end: End::Volunteer,
            algorithm: "sha-1".into(),
        });
        assert_eq!(named.ensure_checkable(), unsupported);
        assert_eq!(named.check(CERTIFICATE), unsupported);
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

    #[test]
    fn a_challenge_proof_holds_only_for_its_challenge_and_relay() {
        let key = WalletKey::from_seed([7; 32]);
        let challenge = Binding::Challenge(ChallengeBinding::new([1; 32], "Relay.example:443"));
        let proof = key.sign_binding(&challenge);
        // The same host however the URL or the Host header writes it.
        let same = Binding::Challenge(ChallengeBinding::new([1; 32], "relay.example"));
        assert_eq!(key.address().verify_binding(&same, &proof), Ok(()));
        for other in [
            // Another connection's challenge: a replayed hello.
            ChallengeBinding::new([2; 32], "relay.example"),
            // Another relay's host: a challenge passed on by a relay in the middle.
            ChallengeBinding::new([1; 32], "evil.example"),
            ChallengeBinding::new([1; 32], "relay.example:8443"),
        ] {
            assert!(key
                .address()
                .verify_binding(&Binding::Challenge(other), &proof)
                .is_err());
        }
        // A DTLS proof is never a challenge proof, nor the other way round.
        let dtls = Binding::Dtls(binding());
        assert!(key.address().verify_binding(&dtls, &proof).is_err());
        assert_eq!(
            key.address()
                .verify_binding(&dtls, &key.sign_channel(&binding())),
            Ok(())
        );
    }
}
