//! Whether a unit's results so far settle it: a quorum of agreeing replicas with at least
//! one wallet of clean record among them (or the relay's own CPU reference behind them),
//! or one result from a trusted wallet that passed the kernel's spot check.
//!
//! Wallets cost nothing, so a quorum of newcomers proves nothing: two fresh wallets of one
//! person agree with each other whatever they send. A quorum counts only when it is
//! anchored: a member was vetted (a clean record on this kernel) or the relay ran the
//! kernel's CPU reference and the group agrees with it.

use serde::{Deserialize, Serialize};

/// How a job's units are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Agreeing results from different wallets that make a result valid.
    pub quorum: u32,
    /// Results after which a unit without a quorum fails instead of asking for more.
    pub max_results: u32,
    /// Whether a trusted wallet's result may settle the unit alone even where the kernel
    /// has no spot check (adaptive replication chose not to replicate this unit). A
    /// trusted result that passed a spot check always may; an untrusted one never.
    pub trusted_alone: bool,
    /// Whether a trusted wallet's result may settle the unit alone at all: not when the
    /// submitter named the job's quorum, which then always takes that many wallets.
    pub trust_stands_in: bool,
    /// Whether a quorum needs an anchor: a vetted member or the relay's reference. Off
    /// only on a relay whose volunteers are all known (a private cluster, benchmarks).
    pub vet_newcomers: bool,
}

impl Policy {
    /// Two agreeing results of two wallets, and up to six tries to get them.
    pub const DEFAULT: Self = Self {
        quorum: 2,
        max_results: 6,
        trusted_alone: false,
        trust_stands_in: true,
        vet_newcomers: true,
    };
}

impl Default for Policy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One returned result of a unit, as the judge sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The result's bytes.
    pub output: &'a [u8],
    /// The kernel's cheap check of this result: `None` where not run (or none exists).
    pub spot_check: Option<bool>,
    /// Whether its wallet was trusted (on this kernel) when the result arrived.
    pub trusted: bool,
    /// Whether its wallet had a clean record on this kernel when the result arrived: it
    /// can anchor a quorum (see [`Reliability::vetted`](super::trust::Reliability::vetted)).
    pub vetted: bool,
}

/// What the relay's own run of the kernel's CPU reference says about a unit, asked for
/// only when a quorum has no vetted member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// Not run: a quorum of newcomers asks for it ([`Outcome::Unanchored`]).
    NotRun,
    /// The relay had no CPU time to spare: a quorum of newcomers waits for a result from
    /// a vetted wallet instead.
    Unavailable,
    /// The reference output: results that disagree with it are wrong.
    Output(Vec<u8>),
}

/// What a unit's results decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not settled: at least `more` further results are needed.
    Pending {
        /// Results still needed, at the least.
        more: u32,
        /// Results already known to be wrong (failed spot check).
        invalid: Vec<usize>,
    },
    /// Settled: `canonical` is the unit's output; `valid` agree with it, `invalid` don't.
    Valid {
        /// Index of the result that becomes the unit's output.
        canonical: usize,
        /// Results that agree with it (including it).
        valid: Vec<usize>,
        /// Results that do not.
        invalid: Vec<usize>,
    },
    /// A group of agreeing results reached the quorum, but none of its wallets has a
    /// record: the caller runs the CPU reference and judges again with it.
    Unanchored {
        /// A result of the group.
        canonical: usize,
    },
    /// Too many results without a quorum: the unit (and its job) fails.
    Failed {
        /// Why, for the job's error.
        reason: String,
    },
}

/// Judges a unit's results under `policy`, with what the relay's `reference` run says;
/// `agree` is the kernel's replica comparison.
pub fn judge(
    policy: Policy,
    candidates: &[Candidate<'_>],
    reference: &Reference,
    agree: impl Fn(&[u8], &[u8]) -> bool,
) -> Outcome {
    let quorum = policy.quorum.max(1) as usize;
    let reference_output = match reference {
        Reference::Output(output) => Some(output.as_slice()),
        Reference::NotRun | Reference::Unavailable => None,
    };
    // A failed spot check, or disagreement with the reference, is wrong outright.
    let failed_check: Vec<usize> = (0..candidates.len())
        .filter(|&i| {
            candidates[i].spot_check == Some(false)
                || reference_output.is_some_and(|r| !agree(r, candidates[i].output))
        })
        .collect();
    let eligible: Vec<usize> = (0..candidates.len())
        .filter(|i| !failed_check.contains(i))
        .collect();
    let agreeing_with = |i: usize| -> Vec<usize> {
        eligible
            .iter()
            .copied()
            .filter(|&j| i == j || agree(candidates[i].output, candidates[j].output))
            .collect()
    };
    let settle = |canonical: usize| {
        let valid = agreeing_with(canonical);
        let invalid = (0..candidates.len())
            .filter(|i| !valid.contains(i))
            .collect();
        Outcome::Valid {
            canonical,
            valid,
            invalid,
        }
    };
    // A trusted wallet's result that passed the kernel's check stands alone, and so
    // does one the policy lets stand unchecked.
    if let Some(&i) = eligible.iter().find(|&&i| {
        policy.trust_stands_in
            && candidates[i].trusted
            && (candidates[i].spot_check == Some(true) || policy.trusted_alone)
    }) {
        return settle(i);
    }
    // Otherwise the largest group of agreeing results, if it reaches the quorum. The
    // comparison has a tolerance, so it is not transitive: groups are "everyone who
    // agrees with result i", and the earliest largest one wins.
    let best = eligible
        .iter()
        .map(|&i| (agreeing_with(i).len(), i))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let best_size = best.map_or(0, |(size, _)| size);
    // Results that count toward the limit: wrong ones of wallets without a record do
    // not (wallets cost nothing: fresh ones sending garbage must not fail a unit).
    let counted = (0..candidates.len())
        .filter(|i| eligible.contains(i) || candidates[*i].vetted)
        .count();
    let at_limit = counted >= policy.max_results as usize;
    let anchored = |i: usize| {
        !policy.vet_newcomers
            || reference_output.is_some()
            || agreeing_with(i).iter().any(|&j| candidates[j].vetted)
    };
    match best {
        Some((size, i)) if size >= quorum && anchored(i) => settle(i),
        Some((size, i)) if size >= quorum && *reference == Reference::NotRun => {
            Outcome::Unanchored { canonical: i }
        }
        // A quorum of newcomers the relay could not check: one more result, which
        // anchors it if its wallet has a record; past the limit the unit fails rather
        // than settle on wallets nobody can vouch for.
        Some((size, _)) if size >= quorum && !at_limit => Outcome::Pending {
            more: 1,
            invalid: failed_check,
        },
        Some((size, _)) if size >= quorum => Outcome::Failed {
            reason: format!(
                "{size} of {} results agree, but none comes from a wallet with a record \
                 and the relay could not check them (a registered kernel's units need a \
                 wallet trusted on the network's kernels among them)",
                candidates.len()
            ),
        },
        // At the limit with no anchored quorum: where the relay has not checked yet, its
        // reference run says which results are wrong (they then no longer count), so a
        // flood of fresh wallets sending different garbage cannot fail the unit.
        _ if at_limit
            && policy.vet_newcomers
            && *reference == Reference::NotRun
            && !eligible.is_empty() =>
        {
            Outcome::Unanchored {
                canonical: best.map_or(eligible[0], |(_, i)| i),
            }
        }
        _ if at_limit => Outcome::Failed {
            reason: format!(
                "no {quorum} of {counted} results agree (largest agreeing group: {best_size})"
            ),
        },
        _ => Outcome::Pending {
            more: (quorum - best_size) as u32,
            invalid: failed_check,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn same(a: &[u8], b: &[u8]) -> bool {
        a == b
    }

    /// A result of a wallet with a clean record, untrusted.
    fn c(output: &[u8]) -> Candidate<'_> {
        Candidate {
            output,
            spot_check: None,
            trusted: false,
            vetted: true,
        }
    }

    /// A result of a wallet never seen before.
    fn new(output: &[u8]) -> Candidate<'_> {
        Candidate {
            vetted: false,
            ..c(output)
        }
    }

    const NOT_RUN: Reference = Reference::NotRun;

    #[test]
    fn two_agreeing_results_settle_a_unit_and_a_dissenter_is_invalid() {
        let p = Policy::DEFAULT;
        assert_eq!(
            judge(p, &[c(b"x")], &NOT_RUN, same),
            Outcome::Pending {
                more: 1,
                invalid: vec![]
            }
        );
        assert_eq!(
            judge(p, &[c(b"x"), c(b"y")], &NOT_RUN, same),
            Outcome::Pending {
                more: 1,
                invalid: vec![]
            }
        );
        assert_eq!(
            judge(p, &[c(b"x"), c(b"y"), c(b"y")], &NOT_RUN, same),
            Outcome::Valid {
                canonical: 1,
                valid: vec![1, 2],
                invalid: vec![0]
            }
        );
    }

    #[test]
    fn a_trusted_result_that_passes_the_spot_check_stands_alone() {
        let checked = Candidate {
            output: b"x",
            spot_check: Some(true),
            trusted: true,
            vetted: true,
        };
        assert!(matches!(
            judge(Policy::DEFAULT, &[checked], &NOT_RUN, same),
            Outcome::Valid { canonical: 0, .. }
        ));
        // An untrusted wallet's passed check is not enough; a failed one is invalid.
        let untrusted = Candidate {
            trusted: false,
            ..checked
        };
        assert!(matches!(
            judge(Policy::DEFAULT, &[untrusted], &NOT_RUN, same),
            Outcome::Pending { more: 1, .. }
        ));
        let failed = Candidate {
            spot_check: Some(false),
            trusted: true,
            vetted: true,
            output: b"x",
        };
        assert_eq!(
            judge(Policy::DEFAULT, &[failed, c(b"x")], &NOT_RUN, same),
            Outcome::Pending {
                more: 1,
                invalid: vec![0]
            }
        );
    }

    #[test]
    fn a_unit_without_quorum_after_max_results_fails() {
        let outputs: Vec<[u8; 1]> = (0..6).map(|i| [i]).collect();
        let candidates: Vec<Candidate<'_>> = outputs.iter().map(|o| c(o)).collect();
        assert!(matches!(
            judge(Policy::DEFAULT, &candidates[..5], &NOT_RUN, same),
            Outcome::Pending { more: 1, .. }
        ));
        // At the limit the relay's reference run decides which are wrong, if it can.
        assert!(matches!(
            judge(Policy::DEFAULT, &candidates, &NOT_RUN, same),
            Outcome::Unanchored { .. }
        ));
        match judge(Policy::DEFAULT, &candidates, &Reference::Unavailable, same) {
            Outcome::Failed { reason } => assert!(reason.contains("no 2 of 6"), "{reason}"),
            other => panic!("expected failure, got {other:?}"),
        }
        // The reference agrees with one: five vetted wallets were wrong, and the unit fails;
        // five fresh ones' wrong results do not count, and one more result is asked for.
        assert!(matches!(
            judge(
                Policy::DEFAULT,
                &candidates,
                &Reference::Output(vec![3]),
                same
            ),
            Outcome::Failed { .. }
        ));
        let fresh: Vec<Candidate<'_>> = outputs.iter().map(|o| new(o)).collect();
        assert_eq!(
            judge(Policy::DEFAULT, &fresh, &Reference::Output(vec![3]), same),
            Outcome::Pending {
                more: 1,
                invalid: vec![0, 1, 2, 4, 5]
            }
        );
    }

    #[test]
    fn newcomers_alone_ask_for_the_reference_and_it_decides() {
        let p = Policy::DEFAULT;
        // Two fresh wallets agreeing prove nothing by themselves.
        let lie = [new(b"4"), new(b"4")];
        assert_eq!(
            judge(p, &lie, &NOT_RUN, same),
            Outcome::Unanchored { canonical: 0 }
        );
        // The relay's reference disagrees: both are wrong, and nothing settles.
        assert_eq!(
            judge(p, &lie, &Reference::Output(b"3".to_vec()), same),
            Outcome::Pending {
                more: 2,
                invalid: vec![0, 1]
            }
        );
        // It agrees: the newcomers' quorum stands.
        assert!(matches!(
            judge(p, &lie, &Reference::Output(b"4".to_vec()), same),
            Outcome::Valid { canonical: 0, ref valid, .. } if valid == &[0, 1]
        ));
        // No time for the reference: one more result, whose wallet may anchor it.
        assert_eq!(
            judge(p, &lie, &Reference::Unavailable, same),
            Outcome::Pending {
                more: 1,
                invalid: vec![]
            }
        );
        assert!(matches!(
            judge(
                p,
                &[new(b"3"), new(b"3"), c(b"3")],
                &Reference::Unavailable,
                same
            ),
            Outcome::Valid { .. }
        ));
        // One member with a record anchors the group.
        assert!(matches!(
            judge(p, &[new(b"3"), c(b"3")], &NOT_RUN, same),
            Outcome::Valid { .. }
        ));
        // Without vetting (a private cluster) any quorum stands.
        let open = Policy {
            vet_newcomers: false,
            ..p
        };
        assert!(matches!(
            judge(open, &lie, &NOT_RUN, same),
            Outcome::Valid { .. }
        ));
    }

    #[test]
    fn newcomers_the_relay_cannot_check_fail_the_unit_at_the_limit() {
        let six = [new(b"4"); 6];
        assert!(matches!(
            judge(Policy::DEFAULT, &six[..5], &Reference::Unavailable, same),
            Outcome::Pending { more: 1, .. }
        ));
        match judge(Policy::DEFAULT, &six, &Reference::Unavailable, same) {
            Outcome::Failed { reason } => assert!(reason.contains("record"), "{reason}"),
            other => panic!("expected failure, got {other:?}"),
        }
    }

    /// A result: its value (0 is the truth), spot check, trusted, vetted.
    fn candidates() -> impl Strategy<Value = Vec<(u8, Option<bool>, bool, bool)>> {
        prop::collection::vec(
            (
                0u8..4,
                prop::option::of(any::<bool>()),
                any::<bool>(),
                any::<bool>(),
            ),
            0..8,
        )
    }

    /// What the relay's reference run said: not run, unavailable, or a value.
    fn references() -> impl Strategy<Value = Reference> {
        prop_oneof![
            Just(Reference::NotRun),
            Just(Reference::Unavailable),
            (0u8..4).prop_map(|v| Reference::Output(vec![v])),
        ]
    }

    proptest! {
        #[test]
        fn never_valid_without_an_anchored_quorum_or_a_trusted_passed_check(
            raw in candidates(), quorum in 1u32..4, extra in 0u32..4, trusted_alone: bool,
            reference in references(),
        ) {
            let policy = Policy {
                quorum,
                max_results: quorum + extra,
                trusted_alone,
                trust_stands_in: true,
                vet_newcomers: true,
            };
            let outputs: Vec<[u8; 1]> = raw.iter().map(|r| [r.0]).collect();
            let cands: Vec<Candidate<'_>> = raw
                .iter()
                .zip(&outputs)
                // Trust is earned after vetting: a trusted wallet is vetted.
                .map(|(r, o)| Candidate { output: o, spot_check: r.1, trusted: r.2, vetted: r.2 || r.3 })
                .collect();
            let wrong = |c: &Candidate<'_>| {
                c.spot_check == Some(false)
                    || matches!(&reference, Reference::Output(r) if r.as_slice() != c.output)
            };
            match judge(policy, &cands, &reference, same) {
                Outcome::Valid { canonical, valid, invalid } => {
                    let chosen = &cands[canonical];
                    let alone = chosen.trusted
                        && (chosen.spot_check == Some(true) || trusted_alone);
                    let anchored = matches!(reference, Reference::Output(_))
                        || valid.iter().any(|&i| cands[i].vetted);
                    prop_assert!(alone || (valid.len() >= quorum as usize && anchored));
                    prop_assert!(!wrong(chosen));
                    // Every result is judged exactly once, and valid ones agree.
                    prop_assert_eq!(valid.len() + invalid.len(), cands.len());
                    for &i in &valid {
                        prop_assert_eq!(cands[i].output, chosen.output);
                        prop_assert!(!wrong(&cands[i]));
                    }
                }
                Outcome::Pending { more, invalid } => {
                    prop_assert!(more >= 1);
                    // Below the limit, counting every result but fresh wallets' wrong ones.
                    let counted = cands.iter().filter(|c| c.vetted || !wrong(c)).count();
                    prop_assert!(counted < policy.max_results as usize);
                    prop_assert!(invalid.iter().all(|&i| wrong(&cands[i])));
                }
                Outcome::Unanchored { canonical } => {
                    prop_assert_eq!(&reference, &Reference::NotRun);
                    prop_assert!(!wrong(&cands[canonical]));
                    // A quorum without an anchor, or a unit at its limit.
                    prop_assert!(
                        !cands[canonical].vetted || cands.len() >= policy.max_results as usize
                    );
                }
                Outcome::Failed { .. } => {
                    prop_assert!(cands.len() >= policy.max_results as usize);
                    // Failed without asking the reference only when every result is wrong.
                    prop_assert!(reference != Reference::NotRun || cands.iter().all(wrong));
                }
            }
        }

        #[test]
        fn an_honest_majority_always_wins(
            honest in 2usize..5, cheaters in 0usize..2, order in any::<u64>(),
        ) {
            // Cheaters all different from each other and from the honest value.
            let mut outputs: Vec<[u8; 1]> = vec![[0]; honest];
            outputs.extend((0..cheaters).map(|i| [i as u8 + 1]));
            let n = outputs.len();
            outputs.rotate_left((order % n as u64) as usize);
            let cands: Vec<Candidate<'_>> = outputs.iter().map(|o| c(o)).collect();
            match judge(Policy::DEFAULT, &cands, &NOT_RUN, same) {
                Outcome::Valid { canonical, invalid, .. } => {
                    prop_assert_eq!(cands[canonical].output, &[0u8][..]);
                    prop_assert_eq!(invalid.len(), cheaters);
                }
                other => prop_assert!(false, "expected valid, got {:?}", other),
            }
        }
    }
}
