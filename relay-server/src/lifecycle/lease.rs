//! Handing a unit out: how long a lease lasts, what a unit's first lease fixes (its
//! quorum), when a unit has enough out, and what losing leases costs a wallet.
//!
//! Which unit a volunteer may have is a filter over every unit and lease, so a lease drawn
//! alone has storage select it in SQL (`storage/leases.rs`); a PostgreSQL group's leases
//! are drawn in memory from the oldest units, by [`bars`], the same rule. Storage loads
//! the unit as a [`DrawnUnit`]; [`decide_work_lease`] decides the rest and storage writes
//! the lease.

/// How long a lease lasts: until `start_ms + clamp(slack_ms + flops * ms_per_flop,
/// min_ms, max_ms)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseTerms {
    /// When the lease starts, Unix milliseconds.
    pub start_ms: i64,
    /// Shortest lease.
    pub min_ms: i64,
    /// Longest lease.
    pub max_ms: i64,
    /// Milliseconds added to every lease (network, queueing).
    pub slack_ms: i64,
    /// Milliseconds granted per FLOP of the unit.
    pub ms_per_flop: f64,
}

impl LeaseTerms {
    /// A lease that ends exactly at `deadline_ms`, whatever the unit costs.
    pub fn until(deadline_ms: i64) -> Self {
        Self {
            start_ms: deadline_ms,
            min_ms: 0,
            max_ms: 0,
            slack_ms: 0,
            ms_per_flop: 0.0,
        }
    }

    /// The deadline for a unit of `flops`.
    pub fn deadline(&self, flops: u64) -> i64 {
        let wanted = self.slack_ms as f64 + flops as f64 * self.ms_per_flop;
        let span = (wanted as i64).max(self.min_ms).min(self.max_ms);
        self.start_ms.saturating_add(span)
    }
}

/// Hand-backs a wallet may have before it gets no more work, beyond
/// [`HANDBACKS_PER_VALID`] per valid result it returned: an honest volunteer on a flaky
/// network drops a unit now and then and computes many more; a wallet that only takes
/// units and hands them back (to see which units exist, or to waste them) is cut off
/// after this many.
pub const HANDBACK_ALLOWANCE: i64 = 8;

/// Hand-backs each valid result earns a wallet. Valid results lag (a replica is judged
/// only when its quorum is complete), so the margin is wide: with 2 (and an allowance of
/// 4, then 8), volunteers dropping 30% of their units were still cut off in some runs of
/// the 30-volunteer test, one of them with 19 hand-backs and 34 valid results by the end.
pub const HANDBACKS_PER_VALID: i64 = 4;

/// How long after a wallet handed a unit back it may be given that unit again, should
/// nobody else have taken it: a lone volunteer who pressed Stop gets its unit back; a
/// wallet failing units on purpose waits this long per unit, and pays for each.
pub const REPEAT_AFTER_MS: i64 = 120_000;

/// Whether a wallet with `handbacks` hand-backs and `valid` valid results on record is
/// over its allowance, and gets no more work.
pub fn over_allowance(handbacks: i64, valid: i64) -> bool {
    handbacks > HANDBACK_ALLOWANCE.saturating_add(HANDBACKS_PER_VALID.saturating_mul(valid))
}

/// Whether a lost lease counts against its unit (toward failing its job): only the first
/// time a wallet with a valid result on record loses it. Fresh wallets, which cost
/// nothing to make, cannot fail a job by dropping its units, and one wallet counts once
/// however often it tries.
pub fn loss_counts(valid: i64, lost_it_before: bool) -> bool {
    valid > 0 && !lost_it_before
}

/// How losses count against the wallets that held the leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandBack {
    /// Each lost lease is one hand-back (a `Failed`).
    PerLease,
    /// All the leases are one hand-back per wallet (one dropped connection).
    Once,
    /// Not held against the wallet: a lease that expired may have been a slow honest
    /// volunteer's (on a busy machine, many are), and a late result still counts.
    Never,
}

impl HandBack {
    /// A wallet's hand-backs once one more of its leases is lost, from `so_far` in the
    /// same loss.
    pub fn charge(self, so_far: i64) -> i64 {
        match self {
            Self::PerLease => so_far + 1,
            Self::Once => 1,
            Self::Never => 0,
        }
    }
}

/// A lease a unit has had, as [`bars`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastLease {
    /// Its state: `active`, `returned`, `expired`, `released` or `void`.
    pub state: String,
    /// Its wallet, as text.
    pub wallet: String,
    /// Its connection, as text.
    pub peer: String,
    /// The network its volunteer's data came from (`None`: one that counts as its own).
    pub network: Option<String>,
    /// When it was issued, Unix milliseconds.
    pub issued_ms: i64,
}

/// Who asks for a work lease, as [`bars`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// Its wallet, as text.
    pub wallet: &'a str,
    /// Its connection, as text.
    pub peer: &'a str,
    /// Its network (`None`: one that counts as its own).
    pub network: Option<&'a str>,
    /// Hand-backs issued after this (Unix milliseconds) still keep the unit from it.
    pub repeat_since: i64,
}

/// Whether `lease` keeps a unit from `asker`: one wallet or connection never holds two
/// replicas of a unit nor answers it twice, a unit it handed back goes to it again only
/// after [`REPEAT_AFTER_MS`], and one network holds or answers one replica.
///
/// `storage/leases.rs` spells the same rule in SQL (`eligible_units!`) for a draw alone;
/// a PostgreSQL group's draws read it here, over the leases of the units they load, so
/// that each sees the leases drawn before it in the group without writing them first.
pub fn bars(lease: &PastLease, asker: &Asker<'_>) -> bool {
    let own = lease.wallet == asker.wallet;
    let same_network = lease.network.is_some() && lease.network.as_deref() == asker.network;
    match lease.state.as_str() {
        "active" => own || lease.peer == asker.peer || same_network,
        "returned" => own || same_network,
        "released" | "expired" => own && lease.issued_ms > asker.repeat_since,
        _ => false,
    }
}

/// The unit drawn for a work lease, as storage loaded it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawnUnit<'a> {
    /// The unit's quorum: 0 until its first lease fixes it.
    pub quorum: i64,
    /// Leases out plus results pending that the unit wants.
    pub wanted: i64,
    /// Its active leases and pending results.
    pub outstanding: i64,
    /// Its job's kernel.
    pub kernel: &'a str,
    /// Its job's quorum.
    pub job_quorum: i64,
    /// Whether the submitter named the job's quorum.
    pub quorum_explicit: bool,
    /// Its job's state (a queued job starts with its first lease).
    pub job_state: &'a str,
    /// What it costs to compute.
    pub flops: i64,
}

/// What leasing a drawn unit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLease {
    /// The unit's quorum from now on.
    pub quorum: i64,
    /// Leases out plus results pending that it wants from now on.
    pub wanted: i64,
    /// Whether the unit's row changes: its quorum was fixed now, or it has enough out.
    pub update_unit: bool,
    /// Whether the unit has enough out once this lease is (it goes `leased`).
    pub leased: bool,
    /// When the lease expires.
    pub deadline_ms: i64,
    /// Whether the job starts (`running`) with this lease.
    pub starts_job: bool,
}

/// What leasing a drawn unit comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseDecision {
    /// The unit's first lease needs `quorum_for(kernel, job_quorum)`, which the caller did
    /// not evaluate; nothing is written.
    NeedsQuorum {
        /// The job's kernel.
        kernel: String,
        /// The job's quorum.
        job_quorum: u32,
    },
    /// The lease, as it is written.
    Lease(NewLease),
}

/// Decides the lease of `unit` on `terms`, with `quorums` the `(kernel, job quorum,
/// quorum)` triples the caller evaluated in advance. A unit's first lease fixes its
/// quorum: the submitter's where it named one, else what the caller's `quorum_for` said
/// (which may lower it for a trusted wallet).
pub fn decide_work_lease(
    unit: &DrawnUnit<'_>,
    quorums: &[(String, u32, u32)],
    terms: &LeaseTerms,
) -> LeaseDecision {
    let (mut quorum, mut wanted) = (unit.quorum, unit.wanted);
    if quorum == 0 && unit.quorum_explicit {
        // The submitter named it: trust does not lower it.
        quorum = unit.job_quorum.clamp(1, 5);
        wanted = quorum;
    } else if quorum == 0 {
        let job_quorum = u32::try_from(unit.job_quorum).unwrap_or(2);
        let Some(&(_, _, first)) = quorums
            .iter()
            .find(|(kernel, q, _)| *q == job_quorum && kernel == unit.kernel)
        else {
            return LeaseDecision::NeedsQuorum {
                kernel: unit.kernel.to_owned(),
                job_quorum,
            };
        };
        quorum = i64::from(first);
        wanted = quorum;
    }
    // As `refresh_unit` would set it once this lease is out.
    let leased = unit.outstanding + 1 >= wanted;
    LeaseDecision::Lease(NewLease {
        quorum,
        wanted,
        update_unit: quorum != unit.quorum || leased,
        leased,
        deadline_ms: terms.deadline(u64::try_from(unit.flops).unwrap_or(0)),
        starts_job: unit.job_state == "queued",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    prop_compose! {
        fn drawn()(
            quorum in prop_oneof![Just(0i64), 1i64..=5],
            wanted in 0i64..6,
            outstanding in 0i64..6,
            kernel in proptest::sample::select(&["matmul", "mandelbrot"][..]),
            job_quorum in 1i64..=5,
            quorum_explicit: bool,
            job_state in proptest::sample::select(&["queued", "running"][..]),
            flops in 0i64..1_000_000_000_000,
        ) -> DrawnUnit<'static> {
            DrawnUnit { quorum, wanted, outstanding, kernel, job_quorum, quorum_explicit, job_state, flops }
        }
    }

    proptest! {
        /// A unit's quorum is fixed once, by its first lease; a quorum the submitter
        /// named is never lowered; a unit goes `leased` exactly when this lease gives it
        /// all it wants; the deadline stays within the terms' bounds.
        #[test]
        fn a_lease_fixes_a_quorum_once_and_within_bounds(
            unit in drawn(),
            lowered in 1u32..=5,
            hinted: bool,
            start_ms in 0i64..1_000_000,
            (min_ms, extra_ms) in (0i64..10_000, 0i64..100_000),
            ms_per_flop in 0.0f64..1e-6,
        ) {
            let quorums = if hinted {
                vec![(unit.kernel.to_owned(), u32::try_from(unit.job_quorum).unwrap_or(2), lowered)]
            } else {
                Vec::new()
            };
            let terms = LeaseTerms { start_ms, min_ms, max_ms: min_ms + extra_ms, slack_ms: 500, ms_per_flop };
            let lease = match decide_work_lease(&unit, &quorums, &terms) {
                LeaseDecision::NeedsQuorum { kernel, job_quorum } => {
                    prop_assert!(unit.quorum == 0 && !unit.quorum_explicit && !hinted);
                    prop_assert_eq!(kernel, unit.kernel);
                    prop_assert_eq!(i64::from(job_quorum), unit.job_quorum);
                    return Ok(());
                }
                LeaseDecision::Lease(lease) => lease,
            };
            if unit.quorum != 0 {
                prop_assert_eq!(lease.quorum, unit.quorum, "a fixed quorum changed");
                prop_assert_eq!(lease.wanted, unit.wanted);
            } else if unit.quorum_explicit {
                prop_assert_eq!(lease.quorum, unit.job_quorum, "a named quorum was lowered");
            } else {
                prop_assert_eq!(lease.quorum, i64::from(lowered));
            }
            prop_assert_eq!(lease.leased, unit.outstanding + 1 >= lease.wanted);
            prop_assert_eq!(lease.update_unit, lease.quorum != unit.quorum || lease.leased);
            prop_assert!(lease.deadline_ms >= start_ms + min_ms && lease.deadline_ms <= start_ms + min_ms + extra_ms);
            prop_assert_eq!(lease.starts_job, unit.job_state == "queued");
        }

        /// Valid results only ever widen a wallet's allowance of hand-backs.
        #[test]
        fn valid_results_never_bring_a_cut_off_closer(handbacks in 0i64..200, valid in 0i64..50) {
            if over_allowance(handbacks, valid + 1) {
                prop_assert!(over_allowance(handbacks, valid));
            }
            prop_assert!(!over_allowance(HANDBACK_ALLOWANCE, 0));
            prop_assert!(over_allowance(HANDBACK_ALLOWANCE + 1, 0));
        }
    }
}
