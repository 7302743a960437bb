//! A wallet's reliability, after BOINC's adaptive replication: a new wallet starts with a
//! high error rate, every valid result shrinks it a little, every invalid one raises it a
//! lot. Trusted wallets are spot-checked instead of replicated; wallets whose error rate
//! stays high are quarantined and get no more work.

use serde::{Deserialize, Serialize};

/// Error rate of a wallet never seen before.
pub const INITIAL_ERROR_RATE: f64 = 0.1;
/// Factor applied on each valid result: 14 in a row take a new wallet from 0.1 to 0.049.
pub const DECAY: f64 = 0.95;
/// Added on each invalid result.
pub const PENALTY: f64 = 0.1;
/// Valid results (on a kernel, with an error rate still under a new wallet's) that vet a
/// wallet: its results then anchor a quorum of newcomers. Three, so that a newcomer is
/// checked by the relay's reference or beside a vetted wallet a few times first, and a
/// wallet made to collude must do that much honest work before it can vouch for anyone.
pub const VETTED_AFTER: u32 = 3;
/// Below this error rate, with [`MIN_VALID_FOR_TRUST`] valid results, a wallet is trusted.
pub const TRUST_BELOW: f64 = 0.05;
/// Valid results a wallet needs before it can be trusted at all.
pub const MIN_VALID_FOR_TRUST: u32 = 10;
/// At or above this error rate, with [`MIN_INVALID_FOR_QUARANTINE`] invalid results, a
/// wallet is quarantined. A new wallet reaches it after 2 invalid results in a row (0.1 +
/// 0.2); a wallet wrong 30% of the time settles near 0.86, an honest one with one fluke
/// in a thousand near 0.002.
pub const QUARANTINE_AT: f64 = 0.3;
/// Invalid results before quarantine is possible: one or two flukes never quarantine.
pub const MIN_INVALID_FOR_QUARANTINE: u32 = 3;
/// The smallest share of the audit rate a trusted wallet is ever audited at, however long
/// its record: a wallet that turns to cheating is still caught.
pub const MIN_AUDIT_SHARE: f64 = 0.1;

/// What the relay believes about one wallet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reliability {
    /// Estimated probability that this wallet's next result is wrong.
    pub error_rate: f64,
    /// Results judged valid.
    pub valid: u32,
    /// Results judged invalid.
    pub invalid: u32,
}

impl Default for Reliability {
    fn default() -> Self {
        Self {
            error_rate: INITIAL_ERROR_RATE,
            valid: 0,
            invalid: 0,
        }
    }
}

impl Reliability {
    /// After a result was judged valid.
    pub fn record_valid(&mut self) {
        self.error_rate *= DECAY;
        self.valid = self.valid.saturating_add(1);
    }

    /// After a result was judged invalid.
    pub fn record_invalid(&mut self) {
        self.error_rate = (self.error_rate + PENALTY).min(1.0);
        self.invalid = self.invalid.saturating_add(1);
    }

    /// Whether the wallet's results anchor a quorum: a few valid results and an error
    /// rate below a new wallet's (one wrong result takes 13 valid ones to undo).
    pub fn vetted(&self) -> bool {
        self.valid >= VETTED_AFTER && self.error_rate < INITIAL_ERROR_RATE
    }

    /// Whether a spot check (where the kernel has one) may replace a replica.
    pub fn trusted(&self) -> bool {
        self.error_rate < TRUST_BELOW && self.valid >= MIN_VALID_FOR_TRUST
    }

    /// How likely a trusted wallet's unit is to be replicated anyway, where the kernel has
    /// no spot check: BOINC's adaptive replication, in proportion to the wallet's error
    /// rate. A wallet just trusted is audited at `audit_rate`; every valid result after
    /// that lowers it, down to [`MIN_AUDIT_SHARE`] of it; one invalid result ends the
    /// trust. Untrusted wallets are always replicated (1).
    pub fn audit_probability(&self, audit_rate: f64) -> f64 {
        if !self.trusted() {
            return 1.0;
        }
        let share = (self.error_rate / TRUST_BELOW).clamp(MIN_AUDIT_SHARE, 1.0);
        (audit_rate * share).clamp(0.0, 1.0)
    }

    /// Whether the wallet gets no more work.
    pub fn quarantined(&self) -> bool {
        self.error_rate >= QUARANTINE_AT && self.invalid >= MIN_INVALID_FOR_QUARANTINE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn audits_thin_out_with_a_long_record_but_never_stop() {
        let mut r = Reliability::default();
        assert_eq!(
            r.audit_probability(0.1),
            1.0,
            "a new wallet is always replicated"
        );
        while !r.trusted() {
            r.record_valid();
        }
        let fresh = r.audit_probability(0.1);
        assert!(fresh > 0.08 && fresh <= 0.1, "just trusted: {fresh}");
        let mut previous = fresh;
        for _ in 0..200 {
            r.record_valid();
            let p = r.audit_probability(0.1);
            assert!(p <= previous, "audits grew with a clean record");
            previous = p;
        }
        assert!(
            (previous - 0.1 * MIN_AUDIT_SHARE).abs() < 1e-12,
            "floor: {previous}"
        );
        r.record_invalid();
        assert_eq!(
            r.audit_probability(0.1),
            1.0,
            "one wrong result ends the trust"
        );
        assert_eq!(Reliability::default().audit_probability(0.0), 1.0);
    }

    #[test]
    fn a_wallet_is_vetted_after_a_few_valid_results_and_unvetted_by_a_wrong_one() {
        let mut r = Reliability::default();
        for _ in 0..VETTED_AFTER {
            assert!(!r.vetted());
            r.record_valid();
        }
        assert!(r.vetted());
        r.record_invalid();
        assert!(!r.vetted(), "a wrong result ends it");
        let mut n = 0;
        while !r.vetted() {
            r.record_valid();
            n += 1;
        }
        assert_eq!(n, 13, "valid results to win it back");
        let mut trusted = Reliability::default();
        while !trusted.trusted() {
            trusted.record_valid();
        }
        assert!(trusted.vetted(), "trust comes after vetting");
    }

    #[test]
    fn a_new_wallet_earns_trust_with_valid_results() {
        let mut r = Reliability::default();
        assert!(!r.trusted() && !r.quarantined());
        for _ in 0..13 {
            r.record_valid();
        }
        assert!(!r.trusted(), "13 valid results: {r:?}");
        r.record_valid();
        assert!(r.trusted(), "14 valid results: {r:?}");
        r.record_invalid();
        assert!(!r.trusted(), "one invalid result loses trust at once");
        assert!(!r.quarantined());
    }

    #[test]
    fn a_wallet_that_always_cheats_is_quarantined_after_three_results() {
        let mut r = Reliability::default();
        r.record_invalid();
        r.record_invalid();
        assert!(!r.quarantined(), "two flukes are not enough");
        r.record_invalid();
        assert!(r.quarantined());
    }

    proptest! {
        #[test]
        fn a_wallet_wrong_a_quarter_of_the_time_ends_quarantined(seed: u64) {
            let mut r = Reliability::default();
            let mut state = seed;
            for _ in 0..200 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if (state >> 33) % 4 == 0 { r.record_invalid() } else { r.record_valid() }
                if r.quarantined() { break; }
            }
            prop_assert!(r.quarantined(), "{r:?}");
        }

        #[test]
        fn an_honest_wallet_with_rare_flukes_is_never_quarantined(flukes in prop::collection::btree_set(0usize..1000, 0..3)) {
            let mut r = Reliability::default();
            for i in 0..1000 {
                if flukes.contains(&i) { r.record_invalid() } else { r.record_valid() }
                prop_assert!(!r.quarantined(), "after {} results: {:?}", i + 1, r);
                prop_assert!((0.0..=1.0).contains(&r.error_rate));
            }
        }
    }
}
