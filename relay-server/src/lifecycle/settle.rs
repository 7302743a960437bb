//! Settling a unit: a returned result judged with its unit's other replicas (by the
//! quorum rules of [`validation::quorum`](crate::validation::quorum)), the wallets whose
//! results were judged rated, and the unit settled and paid, reopened for more replicas,
//! or failed with its job.
//!
//! [`decide_settle`] decides all of that from a [`SettleSnapshot`] (the lease, its unit
//! and job, its wallet's standing, the unit's pending replicas and the job's escrow, as
//! read in the result's transaction) and writes nothing: storage applies its
//! [`SettleDecision`]. A decision that needs more than the snapshot holds (comparisons of
//! outputs too large to compare inside the transaction, or the relay's reference run)
//! says so, and nothing is written until the caller tries again with them.

use super::billing::{bill_of, unit_payment, EscrowStanding, Pricing, UnitPayment};
use super::Inconsistent;
use crate::validation::quorum::{judge, Candidate, Outcome, Policy, Reference};
use crate::validation::trust::Reliability;
use starling_api::manifest::is_content_id;
use starling_protocol::{JobId, LeaseId, WalletAddress};
use std::cell::Cell;
use std::sync::Arc;

/// A result as it arrived, on a connection whose wallet its hello proved.
#[derive(Debug, Clone, Copy)]
pub struct ReturnedResult<'a> {
    /// The lease it answers.
    pub lease: LeaseId,
    /// The wallet that signed it.
    pub wallet: WalletAddress,
    /// The output bytes.
    pub output: &'a [u8],
    /// The kernel's spot check of it, where the kernel has one.
    pub spot_check: Option<bool>,
}

/// What storing a result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing changed: the lease is unknown, another wallet's, already answered, or its
    /// unit is settled.
    Stale(&'static str),
    /// Stored; the unit waits for more replicas.
    Pending {
        /// The unit's job.
        job: JobId,
    },
    /// The unit settled with this result among the agreeing ones.
    Valid {
        /// The unit's job.
        job: JobId,
        /// Whether that was the job's last unit (it is ready to merge).
        job_complete: bool,
    },
    /// This result was judged wrong.
    Invalid {
        /// The unit's job.
        job: JobId,
        /// Why, for the volunteer.
        reason: &'static str,
    },
    /// Too many results without a quorum: the unit and its job failed.
    JobFailed {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// A known-answer test, passed or not.
    Canary {
        /// Whether the result matched the known answer.
        passed: bool,
    },
    /// Nothing changed: the result would complete a quorum of wallets without a record,
    /// which stands only if the relay's CPU reference agrees. Record it again with the
    /// reference (or [`Reference::Unavailable`]).
    NeedsReference,
}

/// How results are judged, as the relay is configured.
#[derive(Debug, Clone, Copy)]
pub struct Judging {
    /// Results one unit may collect without a quorum before its job fails.
    pub max_results: u32,
    /// Whether a quorum needs an anchor (see [`Policy::vet_newcomers`]).
    pub vet_newcomers: bool,
}

/// A kernel's comparison of two outputs of one unit: whether they agree.
pub type Comparison = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// The kernel's comparison of output pairs `(a, b)`, as the caller computed it for
/// outputs too large to compare inside the transaction; it is a function of the two
/// outputs, so what it said once holds for the same bytes.
pub type Verdicts = Vec<(Vec<u8>, Vec<u8>, bool)>;

/// Outputs up to this size are compared on the writer thread, inside the result's
/// transaction: comparing two 64 KiB outputs takes microseconds, and the alternative, a
/// second trip through the writer once the caller has compared them, cost a whole extra
/// lookup of the result's unit (the second result of every replicated unit, and every
/// known-answer result, made that trip). Larger outputs are compared by the caller, off
/// the writer, which everyone's writes wait for.
pub const INLINE_COMPARE_BYTES: usize = 64 * 1024;

/// A wallet's standing as judging reads it: its totals over every kernel (what
/// quarantines it) and its record on the kernel of the result being judged (what trusts
/// and vets it there).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WalletStanding {
    /// Over every kernel.
    pub total: Reliability,
    /// On the result's kernel.
    pub kernel: Reliability,
}

/// A result of the unit stored before this one and still pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its lease's id.
    pub lease: String,
    /// The wallet that sent it.
    pub wallet: String,
    /// Its output.
    pub output: Vec<u8>,
    /// The kernel's spot check of it.
    pub spot_check: Option<bool>,
    /// Whether its wallet was trusted on the kernel when it arrived.
    pub trusted: bool,
    /// Whether its wallet was vetted on the kernel when it arrived.
    pub vetted: bool,
    /// The embedding site its volunteer came through.
    pub site: Option<String>,
    /// When it arrived, Unix milliseconds; with `order`, where it sorts among the unit's
    /// results.
    pub received_ms: i64,
    /// Its lease's place in issue order: results received in the same millisecond are
    /// judged in lease order.
    pub order: i64,
}

/// What a lease answers to, as its result's transaction reads it: the lease, its unit and
/// job, its wallet's standing, the unit's other results and the job's escrow.
#[derive(Debug, Clone, PartialEq)]
pub struct SettleSnapshot {
    /// The lease's place in issue order (see [`Replica::order`]).
    pub order: i64,
    /// The wallet the lease was issued to.
    pub wallet: String,
    /// Whether it is a known-answer test rather than a replica of real work.
    pub known_answer: bool,
    /// The embedding site its volunteer came through.
    pub site: Option<String>,
    /// Its wallet's standing before this result.
    pub standing: WalletStanding,
    /// Whether its wallet already returned a result for this unit (on any lease).
    pub answered: bool,
    /// The unit's id.
    pub unit: String,
    /// The unit's state: queued, leased, done or failed.
    pub unit_state: String,
    /// The unit's own quorum, fixed at its first lease (1 where a trusted wallet got it
    /// alone).
    pub unit_quorum: i64,
    /// The unit's settled output (what a known-answer test is checked against).
    pub known: Option<Vec<u8>>,
    /// The job's id.
    pub job: String,
    /// The job's state: queued, running, done or failed.
    pub job_state: String,
    /// The job's quorum.
    pub job_quorum: i64,
    /// Whether the submitter named the job's quorum (then trust never stands in for it).
    pub quorum_explicit: bool,
    /// The job's kernel (trust and vetting are per kernel).
    pub kernel: String,
    /// The job's submitter, where it has one.
    pub submitter: Option<String>,
    /// The job's price per GFLOP, micro-credits.
    pub price_per_gflop: i64,
    /// What the unit costs to compute.
    pub flops: i64,
    /// Active leases of the unit besides this one.
    pub others_active: i64,
    /// The job's settled units, before this result.
    pub units_done: i64,
    /// The job's units.
    pub units_total: i64,
    /// The job's escrow, before this result.
    pub escrow: EscrowStanding,
    /// The unit's pending results, in arrival order.
    pub replicas: Vec<Replica>,
    /// The unit's results already judged invalid that count toward failing it (those of
    /// vetted wallets: fresh wallets sending garbage must not fail a job).
    pub vetted_invalid: u32,
}

/// What a result is judged under besides its snapshot: the relay's rules, what its
/// reference run said, the comparisons already made, and the clock.
pub struct Terms<'a> {
    /// The relay's judging rules.
    pub judging: Judging,
    /// Where jobs are billed, how a unit's price is shared.
    pub pricing: Option<&'a Pricing>,
    /// What the relay's own run of the unit said, if it ran.
    pub reference: &'a Reference,
    /// Comparisons of large outputs the caller already made.
    pub verdicts: &'a Verdicts,
    /// The kernel's comparison, for outputs small enough to compare here.
    pub compare: &'a (dyn Fn(&[u8], &[u8]) -> bool + Send + Sync),
    /// When the result is received, Unix milliseconds.
    pub now_ms: i64,
}

/// A result of the unit, in a decision: the one being recorded, or a stored replica (by
/// its index in [`SettleSnapshot::replicas`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The result being recorded.
    This,
    /// A replica stored before.
    Replica(usize),
}

/// A result's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Waiting for more replicas.
    Pending,
    /// Agrees with the unit's settled output.
    Valid,
    /// Wrong.
    Invalid,
}

impl Verdict {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Valid => "valid",
            Self::Invalid => "invalid",
        }
    }
}

/// The result being recorded, as it is to be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its verdict.
    pub verdict: Verdict,
    /// What it earned, micro-credits.
    pub paid_micro: i64,
    /// Whether its output becomes its unit's (then the unit holds the only copy).
    pub canonical: bool,
    /// Whether its wallet was trusted on the kernel when it arrived.
    pub trusted: bool,
    /// Whether its wallet was vetted on the kernel when it arrived.
    pub vetted: bool,
}

/// One result judged valid or invalid: its verdict is stored (for a replica; the result
/// being recorded is stored with its own) and its wallet rated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ruling {
    /// Which result.
    pub slot: Slot,
    /// Whether it was judged valid.
    pub valid: bool,
    /// What it earned, micro-credits.
    pub paid_micro: i64,
    /// Whether its output becomes its unit's.
    pub canonical: bool,
}

/// What becomes of the unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitFate {
    /// A quorum agreed: the unit is done with `canonical`'s output, its price accrues,
    /// the job counts one more unit done.
    Settled {
        /// The result whose output the unit keeps.
        canonical: Slot,
        /// How its price is shared, where it has one.
        payment: Option<UnitPayment>,
        /// Whether replicas still out are to be voided (they are no longer needed).
        void_others: bool,
    },
    /// Not settled yet: the unit wants `wanted` results out or pending, and `attempts`
    /// more of its results count as failed.
    Reopened {
        /// Leases out plus results pending that the unit wants.
        wanted: i64,
        /// Results judged invalid now that count toward failing it.
        attempts: i64,
    },
    /// Nobody can tell which results were right: the pending ones are all invalid (none
    /// paid, none rated) and the job fails with `reason`.
    Failed {
        /// The job's error.
        reason: String,
    },
}

/// A result judged with its unit's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgment {
    /// The unit's job.
    pub job: JobId,
    /// The result being recorded, as it is stored.
    pub this: Stored,
    /// The results judged, in the order their verdicts are stored and wallets rated.
    pub rulings: Vec<Ruling>,
    /// What becomes of the unit.
    pub unit: UnitFate,
    /// What recording the result did, for its volunteer.
    pub recorded: Recorded,
}

/// What recording a result comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleDecision {
    /// Nothing changes.
    Stale(&'static str),
    /// Judging needs the kernel's comparison of these pairs, too large to compare here;
    /// nothing changes until the caller decides again with them.
    Compare(Vec<(Vec<u8>, Vec<u8>)>),
    /// Judging needs the relay's reference run; nothing changes.
    NeedsReference,
    /// A known-answer test: the result is stored judged `passed` (earning nothing: known
    /// answers are the relay's own tests) and its wallet rated.
    KnownAnswer {
        /// Whether it matched the known answer.
        passed: bool,
        /// The result, as it is stored.
        this: Stored,
    },
    /// The result is stored and judged with its unit's replicas.
    Judged(Box<Judgment>),
}

/// The kernel's comparison through the comparisons already made, noting when one that is
/// needed is too large to make here.
struct Comparisons<'a> {
    verdicts: &'a Verdicts,
    compare: &'a (dyn Fn(&[u8], &[u8]) -> bool + Send + Sync),
    missed: Cell<bool>,
}

impl Comparisons<'_> {
    /// Where a large pair's comparison is needed and the caller has not made it, judging
    /// goes on as if the outputs disagreed, and the decision is thrown away.
    fn agree(&self, a: &[u8], b: &[u8]) -> bool {
        match self.verdicts.iter().find(|(x, y, _)| x == a && y == b) {
            Some(&(_, _, agreed)) => agreed,
            None if a.len().max(b.len()) <= INLINE_COMPARE_BYTES => (self.compare)(a, b),
            None => {
                self.missed.set(true);
                false
            }
        }
    }
}

/// Every ordered pair of `outputs` (distinct positions) missing from `verdicts`.
fn missing_pairs(outputs: &[&[u8]], verdicts: &Verdicts) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (i, a) in outputs.iter().enumerate() {
        for (j, b) in outputs.iter().enumerate() {
            let known = |(x, y, _): &(Vec<u8>, Vec<u8>, bool)| x == a && y == b;
            let listed = |(x, y): &(Vec<u8>, Vec<u8>)| x == a && y == b;
            if i != j && !verdicts.iter().any(known) && !pairs.iter().any(listed) {
                pairs.push((a.to_vec(), b.to_vec()));
            }
        }
    }
    pairs
}

/// One of the unit's results as the judge sees it, with what paying it needs.
struct Entrant<'a> {
    slot: Slot,
    wallet: &'a str,
    output: &'a [u8],
    spot_check: Option<bool>,
    trusted: bool,
    vetted: bool,
    site: Option<&'a str>,
}

/// Decides what `result` (sent by `wallet`, its address's text) does to the unit
/// `snapshot` describes, under `terms`. Idempotent in effect: a result for a lease already
/// answered, another wallet's, or for a unit already settled is [`SettleDecision::Stale`].
pub fn decide_settle(
    snapshot: &SettleSnapshot,
    result: &ReturnedResult<'_>,
    wallet: &str,
    terms: &Terms<'_>,
) -> Result<SettleDecision, Inconsistent> {
    let s = snapshot;
    if s.wallet != wallet {
        return Ok(SettleDecision::Stale(
            "the lease was issued to another wallet",
        ));
    }
    if s.answered {
        return Ok(SettleDecision::Stale(
            "this wallet already answered this unit",
        ));
    }
    let comparisons = Comparisons {
        verdicts: terms.verdicts,
        compare: terms.compare,
        missed: Cell::new(false),
    };
    let job: JobId = s
        .job
        .parse()
        .map_err(|_| Inconsistent(format!("bad id {:?}", s.job)))?;
    // Trust and vetting are per kernel: a record on matmul vouches for nothing else.
    // Nobody has a record on a kernel just registered, though, and no CPU reference can
    // check its quorums: there a wallet trusted over all kernels anchors one, so that two
    // fresh wallets of one person cannot settle (and be paid for) a lie they agree on.
    let vetted =
        s.standing.kernel.vetted() || (is_content_id(&s.kernel) && s.standing.total.trusted());
    let this = Stored {
        verdict: Verdict::Pending,
        paid_micro: 0,
        canonical: false,
        trusted: s.standing.kernel.trusted(),
        vetted,
    };
    if s.known_answer {
        return Ok(decide_known_answer(s, result, this, &comparisons));
    }
    let open = matches!(s.unit_state.as_str(), "queued" | "leased")
        && matches!(s.job_state.as_str(), "queued" | "running");
    if !open {
        // Settled or withdrawn: a late replica neither counts nor costs its wallet.
        return Ok(SettleDecision::Stale("the unit is already settled"));
    }

    let (at, entrants) = entrants(s, result, wallet, this, terms.now_ms);
    let candidates: Vec<Candidate<'_>> = entrants
        .iter()
        .map(|e| Candidate {
            output: e.output,
            spot_check: e.spot_check,
            trusted: e.trusted,
            vetted: e.vetted,
        })
        .collect();
    let outcome = judge(
        policy(s, terms.judging),
        &candidates,
        terms.reference,
        |a, b| comparisons.agree(a, b),
    );
    if comparisons.missed.get() {
        return Ok(SettleDecision::Compare(comparisons_missing(
            &candidates,
            terms.reference,
            terms.verdicts,
        )));
    }
    // Where the unit settles, its price is shared before anything is stored, so each
    // valid result is written with what it earned.
    let payment = match &outcome {
        Outcome::Unanchored { .. } => return Ok(SettleDecision::NeedsReference),
        Outcome::Valid {
            canonical, valid, ..
        } => {
            let bill = match terms.pricing {
                Some(_) => bill_of(s.submitter.as_deref(), s.price_per_gflop)?,
                None => None,
            };
            let paid: Vec<&str> = valid.iter().map(|&i| entrants[i].wallet).collect();
            unit_payment(
                terms.pricing,
                bill,
                s.flops,
                &paid,
                entrants[*canonical].site,
                (wallet, result.wallet),
            )?
        }
        _ => None,
    };
    let judged = Judged {
        job,
        snapshot: s,
        entrants: &entrants,
        this: (at, this),
    };
    Ok(judged
        .judgment(outcome, payment)
        .map_or(SettleDecision::NeedsReference, |judgment| {
            SettleDecision::Judged(Box::new(judgment))
        }))
}

/// A known-answer result: valid if it passed its spot check and agrees with the unit's
/// settled output.
fn decide_known_answer(
    s: &SettleSnapshot,
    result: &ReturnedResult<'_>,
    this: Stored,
    comparisons: &Comparisons<'_>,
) -> SettleDecision {
    let passed = result.spot_check != Some(false)
        && s.known
            .as_deref()
            .is_some_and(|known| comparisons.agree(known, result.output));
    if comparisons.missed.get() {
        let known = s.known.clone().unwrap_or_default();
        return SettleDecision::Compare(vec![(known, result.output.to_vec())]);
    }
    let verdict = if passed {
        Verdict::Valid
    } else {
        Verdict::Invalid
    };
    SettleDecision::KnownAnswer {
        passed,
        this: Stored { verdict, ..this },
    }
}

/// The unit's pending results in arrival order, with this one where it will sort once
/// stored (received now, on its lease), and its position: it is judged with them before
/// anything is written, so it is stored once, already judged.
fn entrants<'a>(
    s: &'a SettleSnapshot,
    result: &'a ReturnedResult<'_>,
    wallet: &'a str,
    this: Stored,
    now_ms: i64,
) -> (usize, Vec<Entrant<'a>>) {
    let at = s
        .replicas
        .iter()
        .position(|r| (r.received_ms, r.order) > (now_ms, s.order))
        .unwrap_or(s.replicas.len());
    let mut entrants: Vec<Entrant<'a>> = s
        .replicas
        .iter()
        .enumerate()
        .map(|(i, r)| Entrant {
            slot: Slot::Replica(i),
            wallet: &r.wallet,
            output: &r.output,
            spot_check: r.spot_check,
            trusted: r.trusted,
            vetted: r.vetted,
            site: r.site.as_deref(),
        })
        .collect();
    entrants.insert(
        at,
        Entrant {
            slot: Slot::This,
            wallet,
            output: result.output,
            spot_check: result.spot_check,
            trusted: this.trusted,
            vetted: this.vetted,
            site: s.site.as_deref(),
        },
    );
    (at, entrants)
}

/// The quorum rules for the unit `s` describes, as the relay judges under `judging`.
fn policy(s: &SettleSnapshot, judging: Judging) -> Policy {
    // The job's quorum binds every result but a trusted wallet's: the unit's own
    // quorum of 1 (fixed at its first lease, to a then-trusted wallet) only lets a
    // trusted result stand alone, never an untrusted one that got the unit after the
    // trusted lease was lost.
    Policy {
        quorum: u32::try_from(s.job_quorum).unwrap_or(2).max(1),
        trusted_alone: s.unit_quorum == 1,
        trust_stands_in: !s.quorum_explicit,
        // A quorum of one is the submitter's choice to trust one result that passes the
        // kernel's checks, whoever sends it: vetting guards replicas against collusion.
        vet_newcomers: judging.vet_newcomers && s.job_quorum >= 2,
        // Results already judged invalid count towards the limit.
        max_results: judging.max_results.saturating_sub(s.vetted_invalid),
    }
}

/// A unit's results, judged: what turns the quorum's outcome into a [`Judgment`].
struct Judged<'a> {
    job: JobId,
    snapshot: &'a SettleSnapshot,
    entrants: &'a [Entrant<'a>],
    /// The result being recorded: its position among the entrants, and its standing.
    this: (usize, Stored),
}

impl Judged<'_> {
    /// The judgment `outcome` comes to, with the unit's `payment` where it settles;
    /// `None` for an unanchored quorum, which needs the relay's reference first.
    fn judgment(&self, outcome: Outcome, payment: Option<UnitPayment>) -> Option<Judgment> {
        let (this, stored) = self.this;
        let share = payment.as_ref().map_or(0, UnitPayment::share_micro);
        let canonical = match &outcome {
            Outcome::Valid { canonical, .. } => Some(*canonical),
            _ => None,
        };
        let verdict = match &outcome {
            Outcome::Valid { valid, .. } if valid.contains(&this) => Verdict::Valid,
            Outcome::Pending { invalid, .. } if !invalid.contains(&this) => Verdict::Pending,
            _ => Verdict::Invalid,
        };
        let stored = Stored {
            verdict,
            paid_micro: if verdict == Verdict::Valid { share } else { 0 },
            canonical: canonical == Some(this),
            ..stored
        };
        let ruling = |i: usize, valid: bool| Ruling {
            slot: self.entrants[i].slot,
            valid,
            paid_micro: if valid { share } else { 0 },
            canonical: canonical == Some(i),
        };
        let job = self.job;
        let (rulings, unit, recorded) = match outcome {
            Outcome::Unanchored { .. } => return None,
            Outcome::Valid {
                canonical,
                valid,
                invalid,
            } => {
                let rulings = valid
                    .iter()
                    .map(|&i| ruling(i, true))
                    .chain(invalid.iter().map(|&i| ruling(i, false)))
                    .collect();
                let recorded = if valid.contains(&this) {
                    Recorded::Valid {
                        job,
                        job_complete: self.snapshot.units_done + 1 == self.snapshot.units_total,
                    }
                } else {
                    Recorded::Invalid {
                        job,
                        reason: "the result disagreed with the other volunteers' results",
                    }
                };
                let unit = UnitFate::Settled {
                    canonical: self.entrants[canonical].slot,
                    payment,
                    void_others: self.snapshot.others_active > 0,
                };
                (rulings, unit, recorded)
            }
            Outcome::Pending { more, invalid } => {
                let eligible = (self.entrants.len() - invalid.len()) as i64;
                // Only vetted wallets' wrong results count toward failing the job.
                let vetted_invalid = invalid.iter().filter(|&&i| self.entrants[i].vetted).count();
                let recorded = if invalid.contains(&this) {
                    Recorded::Invalid {
                        job,
                        reason: "the result failed the kernel's check",
                    }
                } else {
                    Recorded::Pending { job }
                };
                let unit = UnitFate::Reopened {
                    wanted: eligible + i64::from(more),
                    attempts: vetted_invalid as i64,
                };
                (
                    invalid.iter().map(|&i| ruling(i, false)).collect(),
                    unit,
                    recorded,
                )
            }
            Outcome::Failed { reason } => {
                let reason = format!("a unit could not be verified: {reason}");
                let unit = UnitFate::Failed {
                    reason: reason.clone(),
                };
                (Vec::new(), unit, Recorded::JobFailed { job, reason })
            }
        };
        Some(Judgment {
            job,
            this: stored,
            rulings,
            unit,
            recorded,
        })
    }
}

/// The comparisons judging `candidates` needs and `verdicts` lacks: the reference run's
/// output against every result (the judge compares it with each), then the results
/// passing the checks against each other.
fn comparisons_missing(
    candidates: &[Candidate<'_>],
    reference: &Reference,
    verdicts: &Verdicts,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut pairs = Vec::new();
    if let Reference::Output(known) = reference {
        for c in candidates {
            let listed = |(x, y, _): &(Vec<u8>, Vec<u8>, bool)| x == known && y == c.output;
            if !verdicts.iter().any(listed) {
                pairs.push((known.clone(), c.output.to_vec()));
            }
        }
    }
    let eligible: Vec<&[u8]> = candidates
        .iter()
        .filter(|c| {
            c.spot_check != Some(false)
                && match reference {
                    Reference::Output(known) => verdicts
                        .iter()
                        .any(|(x, y, agreed)| x == known && y == c.output && *agreed),
                    _ => true,
                }
        })
        .map(|c| c.output)
        .collect();
    pairs.extend(missing_pairs(&eligible, verdicts));
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{AccountId, MicroCredits};
    use proptest::prelude::*;
    use starling_protocol::WalletKey;

    fn address(seed: u8) -> WalletAddress {
        WalletKey::from_seed([seed; 32]).address()
    }

    /// A new wallet, a vetted one, a trusted one, and one with a bad record.
    fn reliability() -> impl Strategy<Value = Reliability> {
        prop_oneof![
            Just(Reliability::default()),
            Just(Reliability {
                error_rate: 0.08,
                valid: 4,
                invalid: 0
            }),
            Just(Reliability {
                error_rate: 0.01,
                valid: 40,
                invalid: 0
            }),
            Just(Reliability {
                error_rate: 0.5,
                valid: 1,
                invalid: 4
            }),
        ]
    }

    fn reference() -> impl Strategy<Value = Reference> {
        prop_oneof![
            Just(Reference::NotRun),
            Just(Reference::Unavailable),
            (0u8..3).prop_map(|b| Reference::Output(vec![b])),
        ]
    }

    /// A unit's pending replicas, each from a wallet of its own, with outputs from a
    /// small alphabet so that groups agree.
    fn replicas() -> impl Strategy<Value = Vec<Replica>> {
        let replica = (
            0u8..3,
            proptest::option::of(any::<bool>()),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0i64..4,
        );
        proptest::collection::vec(replica, 0..5).prop_map(|rs| {
            rs.into_iter()
                .enumerate()
                .map(
                    |(i, (output, spot_check, trusted, vetted, site, received_ms))| Replica {
                        lease: format!("lease-{i}"),
                        wallet: address(10 + i as u8).to_string(),
                        output: vec![output],
                        spot_check,
                        trusted,
                        vetted,
                        site: site.then(|| address(100).to_string()),
                        received_ms,
                        order: 2 * i as i64,
                    },
                )
                .collect()
        })
    }

    fn state(open: &'static [&'static str], closed: &'static str) -> BoxedStrategy<String> {
        prop_oneof![
            4 => proptest::sample::select(open).prop_map(str::to_owned),
            1 => Just(closed.to_owned()),
        ]
        .boxed()
    }

    /// A result arriving for a unit, its snapshot, and the relay's terms.
    #[derive(Debug, Clone)]
    struct Case {
        snapshot: SettleSnapshot,
        output: Vec<u8>,
        spot_check: Option<bool>,
        judging: Judging,
        pricing: Option<Pricing>,
        reference: Reference,
        now_ms: i64,
    }

    prop_compose! {
        fn case()(
            replicas in replicas(),
            (output, spot_check, record, site, order) in
                (0u8..3, proptest::option::of(any::<bool>()), reliability(), any::<bool>(), 0i64..10),
            (job_quorum, unit_quorum, quorum_explicit, vet_newcomers, max_results, vetted_invalid) in
                (1i64..=3, 1i64..=3, any::<bool>(), any::<bool>(), 1u32..7, 0u32..3),
            unit_state in state(&["queued", "leased"], "done"),
            job_state in state(&["queued", "running"], "failed"),
            (answered, wrong_wallet, known_answer, known) in
                (proptest::bool::weighted(0.1), proptest::bool::weighted(0.1),
                 proptest::bool::weighted(0.15), proptest::option::of(0u8..3)),
            (billed, price, flops, site_ppm, fee_ppm) in
                (any::<bool>(), 0i64..2_000, 0i64..20_000_000_000, 0u32..=1_000_000, 0u32..=1_000_000),
            reference in reference(),
            (now_ms, others_active) in (0i64..4, 0i64..3),
        ) -> Case {
            let wallet = if wrong_wallet { address(2) } else { address(1) };
            Case {
                snapshot: SettleSnapshot {
                    order,
                    wallet: wallet.to_string(),
                    known_answer,
                    site: site.then(|| address(101).to_string()),
                    standing: WalletStanding { total: record, kernel: record },
                    answered,
                    unit: "unit".into(),
                    unit_state,
                    unit_quorum,
                    known: known.map(|k| vec![k]),
                    job: JobId::from_uuid(uuid::Uuid::new_v4()).to_string(),
                    job_state,
                    job_quorum,
                    quorum_explicit,
                    kernel: "kernel".into(),
                    submitter: Some(AccountId::new().to_string()),
                    price_per_gflop: price,
                    flops,
                    others_active,
                    units_done: 0,
                    units_total: 3,
                    escrow: EscrowStanding { held: i64::MAX / 2, owed: 0 },
                    replicas,
                    vetted_invalid,
                },
                output: vec![output],
                spot_check,
                judging: Judging { max_results, vet_newcomers },
                pricing: billed.then_some(Pricing {
                    price_per_gflop: MicroCredits(1),
                    site_share_ppm: site_ppm,
                    platform_fee_ppm: fee_ppm,
                }),
                reference,
                now_ms,
            }
        }
    }

    fn same(a: &[u8], b: &[u8]) -> bool {
        a == b
    }

    impl Case {
        fn decide(&self, snapshot: &SettleSnapshot) -> Result<SettleDecision, Inconsistent> {
            let result = ReturnedResult {
                lease: LeaseId::from_uuid(uuid::Uuid::new_v4()),
                wallet: address(1),
                output: &self.output,
                spot_check: self.spot_check,
            };
            let terms = Terms {
                judging: self.judging,
                pricing: self.pricing.as_ref(),
                reference: &self.reference,
                verdicts: &Vec::new(),
                compare: &same,
                now_ms: self.now_ms,
            };
            decide_settle(snapshot, &result, &address(1).to_string(), &terms)
        }

        /// A slot's output, wallet, and whether its wallet was vetted or trusted.
        fn slot(&self, slot: Slot) -> (&[u8], WalletAddress, bool, bool) {
            let kernel = self.snapshot.standing.kernel;
            match slot {
                Slot::This => (&self.output, address(1), kernel.vetted(), kernel.trusted()),
                Slot::Replica(i) => {
                    let r = &self.snapshot.replicas[i];
                    let wallet = r.wallet.parse().unwrap_or_else(|_| address(0));
                    (&r.output, wallet, r.vetted, r.trusted)
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever the replicas, a settled unit pays only the wallets whose results
        /// agree with its output, in equal shares that never add up to more than its
        /// price; a quorum of newcomers never settles when vetting is on and the relay
        /// has not checked it; an unsettled unit pays nobody; and a stale or repeated
        /// result changes nothing.
        #[test]
        fn settling_pays_only_agreeing_wallets_within_the_price(case in case()) {
            let s = &case.snapshot;
            let decision = case.decide(s).map_err(|e| TestCaseError::fail(e.0))?;
            let open = matches!(s.unit_state.as_str(), "queued" | "leased")
                && matches!(s.job_state.as_str(), "queued" | "running");
            let stale = s.answered || s.wallet != address(1).to_string() || (!s.known_answer && !open);
            prop_assert_eq!(matches!(decision, SettleDecision::Stale(_)), stale, "{:?}", decision);
            let judgment = match decision {
                SettleDecision::Stale(_) | SettleDecision::NeedsReference => return Ok(()),
                SettleDecision::Compare(pairs) => {
                    return Err(TestCaseError::fail(format!("asked to compare small outputs {pairs:?}")))
                }
                SettleDecision::KnownAnswer { passed, this } => {
                    prop_assert!(s.known_answer);
                    prop_assert_eq!(passed, case.spot_check != Some(false) && s.known.as_deref() == Some(&case.output[..]));
                    prop_assert_eq!(this.paid_micro, 0, "a known answer earns nothing");
                    return Ok(());
                }
                SettleDecision::Judged(judgment) => judgment,
            };
            prop_assert!(!s.known_answer && open);
            // The same result again, once stored, is a duplicate.
            let again = SettleSnapshot { answered: true, ..s.clone() };
            prop_assert!(matches!(case.decide(&again), Ok(SettleDecision::Stale(_))));

            let this_ruling = Ruling {
                slot: Slot::This,
                valid: judgment.this.verdict == Verdict::Valid,
                paid_micro: judgment.this.paid_micro,
                canonical: judgment.this.canonical,
            };
            let mut paid = judgment.rulings.iter().filter(|r| r.slot != Slot::This).copied().collect::<Vec<_>>();
            paid.push(this_ruling);
            for r in &paid {
                prop_assert!(r.paid_micro >= 0);
                prop_assert!(r.valid || r.paid_micro == 0, "paid an invalid result {:?}", r);
            }
            let total: i64 = paid.iter().map(|r| r.paid_micro).sum();
            match &judgment.unit {
                UnitFate::Settled { canonical, payment, .. } => {
                    let (canonical_output, _, _, _) = case.slot(*canonical);
                    let valid: Vec<Slot> = paid.iter().filter(|r| r.valid).map(|r| r.slot).collect();
                    prop_assert!(valid.contains(canonical));
                    for slot in &valid {
                        prop_assert_eq!(case.slot(*slot).0, canonical_output, "a valid result disagrees");
                    }
                    // A quorum of newcomers the relay did not check never settles.
                    let vetting = case.judging.vet_newcomers && s.job_quorum >= 2
                        && !matches!(case.reference, Reference::Output(_));
                    if vetting {
                        prop_assert!(valid.iter().any(|&slot| { let (_, _, vetted, trusted) = case.slot(slot); vetted || trusted }),
                            "settled without an anchor");
                    }
                    match payment {
                        Some(p) => {
                            let price = i64::try_from(p.split.price.0).unwrap_or(i64::MAX);
                            prop_assert!(total <= price, "paid {} of a price of {}", total, price);
                            prop_assert_eq!(p.split.total().ok(), Some(p.split.price));
                            let mut wallets: Vec<WalletAddress> = valid.iter().map(|&slot| case.slot(slot).1).collect();
                            let mut payees = p.wallets.clone();
                            wallets.sort_by_key(|w| w.to_string());
                            payees.sort_by_key(|w| w.to_string());
                            prop_assert_eq!(wallets, payees, "paid wallets are not the agreeing ones");
                            prop_assert!(case.pricing.is_some());
                        }
                        None => prop_assert_eq!(total, 0),
                    }
                }
                UnitFate::Reopened { .. } | UnitFate::Failed { .. } => {
                    prop_assert_eq!(total, 0, "an unsettled unit paid");
                    prop_assert!(paid.iter().all(|r| !r.valid));
                }
            }
        }
    }
}
