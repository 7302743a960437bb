//! One ledger entry and its hash: each entry commits to the one before it, and the relay
//! signs each hash, so editing, removing or reordering any entry breaks the chain.

use super::{Account, MicroCredits, Reason};
use sha2::{Digest, Sha256};
use starling_protocol::{Signature, WalletKey};

/// Domain separation: an entry hash can never collide with any other SHA-256 use.
const ENTRY_DOMAIN: &[u8] = b"starling/ledger/entry/v1\0";

/// The first entry's `prev_hash`.
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

/// One movement of credit from `debit` to `credit`, chained and signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the ledger: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// When it was appended, Unix milliseconds.
    pub time_ms: i64,
    /// The account the credit leaves.
    pub debit: Account,
    /// The account the credit reaches.
    pub credit: Account,
    /// How much moved (never zero).
    pub amount: MicroCredits,
    /// Why it moved.
    pub reason: Reason,
    /// What it moved for: a job, unit, lease id or a transfer's nonce.
    pub reference: String,
    /// The previous entry's `hash` ([`GENESIS_PREV_HASH`] for the first).
    pub prev_hash: [u8; 32],
    /// [`Entry::compute_hash`] of this entry.
    pub hash: [u8; 32],
    /// The relay key's signature over `hash`.
    pub signature: Signature,
}

/// The fields an entry is made of, before it is hashed and signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFields<'a> {
    /// See [`Entry::seq`].
    pub seq: u64,
    /// See [`Entry::time_ms`].
    pub time_ms: i64,
    /// See [`Entry::debit`].
    pub debit: &'a Account,
    /// See [`Entry::credit`].
    pub credit: &'a Account,
    /// See [`Entry::amount`].
    pub amount: MicroCredits,
    /// See [`Entry::reason`].
    pub reason: Reason,
    /// See [`Entry::reference`].
    pub reference: &'a str,
    /// See [`Entry::prev_hash`].
    pub prev_hash: &'a [u8; 32],
}

impl EntryFields<'_> {
    /// `sha256(domain ‖ each field as u32-BE length ‖ bytes)`. Integers are big-endian,
    /// accounts and reasons their stable text; the length prefixes make the encoding
    /// unambiguous, so two different entries never hash the same bytes.
    pub fn hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(ENTRY_DOMAIN);
        let mut field = |bytes: &[u8]| {
            // A reference longer than 4 GiB cannot reach here: storage caps it far below.
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            hasher.update(len.to_be_bytes());
            hasher.update(bytes);
        };
        field(&self.seq.to_be_bytes());
        field(&self.time_ms.to_be_bytes());
        field(self.debit.to_string().as_bytes());
        field(self.credit.to_string().as_bytes());
        field(&self.amount.0.to_be_bytes());
        field(self.reason.as_str().as_bytes());
        field(self.reference.as_bytes());
        field(self.prev_hash);
        hasher.finalize().into()
    }

    /// Hashes and signs these fields with the relay's key.
    pub fn seal(self, key: &WalletKey) -> Entry {
        let hash = self.hash();
        Entry {
            seq: self.seq,
            time_ms: self.time_ms,
            debit: *self.debit,
            credit: *self.credit,
            amount: self.amount,
            reason: self.reason,
            reference: self.reference.to_string(),
            prev_hash: *self.prev_hash,
            hash,
            signature: key.sign_ledger_entry(&hash),
        }
    }
}

impl Entry {
    /// The entry's fields, for hashing.
    pub fn fields(&self) -> EntryFields<'_> {
        EntryFields {
            seq: self.seq,
            time_ms: self.time_ms,
            debit: &self.debit,
            credit: &self.credit,
            amount: self.amount,
            reason: self.reason,
            reference: &self.reference,
            prev_hash: &self.prev_hash,
        }
    }

    /// The hash the entry's fields give now (equal to `hash` unless it was altered).
    pub fn compute_hash(&self) -> [u8; 32] {
        self.fields().hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &WalletKey) -> Entry {
        EntryFields {
            seq: 1,
            time_ms: 1_700_000_000_000,
            debit: &Account::Issuance,
            credit: &Account::Platform,
            amount: MicroCredits(5),
            reason: Reason::Issue,
            reference: "ab",
            prev_hash: &GENESIS_PREV_HASH,
        }
        .seal(key)
    }

    #[test]
    fn every_field_changes_the_hash() {
        let key = WalletKey::from_seed([1; 32]);
        let entry = sample(&key);
        assert_eq!(entry.compute_hash(), entry.hash);
        assert_eq!(
            key.address()
                .verify_ledger_entry(&entry.hash, &entry.signature),
            Ok(())
        );
        let edits: [fn(&mut Entry); 8] = [
            |e| e.seq += 1,
            |e| e.time_ms += 1,
            |e| e.debit = Account::Platform,
            |e| e.credit = Account::Issuance,
            |e| e.amount = MicroCredits(6),
            |e| e.reason = Reason::Pay,
            |e| e.reference = "a".into(),
            |e| e.prev_hash[31] = 1,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut changed = entry.clone();
            edit(&mut changed);
            assert_ne!(changed.compute_hash(), entry.hash, "edit {i} kept the hash");
        }
    }
}
