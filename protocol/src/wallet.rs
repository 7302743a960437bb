//! Wallets: a volunteer's identity is an ed25519 key pair. Its public half, written as a
//! checksummed address, is where credit goes; its secret half signs every result, so
//! credit and trust follow the key, not the connection it arrived on.

use ed25519_dalek::Signer;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

use crate::ids::LeaseId;

/// Every address starts with this, so a pasted string is recognisably a Starling wallet.
pub const ADDRESS_PREFIX: &str = "st1";
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const CHECKSUM_BYTES: usize = 4;
/// Characters after the prefix: 36 bytes (key and checksum) in base32.
const BODY_CHARS: usize = ((32 + CHECKSUM_BYTES) * 8).div_ceil(5);
/// Domain separation: a result signature can never be replayed as any other signature.
const RESULT_DOMAIN: &[u8] = b"starling/result/v1\0";
/// Domain separation for credit transfers a wallet signs.
const TRANSFER_DOMAIN: &[u8] = b"starling/transfer/v1\0";
/// Domain separation for the relay's signatures on its ledger entries.
const LEDGER_DOMAIN: &[u8] = b"starling/ledger-entry/v1\0";

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
    /// The address of a raw public key (whether it is a valid key shows in
    /// [`WalletAddress::verifier`], as for a parsed address).
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

    /// The key decoded for checking signatures (see [`WalletVerifier`]).
    pub fn verifier(&self) -> Result<WalletVerifier, WalletError> {
        let key = ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| WalletError::Key)?;
        Ok(WalletVerifier {
            address: *self,
            key,
        })
    }

    /// Checks `signature` over `message` (already domain-separated by the caller).
    fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), WalletError> {
        self.verifier()?.verify(message, signature)
    }

    /// Checks a volunteer's signature over the result it returned for `lease` (one
    /// check; a session checking many keeps a [`WalletVerifier`]).
    pub fn verify_result(
        &self,
        lease: LeaseId,
        output: &[u8],
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verifier()?.verify_result(lease, output, signature)
    }

    /// Checks this wallet's signature on a transfer of `amount_micro` micro-credits to
    /// `to`, numbered `nonce`, on the relay whose ledger key is `relay`.
    pub fn verify_transfer(
        &self,
        relay: &WalletAddress,
        to: &WalletAddress,
        amount_micro: u64,
        nonce: u64,
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verify(
            &transfer_message(relay, self, to, amount_micro, nonce),
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
}

/// A wallet's public key, decoded once for checking many of its signatures: decoding
/// (decompressing the curve point) is a fifth of each check, and a volunteer's session
/// checks one signature per result.
#[derive(Clone, Copy)]
pub struct WalletVerifier {
    address: WalletAddress,
    key: ed25519_dalek::VerifyingKey,
}

impl WalletVerifier {
    /// The wallet whose key this is.
    pub fn address(&self) -> WalletAddress {
        self.address
    }

    /// Checks the wallet's signature over the result it returned for `lease`.
    pub fn verify_result(
        &self,
        lease: LeaseId,
        output: &[u8],
        signature: &Signature,
    ) -> Result<(), WalletError> {
        self.verify(&result_message(lease, output), signature)
    }

    fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), WalletError> {
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        // Strict verification refuses malleable and small-order encodings, so one result
        // has exactly one valid signature per key.
        self.key
            .verify_strict(message, &signature)
            .map_err(|_| WalletError::Signature)
    }
}

/// A result signature with what it covers, ready to be checked, alone or in a batch with
/// others ([`verify_claims`]). Building one hashes the output, which can run on the
/// caller's thread while the batch's curve arithmetic runs on another.
#[cfg(feature = "batch")]
#[derive(Clone)]
pub struct ResultClaim {
    key: ed25519_dalek::VerifyingKey,
    message: Vec<u8>,
    signature: ed25519_dalek::Signature,
}

#[cfg(feature = "batch")]
impl WalletVerifier {
    /// The claim that this wallet signed `output` as its result for `lease`.
    pub fn result_claim(
        &self,
        lease: LeaseId,
        output: &[u8],
        signature: &Signature,
    ) -> ResultClaim {
        ResultClaim {
            key: self.key,
            message: result_message(lease, output),
            signature: ed25519_dalek::Signature::from_bytes(&signature.0),
        }
    }
}

#[cfg(feature = "batch")]
impl ResultClaim {
    /// Checks this claim alone, as strictly as [`WalletVerifier::verify_result`].
    pub fn verify(&self) -> bool {
        self.key
            .verify_strict(&self.message, &self.signature)
            .is_ok()
    }
}

/// Checks result claims together: whether each one's signature holds, in order.
///
/// Many signatures checked as one equation cost less each than checked one by one (the
/// relay measured about 60% at 7–8 per batch; the saving grows with the batch). If the
/// batch fails, each claim is checked alone, so one forgery costs its batch the batch
/// check on top of the single ones, never a wrong verdict for the others.
/// A batch passes only if every signature satisfies the same cofactorless equation that
/// [`WalletVerifier::verify_result`] checks (but for a chance of 2^-128 per batch); unlike
/// it, a passing batch does not refuse the other encodings of a valid signature that its
/// own signer could make (a small-order part added to R). Result signatures are a gate,
/// not stored or compared, so those encodings gain their maker nothing.
#[cfg(feature = "batch")]
pub fn verify_claims(claims: &[ResultClaim]) -> Vec<bool> {
    if claims.len() > 1 {
        let messages: Vec<&[u8]> = claims.iter().map(|c| c.message.as_slice()).collect();
        let signatures: Vec<_> = claims.iter().map(|c| c.signature).collect();
        let keys: Vec<_> = claims.iter().map(|c| c.key).collect();
        // A small-order key passes the cofactorless equation for any message; strict
        // checks refuse it, and so must a batch.
        if !keys.iter().any(|k| k.is_weak())
            && ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        {
            return vec![true; claims.len()];
        }
    }
    claims.iter().map(ResultClaim::verify).collect()
}

impl fmt::Debug for WalletVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletVerifier({})", self.address)
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

    /// Signs the output returned for `lease`.
    pub fn sign_result(&self, lease: LeaseId, output: &[u8]) -> Signature {
        Signature(self.0.sign(&result_message(lease, output)).to_bytes())
    }

    /// Signs a transfer of `amount_micro` micro-credits from this wallet to `to`. The
    /// `nonce` must be new for this wallet (the relay refuses a replay), and `relay` (the
    /// relay's ledger key) keeps the signature from being replayed on another relay.
    pub fn sign_transfer(
        &self,
        relay: &WalletAddress,
        to: &WalletAddress,
        amount_micro: u64,
        nonce: u64,
    ) -> Signature {
        let message = transfer_message(relay, &self.address(), to, amount_micro, nonce);
        Signature(self.0.sign(&message).to_bytes())
    }

    /// Signs the hash of a ledger entry (the relay's key does this for every entry).
    pub fn sign_ledger_entry(&self, entry_hash: &[u8; 32]) -> Signature {
        Signature(self.0.sign(&ledger_message(entry_hash)).to_bytes())
    }
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WalletKey({}, secret hidden)", self.address())
    }
}

/// What a result signature covers: the lease (so it cannot be replayed onto another
/// unit) and a hash of the output.
fn result_message(lease: LeaseId, output: &[u8]) -> Vec<u8> {
    let mut message = RESULT_DOMAIN.to_vec();
    message.extend_from_slice(lease.0.as_bytes());
    message.extend_from_slice(&Sha256::digest(output));
    message
}

/// What a transfer signature covers: every field of the transfer, in fixed widths, so no
/// two transfers share a message.
fn transfer_message(
    relay: &WalletAddress,
    from: &WalletAddress,
    to: &WalletAddress,
    amount_micro: u64,
    nonce: u64,
) -> Vec<u8> {
    let mut message = TRANSFER_DOMAIN.to_vec();
    message.extend_from_slice(&relay.0);
    message.extend_from_slice(&from.0);
    message.extend_from_slice(&to.0);
    message.extend_from_slice(&amount_micro.to_be_bytes());
    message.extend_from_slice(&nonce.to_be_bytes());
    message
}

/// What a ledger signature covers: the entry's hash, under its own domain so it can never
/// pass for a result or transfer signature.
fn ledger_message(entry_hash: &[u8; 32]) -> Vec<u8> {
    let mut message = LEDGER_DOMAIN.to_vec();
    message.extend_from_slice(entry_hash);
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

    fn lease(n: u128) -> LeaseId {
        LeaseId::from_uuid(uuid::Uuid::from_u128(n))
    }

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
    fn a_result_signature_binds_key_lease_and_output() {
        let key = WalletKey::from_seed([1; 32]);
        let other = WalletKey::from_seed([2; 32]);
        let sig = key.sign_result(lease(1), b"output");
        let address = key.address();
        assert_eq!(address.verify_result(lease(1), b"output", &sig), Ok(()));
        assert_eq!(
            address.verify_result(lease(2), b"output", &sig),
            Err(WalletError::Signature),
            "replayed onto another lease"
        );
        assert_eq!(
            address.verify_result(lease(1), b"outpuT", &sig),
            Err(WalletError::Signature),
            "output changed after signing"
        );
        assert_eq!(
            other.address().verify_result(lease(1), b"output", &sig),
            Err(WalletError::Signature),
            "claimed by another wallet"
        );
        // A session's verifier, decoded once, judges every case the same way.
        let verifier = address.verifier().expect("a valid key");
        assert_eq!(verifier.address(), address);
        assert_eq!(verifier.verify_result(lease(1), b"output", &sig), Ok(()));
        assert_eq!(
            verifier.verify_result(lease(2), b"output", &sig),
            Err(WalletError::Signature)
        );
        assert_eq!(
            verifier.verify_result(lease(1), b"outpuT", &sig),
            Err(WalletError::Signature)
        );
        assert_eq!(
            other
                .address()
                .verifier()
                .expect("a valid key")
                .verify_result(lease(1), b"output", &sig),
            Err(WalletError::Signature)
        );
    }

    #[cfg(feature = "batch")]
    #[test]
    fn a_batch_of_result_claims_judges_each_as_a_single_check_would() {
        let keys: Vec<WalletKey> = (0..5).map(|i| WalletKey::from_seed([i; 32])).collect();
        let claim = |signer: &WalletKey, claimed: &WalletKey, n: u128, output: &[u8]| {
            let sig = signer.sign_result(lease(n), format!("output {n}").as_bytes());
            claimed
                .address()
                .verifier()
                .expect("a valid key")
                .result_claim(lease(n), output, &sig)
        };
        let mut claims: Vec<ResultClaim> = (0..20u128)
            .map(|n| {
                let key = &keys[n as usize % keys.len()];
                claim(key, key, n, format!("output {n}").as_bytes())
            })
            .collect();
        assert_eq!(verify_claims(&claims), vec![true; 20]);
        assert_eq!(verify_claims(&claims[..1]), vec![true]);
        assert_eq!(verify_claims(&[]), Vec::<bool>::new());

        // Among honest claims: an output changed after signing, a result signed by
        // another wallet, and a signature replayed onto another lease.
        claims[3] = claim(&keys[3], &keys[3], 3, b"changed");
        claims[7] = claim(&keys[1], &keys[2], 7, b"output 7");
        let replayed = keys[4].sign_result(lease(99), b"output 14");
        claims[14] = keys[4]
            .address()
            .verifier()
            .expect("a valid key")
            .result_claim(lease(14), b"output 14", &replayed);
        let verdicts = verify_claims(&claims);
        for (i, ok) in verdicts.iter().enumerate() {
            assert_eq!(*ok, ![3, 7, 14].contains(&i), "claim {i}");
            assert_eq!(*ok, claims[i].verify(), "claim {i} alone");
        }

        // A small-order key (the identity point) satisfies the cofactorless equation with
        // R = B and s = 1 for any message: strict checks refuse it, alone or batched.
        let weak = WalletAddress({
            let mut identity = [0u8; 32];
            identity[0] = 1;
            identity
        });
        let mut forged = [0x66u8; 64];
        forged[0] = 0x58;
        forged[32..].fill(0);
        forged[32] = 1;
        let weak_claim = weak
            .verifier()
            .expect("the identity point decodes")
            .result_claim(lease(1), b"anything", &Signature(forged));
        assert!(!weak_claim.verify());
        assert_eq!(
            verify_claims(&[claims[0].clone(), weak_claim]),
            vec![true, false]
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
        let sig = key.sign_transfer(&relay, &to, 1_500_000, 7);
        assert_eq!(
            from.verify_transfer(&relay, &to, 1_500_000, 7, &sig),
            Ok(())
        );
        for (what, result) in [
            (
                "amount",
                from.verify_transfer(&relay, &to, 1_500_001, 7, &sig),
            ),
            (
                "nonce",
                from.verify_transfer(&relay, &to, 1_500_000, 8, &sig),
            ),
            (
                "recipient",
                from.verify_transfer(&relay, &from, 1_500_000, 7, &sig),
            ),
            (
                "relay",
                from.verify_transfer(&other_relay, &to, 1_500_000, 7, &sig),
            ),
            (
                "sender",
                to.verify_transfer(&relay, &to, 1_500_000, 7, &sig),
            ),
        ] {
            assert_eq!(result, Err(WalletError::Signature), "{what} changed");
        }
    }

    #[test]
    fn a_ledger_signature_is_not_a_transfer_or_result_signature() {
        let relay = WalletKey::from_seed([8; 32]);
        let hash = [0x5a; 32];
        let sig = relay.sign_ledger_entry(&hash);
        assert_eq!(relay.address().verify_ledger_entry(&hash, &sig), Ok(()));
        assert_eq!(
            relay.address().verify_ledger_entry(&[0x5b; 32], &sig),
            Err(WalletError::Signature)
        );
        let transfer = relay.sign_transfer(&relay.address(), &relay.address(), 1, 1);
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
        fn signatures_survive_the_wire(seed in any::<[u8; 32]>(), output in proptest::collection::vec(any::<u8>(), 0..256)) {
            let key = WalletKey::from_seed(seed);
            let sig = key.sign_result(lease(5), &output);
            let wire = postcard::to_allocvec(&sig).expect("encodes");
            let back: Signature = postcard::from_bytes(&wire).expect("decodes");
            prop_assert_eq!(key.address().verify_result(lease(5), &output, &back), Ok(()));
            let json = serde_json::to_string(&key.address()).expect("encodes");
            let address: WalletAddress = serde_json::from_str(&json).expect("decodes");
            prop_assert_eq!(address, key.address());
        }
    }
}
