//! Checking a whole ledger from its entries alone: the chain, the relay's signatures, and
//! the money rules (no account but issuance below zero; every account sums to zero).

use super::{Account, Entry, MicroCredits, MoneyError, Reason, GENESIS_PREV_HASH};
use starling_protocol::WalletAddress;
use std::collections::BTreeMap;

/// What the ledger holds, once it has checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Entries checked.
    pub entries: u64,
    /// Every account that ever moved credit, with its balance in micro-credits
    /// (negative only for [`Account::Issuance`]).
    pub balances: BTreeMap<Account, i128>,
    /// Credit created ([`Reason::Issue`]).
    pub issued: MicroCredits,
    /// Credit set aside for jobs ([`Reason::Escrow`]).
    pub escrowed: MicroCredits,
    /// Credit paid to volunteers and sites ([`Reason::Pay`], [`Reason::SiteShare`]).
    pub paid: MicroCredits,
    /// Platform fees and remainders ([`Reason::PlatformFee`]).
    pub fees: MicroCredits,
    /// Escrow returned to submitters ([`Reason::Refund`]).
    pub refunded: MicroCredits,
    /// Credit moved between wallets ([`Reason::Transfer`]).
    pub transferred: MicroCredits,
}

impl Summary {
    /// The balance of one account (0 if it never moved credit).
    pub fn balance(&self, account: &Account) -> i128 {
        self.balances.get(account).copied().unwrap_or(0)
    }
}

/// Why a ledger failed its audit. Each names the first entry where the problem shows.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// An entry is missing or out of place (rows deleted, inserted or renumbered).
    #[error("sequence broken: expected entry {expected}, found entry {found} (entries were deleted, inserted or renumbered)")]
    Sequence {
        /// The seq the chain needs next.
        expected: u64,
        /// The seq found there.
        found: u64,
    },
    /// An entry does not follow the one before it (reordered or spliced in).
    #[error("chain broken at entry {seq}: its prev_hash is not the hash of entry {} (entries were reordered or replaced)", seq.saturating_sub(1))]
    BrokenLink {
        /// The entry whose link fails.
        seq: u64,
    },
    /// An entry's fields no longer give its hash (edited in place).
    #[error("entry {seq} was altered: its fields do not match its hash")]
    Altered {
        /// The altered entry.
        seq: u64,
    },
    /// An entry's signature is not the relay key's over its hash (forged or re-hashed).
    #[error("entry {seq} has a forged signature: it is not signed by the relay key {relay}")]
    BadSignature {
        /// The entry.
        seq: u64,
        /// The relay key the ledger was checked against.
        relay: WalletAddress,
    },
    /// An entry takes an account other than issuance below zero.
    #[error("entry {seq} overdraws {account}: balance {balance} micro-credits, debit {amount}")]
    Overdrawn {
        /// The entry.
        seq: u64,
        /// The account.
        account: Account,
        /// Its balance before the entry, micro-credits.
        balance: i128,
        /// What the entry debits.
        amount: MicroCredits,
    },
    /// An entry that moves nothing, or moves credit from an account to itself.
    #[error("entry {seq} is malformed: {why}")]
    Malformed {
        /// The entry.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// A stored row does not even parse as an entry.
    #[error("entry {seq} is unreadable: {why}")]
    Unreadable {
        /// The row's seq.
        seq: i64,
        /// What does not parse.
        why: String,
    },
    /// The balances do not sum to zero (cannot happen from entries alone; guards the
    /// arithmetic).
    #[error("credit is not conserved: all balances sum to {sum} micro-credits, not 0")]
    NotConserved {
        /// The sum.
        sum: i128,
    },
    /// A total does not fit in 64 bits.
    #[error("a ledger total overflows: {0}")]
    Money(#[from] MoneyError),
    /// The balances cache disagrees with the entries (edited, or entries removed from
    /// the end of the ledger).
    #[error(
        "balances cache for {account} says {cached} micro-credits but the ledger gives {ledger}"
    )]
    CacheMismatch {
        /// The account.
        account: Account,
        /// The cached balance.
        cached: i128,
        /// The balance the entries give.
        ledger: i128,
    },
    /// The ledger's store could not be read (what failed is the source).
    #[error("the ledger could not be read: {0}")]
    Unreachable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Checks a whole ledger, first entry first: seq 1, 2, 3, … without gaps, each
/// `prev_hash` the previous entry's hash, each hash recomputed from the fields, each
/// signature the `relay` key's, no account but issuance ever below zero, and all balances
/// summing to zero. The first failure found is returned.
pub fn verify_chain(entries: &[Entry], relay: &WalletAddress) -> Result<Summary, AuditError> {
    let mut verifier = ChainVerifier::new(*relay);
    for entry in entries {
        verifier.push(entry)?;
    }
    verifier.finish()
}

/// [`verify_chain`] one entry at a time, so a long ledger can be checked page by page
/// without holding it all in memory.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    relay: WalletAddress,
    summary: Summary,
    prev_hash: [u8; 32],
}

impl ChainVerifier {
    /// A verifier expecting entry 1 next, signed by `relay`.
    pub fn new(relay: WalletAddress) -> Self {
        Self {
            relay,
            summary: Summary {
                entries: 0,
                balances: BTreeMap::new(),
                issued: MicroCredits::ZERO,
                escrowed: MicroCredits::ZERO,
                paid: MicroCredits::ZERO,
                fees: MicroCredits::ZERO,
                refunded: MicroCredits::ZERO,
                transferred: MicroCredits::ZERO,
            },
            prev_hash: GENESIS_PREV_HASH,
        }
    }

    /// The seq of the last entry accepted (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.summary.entries
    }

    /// Checks the next entry and adds it to the balances and totals.
    pub fn push(&mut self, entry: &Entry) -> Result<(), AuditError> {
        let seq = entry.seq;
        let expected = self.summary.entries.saturating_add(1);
        // Checked in this order so the error says what happened: a missing row shows as
        // a gap, a moved row as a broken link, an edited row as a hash that no longer
        // matches, and a re-hashed row as a signature that is not the relay's.
        if seq != expected {
            return Err(AuditError::Sequence {
                expected,
                found: seq,
            });
        }
        if entry.prev_hash != self.prev_hash {
            return Err(AuditError::BrokenLink { seq });
        }
        if entry.compute_hash() != entry.hash {
            return Err(AuditError::Altered { seq });
        }
        if self
            .relay
            .verify_ledger_entry(&entry.hash, &entry.signature)
            .is_err()
        {
            return Err(AuditError::BadSignature {
                seq,
                relay: self.relay,
            });
        }
        if entry.amount.is_zero() || entry.debit == entry.credit {
            return Err(AuditError::Malformed {
                seq,
                why: "it moves nothing".into(),
            });
        }
        let summary = &mut self.summary;
        let amount = i128::from(entry.amount.0);
        let debit = summary.balances.entry(entry.debit).or_insert(0);
        if !entry.debit.may_go_negative() && *debit < amount {
            return Err(AuditError::Overdrawn {
                seq,
                account: entry.debit,
                balance: *debit,
                amount: entry.amount,
            });
        }
        // i128 holds any sum of u64 amounts over any realistic number of entries.
        *debit -= amount;
        *summary.balances.entry(entry.credit).or_insert(0) += amount;
        let total = match entry.reason {
            Reason::Issue => &mut summary.issued,
            Reason::Escrow => &mut summary.escrowed,
            Reason::Pay | Reason::SiteShare => &mut summary.paid,
            Reason::PlatformFee => &mut summary.fees,
            Reason::Refund => &mut summary.refunded,
            Reason::Transfer => &mut summary.transferred,
        };
        *total = total.checked_add(entry.amount)?;
        summary.entries = seq;
        self.prev_hash = entry.hash;
        Ok(())
    }

    /// Checks conservation and returns the summary of every entry pushed.
    pub fn finish(self) -> Result<Summary, AuditError> {
        let sum: i128 = self.summary.balances.values().sum();
        if sum != 0 {
            return Err(AuditError::NotConserved { sum });
        }
        Ok(self.summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{AccountId, EntryFields};
    use starling_protocol::WalletKey;

    /// A chain of entries (debit, credit, amount, reason), each linked and signed.
    fn chain(key: &WalletKey, moves: &[(Account, Account, u64, Reason)]) -> Vec<Entry> {
        let mut prev = GENESIS_PREV_HASH;
        let mut out = Vec::new();
        for (i, (debit, credit, amount, reason)) in moves.iter().enumerate() {
            let entry = EntryFields {
                seq: i as u64 + 1,
                time_ms: 1000 + i as i64,
                debit,
                credit,
                amount: MicroCredits(*amount),
                reason: *reason,
                reference: "ref",
                prev_hash: &prev,
            }
            .seal(key);
            prev = entry.hash;
            out.push(entry);
        }
        out
    }

    fn sample(key: &WalletKey) -> Vec<Entry> {
        let submitter = Account::Submitter(AccountId(uuid::Uuid::from_u128(1)));
        let escrow = Account::Escrow(crate::ledger::EscrowRef::Job(
            starling_protocol::JobId::from_uuid(uuid::Uuid::from_u128(2)),
        ));
        let wallet = Account::Wallet(WalletKey::from_seed([3; 32]).address());
        chain(
            key,
            &[
                (Account::Issuance, submitter, 10, Reason::Issue),
                (submitter, escrow, 6, Reason::Escrow),
                (escrow, wallet, 3, Reason::Pay),
                (escrow, Account::Platform, 1, Reason::PlatformFee),
                (escrow, submitter, 2, Reason::Refund),
            ],
        )
    }

    #[test]
    fn a_sound_chain_sums_up() -> Result<(), AuditError> {
        let key = WalletKey::from_seed([9; 32]);
        let summary = verify_chain(&sample(&key), &key.address())?;
        assert_eq!(summary.entries, 5);
        assert_eq!(summary.issued, MicroCredits(10));
        assert_eq!(summary.escrowed, MicroCredits(6));
        assert_eq!(summary.paid, MicroCredits(3));
        assert_eq!(summary.fees, MicroCredits(1));
        assert_eq!(summary.refunded, MicroCredits(2));
        assert_eq!(summary.balance(&Account::Issuance), -10);
        assert_eq!(summary.balance(&Account::Platform), 1);
        assert!(verify_chain(&[], &key.address())?.balances.is_empty());
        Ok(())
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let key = WalletKey::from_seed([9; 32]);
        let relay = key.address();
        let good = sample(&key);

        let mut gap = good.clone();
        gap.remove(2);
        assert!(matches!(
            verify_chain(&gap, &relay),
            Err(AuditError::Sequence {
                expected: 3,
                found: 4
            })
        ));

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        (swapped[1].seq, swapped[2].seq) = (2, 3);
        assert!(matches!(
            verify_chain(&swapped, &relay),
            Err(AuditError::BrokenLink { seq: 2 })
        ));

        let mut edited = good.clone();
        edited[2].amount = MicroCredits(4);
        assert!(matches!(
            verify_chain(&edited, &relay),
            Err(AuditError::Altered { seq: 3 })
        ));

        let forger = WalletKey::from_seed([8; 32]);
        let mut forged = good.clone();
        forged[2].amount = MicroCredits(4);
        forged[2].hash = forged[2].compute_hash();
        forged[2].signature = forger.sign_ledger_entry(&forged[2].hash);
        assert!(matches!(
            verify_chain(&forged, &relay),
            Err(AuditError::BadSignature { seq: 3, .. })
        ));
        assert!(matches!(
            verify_chain(&good, &forger.address()),
            Err(AuditError::BadSignature { seq: 1, .. })
        ));
    }

    #[test]
    fn a_signed_overdraft_is_still_refused() {
        let key = WalletKey::from_seed([9; 32]);
        let wallet = Account::Wallet(WalletKey::from_seed([3; 32]).address());
        let entries = chain(
            &key,
            &[
                (Account::Issuance, wallet, 5, Reason::Issue),
                (wallet, Account::Platform, 6, Reason::Transfer),
            ],
        );
        let err = verify_chain(&entries, &key.address()).err();
        assert!(
            matches!(
                err,
                Some(AuditError::Overdrawn {
                    seq: 2,
                    balance: 5,
                    ..
                })
            ),
            "{err:?}"
        );
        let nothing = chain(&key, &[(wallet, wallet, 0, Reason::Transfer)]);
        assert!(matches!(
            verify_chain(&nothing, &key.address()),
            Err(AuditError::Malformed { seq: 1, .. })
        ));
    }
}
