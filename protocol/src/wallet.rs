//! Wallets: a volunteer's identity is an ed25519 key pair. Its public half, written as a
//! checksummed address, is where credit goes; its secret half signs each connection a
//! volunteer opens ([`crate::ChannelBinding`]), so credit and trust follow the key, not
//! the connection it arrived on.

use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::channel::{Binding, ChannelBinding};
use crate::site::SiteOrigin;

/// Every address starts with this, so a pasted string is recognisably a Starling wallet.
pub const ADDRESS_PREFIX: &str = "st1";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const CHECKSUM_BYTES: usize = 4;
/// Characters after the prefix: 36 bytes (key and checksum) in base32.
const BODY_CHARS: usize = ((32 + CHECKSUM_BYTES) * 8).div_ceil(5);
/// Domain separation for credit transfers a wallet signs. v2 added the expiry: a v1
/// signature (which never expires) must never verify as a v2 message.
const TRANSFER_DOMAIN: &[u8] = b"starling/transfer/v2\0";
/// How far ahead a transfer's expiry may lie. A signed transfer is a bearer instrument
/// until it runs or expires, so a relay refuses one that would stay valid longer.
pub const MAX_TRANSFER_VALIDITY_MS: u64 = 24 * 60 * 60 * 1000;
/// Domain separation for the relay's signatures on its ledger entries.
const LEDGER_DOMAIN: &[u8] = b"starling/ledger-entry/v1\0";
/// Domain separation for a site owner's registration of an origin with a wallet.
const SITE_DOMAIN: &[u8] = b"starling/site/v1\0";

/// Why an address, key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// The text is not an address at all.
    #[error("a wallet address starts with `{ADDRESS_PREFIX}` and has {BODY_CHARS} base32 characters after it")]
    Format,
    /// A typo: the checksum does not match.
    #[error("the wallet address's checksum does not match (a typo?)")]
    Checksum,
    /// The bytes are not a valid ed25519 public key.
    #[error("the wallet address is not a valid ed25519 public key")]
    Key,
    /// A secret key file or backup that is not 32 bytes of hex.
    #[error("a wallet secret key is 64 hex characters")]
    Secret,
    /// The signature does not verify against the address.
    #[error("the signature does not match the wallet")]
    Signature,
}

/// A wallet's public address: an ed25519 public key, shown as `st1` + base32 of the key
/// and a 4-byte checksum.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalletAddress([u8; 32]);

impl WalletAddress {
    /// The address of a raw public key (whether it is a valid key shows when a signature
    /// is checked against it, as for a parsed address).
    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// The raw public key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps raw public key bytes, checking that they are a point on the curve.
    pub fn from_key_bytes(bytes: [u8; 32]) -> Result<Self, WalletError> {
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| WalletError::Key)?;
        Ok(Self(bytes))
    }

    fn checksum(key: &[u8; 32]) -> [u8; CHECKSUM_BYTES] {
        let digest = Sha256::new()
            .chain_update(b"starling/address\0")
            .chain_update(key)
            .finalize();
        let mut sum = [0u8; CHECKSUM_BYTES];
        sum.copy_from_slice(&digest[..CHECKSUM_BYTES]);
        sum
    }

    /// Checks `signature` over `message` (already domain-separated by the caller).
    fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), WalletError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| WalletError::Key)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        // Strict verification refuses malleable and small-order encodings, so a message
        // has exactly one valid signature per key.
        key.verify_strict(message, &signature)
            .map_err(|_| WalletError::Signature)
    }

    /// Checks this wallet's claim to the connection `binding` names (the proof in a
    /// volunteer's hello, [`WalletKey::sign_channel`]).
    pub fn verify_channel(
        &self,
        binding: &ChannelBinding,
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verify(&binding.message(), signature)
    }

    /// Checks this wallet's claim to the connection `binding` names, of either kind (the
    /// proof in a volunteer's hello, [`WalletKey::sign_binding`]).
    pub fn verify_binding(
        &self,
        binding: &Binding,
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verify(&binding.message(), signature)
    }

    /// Checks this wallet's signature on a transfer of `amount_micro` micro-credits to
    /// `to`, numbered `nonce`, valid until `expires_ms` (Unix milliseconds), on the relay
    /// whose ledger key is `relay`. Whether it has expired is the caller's to check.
    pub fn verify_transfer(
        &self,
        relay: &WalletAddress,
        to: &WalletAddress,
        amount_micro: u64,
        nonce: u64,
        expires_ms: u64,
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verify(
            &transfer_message(relay, self, to, amount_micro, nonce, expires_ms),
            signature,
        )
    }

    /// Checks a relay's signature on the hash of one of its ledger entries.
    pub fn verify_ledger_entry(
        &self,
        entry_hash: &[u8; 32],
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verify(&ledger_message(entry_hash), signature)
    }

    /// Checks this wallet's signature registering it as the wallet of the site served
    /// from `origin` ([`WalletKey::sign_site`]).
    pub fn verify_site(
        &self,
        origin: &SiteOrigin,
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verify(&site_message(self, origin), signature)
    }
}

impl fmt::Display for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // On the stack: the relay writes addresses into SQL several times per unit.
        let mut bytes = [0u8; 32 + CHECKSUM_BYTES];
        bytes[..32].copy_from_slice(&self.0);
        bytes[32..].copy_from_slice(&Self::checksum(&self.0));
        let mut text = [0u8; ADDRESS_PREFIX.len() + BODY_CHARS];
        text[..ADDRESS_PREFIX.len()].copy_from_slice(ADDRESS_PREFIX.as_bytes());
        base32_into(&bytes, &mut text[ADDRESS_PREFIX.len()..]);
        // The prefix and the alphabet are ASCII.
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for WalletAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletAddress({self})")
    }
}

impl FromStr for WalletAddress {
    type Err = WalletError;
    fn from_str(s: &str) -> Result<Self, WalletError> {
        let body = s
            .trim()
            .strip_prefix(ADDRESS_PREFIX)
            .filter(|body| body.len() == BODY_CHARS)
            .ok_or(WalletError::Format)?;
        let bytes = unbase32(&body.to_ascii_lowercase()).ok_or(WalletError::Format)?;
        let (key, sum) = bytes.split_at(32);
        let key: [u8; 32] = key.try_into().map_err(|_| WalletError::Format)?;
        if sum != Self::checksum(&key) {
            return Err(WalletError::Checksum);
        }
        Self::from_key_bytes(key)
    }
}

impl Serialize for WalletAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WalletAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                v.try_into()
                    .map(Signature)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut bytes = [0u8; 64];
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(bytes))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

/// A wallet's secret key. It never leaves the volunteer's device except in a backup the
/// person makes.
#[derive(Clone)]
pub struct WalletKey(ed25519_dalek::SigningKey);

impl WalletKey {
    /// The key for 32 secret bytes (from a CSPRNG, or a backup).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The secret as 64 hex characters, for backups and key files.
    pub fn to_hex(&self) -> String {
        hex(&self.0.to_bytes())
    }

    /// Reads a backup or key file written by [`Self::to_hex`] (surrounding whitespace is
    /// ignored).
    pub fn from_hex(text: &str) -> Result<Self, WalletError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(WalletError::Secret);
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or(WalletError::Secret)?, 16)
                .map_err(|_| WalletError::Secret)?;
        }
        Ok(Self::from_seed(seed))
    }

    /// This key's public address.
    pub fn address(&self) -> WalletAddress {
        WalletAddress(self.0.verifying_key().to_bytes())
    }

    /// Claims the connection `binding` names for this wallet: the proof a volunteer's
    /// hello carries.
    pub fn sign_channel(&self, binding: &ChannelBinding) -> Signature {
        Signature(self.0.sign(&binding.message()).to_bytes())
    }

    /// Claims the connection `binding` names, WebRTC or WebSocket, for this wallet.
    pub fn sign_binding(&self, binding: &Binding) -> Signature {
        Signature(self.0.sign(&binding.message()).to_bytes())
    }

    /// Signs a transfer of `amount_micro` micro-credits from this wallet to `to`. The
    /// `nonce` must be new for this wallet (the relay refuses a replay), `relay` (the
    /// relay's ledger key) keeps the signature from being replayed on another relay, and
    /// `expires_ms` (Unix milliseconds, at most [`MAX_TRANSFER_VALIDITY_MS`] ahead) is
    /// when the relay stops accepting it, so a transfer that could not run (the wallet
    /// was short) cannot be run long after, when it holds more.
    pub fn sign_transfer(
        &self,
        relay: &WalletAddress,
        to: &WalletAddress,
        amount_micro: u64,
        nonce: u64,
        expires_ms: u64,
    ) -> Signature {
        let message = transfer_message(relay, &self.address(), to, amount_micro, nonce, expires_ms);
        Signature(self.0.sign(&message).to_bytes())
    }

    /// Signs the hash of a ledger entry (the relay's key does this for every entry).
    pub fn sign_ledger_entry(&self, entry_hash: &[u8; 32]) -> Signature {
        Signature(self.0.sign(&ledger_message(entry_hash)).to_bytes())
    }

    /// Registers this wallet as the wallet of the site served from `origin`: what a site
    /// owner sends the relay (`POST /api/v1/sites`) with the origin and the address.
    pub fn sign_site(&self, origin: &SiteOrigin) -> Signature {
        Signature(
            self.0
                .sign(&site_message(&self.address(), origin))
                .to_bytes(),
        )
    }
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletKey({}, secret hidden)", self.address())
    }
}

/// What a transfer signature covers: every field of the transfer, in fixed widths, so no
/// two transfers share a message.
fn transfer_message(
    relay: &WalletAddress,
    from: &WalletAddress,
    to: &WalletAddress,
    amount_micro: u64,
    nonce: u64,
    expires_ms: u64,
) -> Vec<u8> {
    let mut message = TRANSFER_DOMAIN.to_vec();
    message.extend_from_slice(&relay.0);
    message.extend_from_slice(&from.0);
    message.extend_from_slice(&to.0);
    message.extend_from_slice(&amount_micro.to_be_bytes());
    message.extend_from_slice(&nonce.to_be_bytes());
    message.extend_from_slice(&expires_ms.to_be_bytes());
    message
}

/// What a ledger signature covers: the entry's hash, under its own domain so it can never
/// pass for a channel or transfer signature.
fn ledger_message(entry_hash: &[u8; 32]) -> Vec<u8> {
    let mut message = LEDGER_DOMAIN.to_vec();
    message.extend_from_slice(entry_hash);
    message
}

/// What a site registration signs: the wallet and the origin's canonical text, under a
/// domain of its own. The origin is last and the wallet fixed-width, so no two
/// registrations share a message.
fn site_message(wallet: &WalletAddress, origin: &SiteOrigin) -> Vec<u8> {
    let mut message = SITE_DOMAIN.to_vec();
    message.extend_from_slice(&wallet.0);
    message.extend_from_slice(origin.as_str().as_bytes());
    message
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
fn base32(bytes: &[u8]) -> String {
    let mut out = vec![0u8; (bytes.len() * 8).div_ceil(5)];
    base32_into(bytes, &mut out);
    out.into_iter().map(char::from).collect()
}

/// Writes `bytes` in base32 into `out`, which holds exactly `ceil(8 len / 5)` characters.
fn base32_into(bytes: &[u8], out: &mut [u8]) {
    let mut chars = out.iter_mut();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            if let Some(c) = chars.next() {
                *c = ALPHABET[((buffer >> bits) & 31) as usize];
            }
        }
    }
    if bits > 0 {
        if let Some(c) = chars.next() {
            *c = ALPHABET[((buffer << (5 - bits)) & 31) as usize];
        }
    }
}

fn unbase32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    // Leftover bits must be zero padding, so each byte string has exactly one spelling.
    (buffer & ((1 << bits) - 1) == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_address_is_spelled_as_it_always_was() {
        // Addresses are stored in databases and ledgers and shown to people: the
        // spelling must never change (these were printed by the implementation before the
        // allocation-free one).
        let spell = |seed| WalletKey::from_seed(seed).address().to_string();
        assert_eq!(
            spell([1; 32]),
            "st1rkeohxlubhyzl7ks3mwtzos5olfgocn7dwkbeg7toseadnapn5ognb4y3e"
        );
        assert_eq!(
            spell([7; 32]),
            "st15jfgyy7ctrjavpxvkb5rglwf7gkuo5vox27hxescd3vgsfcg2iwgirxb34"
        );
    }

    #[test]
    fn an_address_round_trips_and_catches_typos() {
        let key = WalletKey::from_seed([7; 32]);
        let address = key.address();
        let text = address.to_string();
        assert!(text.starts_with("st1"), "{text}");
        assert_eq!(text.len(), 3 + BODY_CHARS);
        assert_eq!(text.parse::<WalletAddress>(), Ok(address));
        assert_eq!(
            text.to_uppercase().replace("ST1", "st1").parse(),
            Ok(address)
        );
        // Change one character anywhere in the body: the checksum (or the padding, or the
        // curve check) refuses it.
        for i in 3..text.len() {
            let mut typo = text.clone().into_bytes();
            typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(typo).expect("ascii");
            assert!(
                typo.parse::<WalletAddress>().is_err(),
                "typo at {i} accepted"
            );
        }
        assert_eq!("st1".parse::<WalletAddress>(), Err(WalletError::Format));
        assert_eq!(
            text.replacen("st1", "xx1", 1).parse::<WalletAddress>(),
            Err(WalletError::Format)
        );
    }

    #[test]
    fn a_key_backup_restores_the_same_wallet() {
        let key = WalletKey::from_seed([9; 32]);
        let restored = WalletKey::from_hex(&format!(" {}\n", key.to_hex())).expect("valid");
        assert_eq!(restored.address(), key.address());
        assert_eq!(WalletKey::from_hex("zz").err(), Some(WalletError::Secret));
        assert_eq!(
            WalletKey::from_hex(&"g".repeat(64)).err(),
            Some(WalletError::Secret)
        );
    }

    #[test]
    fn a_transfer_signature_binds_every_field() {
        let key = WalletKey::from_seed([3; 32]);
        let relay = WalletKey::from_seed([4; 32]).address();
        let other_relay = WalletKey::from_seed([5; 32]).address();
        let to = WalletKey::from_seed([6; 32]).address();
        let from = key.address();
        let expires = 1_800_000_000_000;
        let sig = key.sign_transfer(&relay, &to, 1_500_000, 7, expires);
        assert_eq!(
            from.verify_transfer(&relay, &to, 1_500_000, 7, expires, &sig),
            Ok(())
        );
        for (what, result) in [
            (
                "amount",
                from.verify_transfer(&relay, &to, 1_500_001, 7, expires, &sig),
            ),
            (
                "nonce",
                from.verify_transfer(&relay, &to, 1_500_000, 8, expires, &sig),
            ),
            (
                "expiry",
                from.verify_transfer(&relay, &to, 1_500_000, 7, expires + 1, &sig),
            ),
            (
                "recipient",
                from.verify_transfer(&relay, &from, 1_500_000, 7, expires, &sig),
            ),
            (
                "relay",
                from.verify_transfer(&other_relay, &to, 1_500_000, 7, expires, &sig),
            ),
            (
                "sender",
                to.verify_transfer(&relay, &to, 1_500_000, 7, expires, &sig),
            ),
        ] {
            assert_eq!(result, Err(WalletError::Signature), "{what} changed");
        }
    }

    #[test]
    fn a_transfer_signed_before_expiries_existed_never_verifies() {
        // A v1 transfer (no expiry) was valid forever; none may pass for a v2 one, whatever
        // expiry a replayer names.
        let key = WalletKey::from_seed([3; 32]);
        let relay = WalletKey::from_seed([4; 32]).address();
        let to = WalletKey::from_seed([6; 32]).address();
        let mut v1 = b"starling/transfer/v1\0".to_vec();
        for part in [relay.as_bytes(), key.address().as_bytes(), to.as_bytes()] {
            v1.extend_from_slice(part);
        }
        v1.extend_from_slice(&1_500_000u64.to_be_bytes());
        v1.extend_from_slice(&7u64.to_be_bytes());
        let old = Signature(key.0.sign(&v1).to_bytes());
        for expires in [0, 7, u64::MAX, 1_800_000_000_000] {
            assert_eq!(
                key.address()
                    .verify_transfer(&relay, &to, 1_500_000, 7, expires, &old),
                Err(WalletError::Signature),
                "expiry {expires}"
            );
        }
    }

    #[test]
    fn a_site_signature_binds_the_origin_and_the_wallet() {
        let key = WalletKey::from_seed([7; 32]);
        let origin: SiteOrigin = "https://blog.example".parse().expect("origin");
        let signature = key.sign_site(&origin);
        assert_eq!(key.address().verify_site(&origin, &signature), Ok(()));
        // Another origin, another wallet, or another kind of signature never passes.
        let other: SiteOrigin = "https://blog.example:8443".parse().expect("origin");
        assert_eq!(
            key.address().verify_site(&other, &signature),
            Err(WalletError::Signature)
        );
        let stranger = WalletKey::from_seed([8; 32]).address();
        assert_eq!(
            stranger.verify_site(&origin, &signature),
            Err(WalletError::Signature)
        );
        let ledger = key.sign_ledger_entry(&[0; 32]);
        assert_eq!(
            key.address().verify_site(&origin, &ledger),
            Err(WalletError::Signature)
        );
    }

    #[test]
    fn a_ledger_signature_is_not_a_transfer_signature() {
        let relay = WalletKey::from_seed([8; 32]);
        let hash = [0x5a; 32];
        let sig = relay.sign_ledger_entry(&hash);
        assert_eq!(relay.address().verify_ledger_entry(&hash, &sig), Ok(()));
        assert_eq!(
            relay.address().verify_ledger_entry(&[0x5b; 32], &sig),
            Err(WalletError::Signature)
        );
        let transfer = relay.sign_transfer(&relay.address(), &relay.address(), 1, 1, 1);
        assert_eq!(
            relay.address().verify_ledger_entry(&hash, &transfer),
            Err(WalletError::Signature)
        );
    }

    proptest! {
        #[test]
        fn base32_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unbase32(&base32(&bytes)), Some(bytes));
        }

        #[test]
        fn signatures_survive_the_wire(seed in any::<[u8; 32]>(), amount: u64) {
            let key = WalletKey::from_seed(seed);
            let to = WalletKey::from_seed([1; 32]).address();
            let sig = key.sign_transfer(&to, &to, amount, 5, 6);
            let wire = postcard::to_allocvec(&sig).expect("encodes");
            let back: Signature = postcard::from_bytes(&wire).expect("decodes");
            prop_assert_eq!(key.address().verify_transfer(&to, &to, amount, 5, 6, &back), Ok(()));
            let json = serde_json::to_string(&key.address()).expect("encodes");
            let address: WalletAddress = serde_json::from_str(&json).expect("decodes");
            prop_assert_eq!(address, key.address());
        }
    }
}
