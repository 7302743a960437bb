//! Returned results: stored, judged against their replicas and settled in one
//! transaction.

use super::ledger::EscrowStanding;
use super::writer::Keep;
use super::{
    bill_of, ledger, now_ms, parse_id, refresh_unit, wallets, Billing, Storage, StorageError,
};
use crate::ledger::{split_unit_price, Split};
use crate::validation::quorum::{judge, Candidate, Outcome, Policy, Reference};
use crate::validation::trust::Reliability;
use rusqlite::{Connection, OptionalExtension};
use sqlx::Row;
use starling_protocol::{JobId, LeaseId, WalletAddress};
use std::cell::Cell;
use std::sync::{Arc, LazyLock};

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

/// One unit as an auditor sees it: its state and everything returned for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitAudit {
    /// The unit's id (what its ledger payments reference).
    pub id: String,
    /// Position in the job.
    pub idx: i64,
    /// Life-cycle state: queued, leased, done or failed.
    pub state: String,
    /// Whether the unit settled.
    pub done: bool,
    /// The settled output.
    pub output: Option<Vec<u8>>,
    /// Outputs of the results judged valid.
    pub valid_outputs: Vec<Vec<u8>>,
    /// Wallets of the results judged valid.
    pub valid_wallets: Vec<String>,
    /// What each of those results earned, in micro-credits (same order).
    pub valid_paid_micro: Vec<u64>,
    /// The wallet of every result returned, judged or not.
    pub result_wallets: Vec<String>,
    /// Leases out now.
    pub active_leases: i64,
}

struct Stored {
    lease: String,
    wallet: String,
    output: Vec<u8>,
    spot_check: Option<bool>,
    trusted: bool,
    vetted: bool,
    /// The embedding site its volunteer came through.
    site: Option<String>,
}

/// Sets a stored result's verdict and what it earned; `canonical` drops its output, which
/// its unit now holds.
fn mark(
    db: &Connection,
    lease: &str,
    state: &str,
    paid_micro: i64,
    canonical: bool,
) -> Result<(), StorageError> {
    db.prepare_cached(
        "UPDATE leases SET verdict = ?1, paid_micro = ?2,
             output = CASE WHEN ?4 THEN NULL ELSE output END
         WHERE id = ?3",
    )?
    .execute(rusqlite::params![state, paid_micro, lease, canonical])?;
    Ok(())
}

/// The kernel's comparison of output pairs `(a, b)`, as the caller computed it for
/// outputs too large to compare on the writer thread; it is a function of the two
/// outputs, so what it said once holds for the same bytes.
type Verdicts = Vec<(Vec<u8>, Vec<u8>, bool)>;

/// A kernel's comparison of two outputs of one unit: whether they agree.
pub type Comparison = Arc<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// Outputs up to this size are compared on the writer thread, inside the result's
/// transaction: comparing two 64 KiB outputs takes microseconds, and the alternative, a
/// second trip through the writer once the caller has compared them, cost a whole extra
/// lookup of the result's unit (the second result of every replicated unit, and every
/// known-answer result, made that trip). Larger outputs are compared by the caller, off
/// the writer, which everyone's writes wait for.
const INLINE_COMPARE_BYTES: usize = 64 * 1024;

/// What one try at recording a result came to.
enum Attempt {
    /// Recorded, with the ledger entries written (a failed job's payout) and the wallets
    /// judged, with their new reliability.
    Done(
        Recorded,
        Vec<crate::ledger::Entry>,
        Vec<(WalletAddress, Reliability)>,
    ),
    /// Judging needs the comparison of these pairs, which the caller has not made yet;
    /// nothing was written.
    Compare(Vec<(Vec<u8>, Vec<u8>)>),
    /// Judging needs the relay's reference run; nothing was written.
    Reference,
}

/// A lease being answered, its unit and job, and its wallet's standing, as read at the
/// start of [`record_in`].
struct Answered {
    /// The lease's rowid: results received in the same millisecond are judged in lease
    /// order.
    rowid: i64,
    unit: String,
    wallet: String,
    kind: String,
    unit_state: String,
    unit_quorum: i64,
    known: Option<Vec<u8>>,
    job: String,
    job_state: String,
    job_quorum: i64,
    answered: bool,
    bill: (Option<String>, i64),
    flops: i64,
    site: Option<String>,
    /// The wallet's standing: in total, and on this kernel.
    record: wallets::Record,
    kernel: String,
    /// Active leases of the unit besides this one.
    others_active: i64,
    /// Whether the unit has pending or invalid results (most units have none when their
    /// first result comes, and then need no query for them).
    judged_or_pending: bool,
    /// The job's settled units and units, before this result.
    units_done: i64,
    units_total: i64,
    /// The job's escrow, before this result.
    escrow: EscrowStanding,
    /// Whether the submitter named the job's quorum (then trust never stands in for it).
    quorum_explicit: bool,
}

/// How a settled unit's price is shared: who is paid and how much each.
struct Payment {
    split: Split,
    wallets: Vec<WalletAddress>,
    site: Option<WalletAddress>,
}

impl Payment {
    /// What each agreeing wallet earns (the shares are equal).
    fn share_micro(&self) -> i64 {
        self.split
            .volunteers
            .first()
            .map_or(0, |m| i64::try_from(m.0).unwrap_or(i64::MAX))
    }
}

/// The price of the settled unit answered in `row`, split between the wallets whose
/// results agreed (equal shares), the site the canonical result's volunteer came
/// through, and the platform; `None` where the job is not billed or the unit is free.
/// `answering` is the wallet whose result is being recorded, already parsed: parsing an
/// address checks its key, which costs as much as the rest of a payment.
fn payment(
    billing: Option<&Billing>,
    row: &Answered,
    wallets: &[&str],
    site: Option<String>,
    answering: (&str, WalletAddress),
) -> Result<Option<Payment>, StorageError> {
    let Some(billing) = billing else {
        return Ok(None);
    };
    let (submitter, price) = row.bill.clone();
    let Some(bill) = bill_of(submitter, price)? else {
        return Ok(None);
    };
    let parse = |s: &str| {
        if s == answering.0 {
            return Ok(answering.1);
        }
        s.parse::<WalletAddress>()
            .map_err(|_| StorageError::Corrupt(format!("wallet {s:?}")))
    };
    let site = site.as_deref().map(parse).transpose()?;
    let wallets: Vec<WalletAddress> = wallets.iter().map(|w| parse(w)).collect::<Result<_, _>>()?;
    let split = split_unit_price(
        u64::try_from(row.flops).unwrap_or(0),
        bill.price_per_gflop,
        billing.pricing.site_share_ppm,
        billing.pricing.platform_fee_ppm,
        wallets.len(),
        site.is_some(),
    )
    .map_err(|e| StorageError::Corrupt(format!("unit price: {e}")))?;
    if split.price.is_zero() {
        return Ok(None);
    }
    Ok(Some(Payment {
        split,
        wallets,
        site,
    }))
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

/// Everything judging a result needs, read in one statement by its lease id.
static ANSWERED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT leases.unit_id, leases.wallet, leases.kind,
                units.state, units.quorum, units.output, units.job_id,
                jobs.state, jobs.quorum,
                EXISTS (SELECT 1 FROM leases AS mine WHERE mine.unit_id = leases.unit_id
                        AND mine.state = 'returned' AND mine.wallet = leases.wallet),
                jobs.submitter, jobs.price_per_gflop, units.flops, leases.site,
                wallets.error_rate, wallets.valid, wallets.invalid,
                (SELECT COUNT(*) FROM leases AS others WHERE others.unit_id = leases.unit_id
                 AND others.state = 'active' AND others.id != leases.id),
                EXISTS (SELECT 1 FROM leases AS others WHERE others.unit_id = leases.unit_id
                        AND others.state = 'returned' AND others.verdict IN ('pending', 'invalid')),
                jobs.units_done, jobs.units_total, leases.rowid, {}, jobs.quorum_explicit,
                jobs.kernel, on_kernel.error_rate, on_kernel.valid, on_kernel.invalid
         FROM leases JOIN units ON units.id = leases.unit_id JOIN jobs ON jobs.id = units.job_id
              LEFT JOIN wallets ON wallets.address = leases.wallet
              LEFT JOIN wallet_kernels AS on_kernel
                  ON on_kernel.wallet = leases.wallet AND on_kernel.kernel = jobs.kernel
         WHERE leases.id = ?1",
        EscrowStanding::columns(
            "COALESCE(jobs.escrow_account, 'escrow:' || units.job_id)",
            "units.job_id"
        )
    )
});

/// [`Storage::record_result`] inside the writer, comparing outputs through `verdicts`.
fn record_in(
    db: &Connection,
    billing: Option<&Billing>,
    result: &ReturnedResult<'_>,
    judging: Judging,
    reference: &Reference,
    verdicts: &Verdicts,
    compare: &(dyn Fn(&[u8], &[u8]) -> bool + Send + Sync),
) -> Result<Attempt, StorageError> {
    let lease = result.lease.to_string();
    let wallet = result.wallet.to_string();
    let row = db
        .prepare_cached(&ANSWERED_SQL)?
        .query_row([&lease], |r| {
            Ok(Answered {
                unit: r.get(0)?,
                wallet: r.get(1)?,
                kind: r.get(2)?,
                unit_state: r.get(3)?,
                unit_quorum: r.get(4)?,
                known: r.get(5)?,
                job: r.get(6)?,
                job_state: r.get(7)?,
                job_quorum: r.get(8)?,
                answered: r.get(9)?,
                bill: (r.get(10)?, r.get(11)?),
                flops: r.get(12)?,
                site: r.get(13)?,
                record: wallets::Record {
                    total: wallets::reliability_of(r.get(14)?, r.get(15)?, r.get(16)?),
                    kernel: wallets::reliability_of(r.get(26)?, r.get(27)?, r.get(28)?),
                },
                kernel: r.get(25)?,
                others_active: r.get(17)?,
                judged_or_pending: r.get(18)?,
                units_done: r.get(19)?,
                units_total: r.get(20)?,
                rowid: r.get(21)?,
                escrow: EscrowStanding {
                    held: r.get(22)?,
                    owed: r.get(23)?,
                },
                quorum_explicit: r.get(24)?,
            })
        })
        .optional()?;
    let Some(row) = row else {
        return Ok(Attempt::Done(
            Recorded::Stale("no such lease"),
            Vec::new(),
            Vec::new(),
        ));
    };
    let stale = |why| Ok(Attempt::Done(Recorded::Stale(why), Vec::new(), Vec::new()));
    if row.wallet != wallet {
        return stale("the lease was issued to another wallet");
    }
    if row.answered {
        return stale("this wallet already answered this unit");
    }
    // Small outputs are compared here. Where a large pair's comparison is needed and the
    // caller has not made it, judging goes on as if the outputs disagreed and the attempt
    // is thrown away.
    let missed = Cell::new(false);
    let agree = |a: &[u8], b: &[u8]| match verdicts.iter().find(|(x, y, _)| x == a && y == b) {
        Some(&(_, _, agreed)) => agreed,
        None if a.len().max(b.len()) <= INLINE_COMPARE_BYTES => compare(a, b),
        None => {
            missed.set(true);
            false
        }
    };
    let unit = row.unit.as_str();
    let job: JobId = parse_id(&row.job)?;
    // Trust and vetting are per kernel: a record on matmul vouches for nothing else.
    let trusted = row.record.kernel.trusted();
    let vetted = row.record.kernel.vetted();
    let now = now_ms();
    // Stores the result in its lease's row, judged `verdict`. `canonical`: its output
    // becomes its unit's, which holds the only copy.
    let store = |verdict: &str, paid_micro: i64, canonical: bool| -> Result<(), StorageError> {
        db.prepare_cached(
            "UPDATE leases SET state = 'returned', verdict = ?2, output = ?3, spot_check = ?4,
                 trusted = ?5, received_ms = ?6, paid_micro = ?7, vetted = ?8
             WHERE id = ?1",
        )?
        .execute(rusqlite::params![
            lease,
            verdict,
            (!canonical).then_some(result.output),
            result.spot_check,
            trusted,
            now,
            paid_micro,
            vetted
        ])?;
        Ok(())
    };

    if row.kind == "canary" {
        let passed = result.spot_check != Some(false)
            && row
                .known
                .as_deref()
                .is_some_and(|known| agree(known, result.output));
        if missed.get() {
            let known = row.known.unwrap_or_default();
            return Ok(Attempt::Compare(vec![(known, result.output.to_vec())]));
        }
        // Known answers are the relay's own tests: passing one earns nothing.
        store(if passed { "valid" } else { "invalid" }, 0, false)?;
        let judged = wallets::judge(db, &wallet, &row.kernel, passed, Some(row.record))?;
        return Ok(Attempt::Done(
            Recorded::Canary { passed },
            Vec::new(),
            vec![(result.wallet, judged)],
        ));
    }

    let open = matches!(row.unit_state.as_str(), "queued" | "leased")
        && matches!(row.job_state.as_str(), "queued" | "running");
    if !open {
        // Settled or withdrawn: a late replica neither counts nor costs its wallet.
        return stale("the unit is already settled");
    }

    // The unit's results so far, pending in arrival order (invalid ones only count
    // towards the limit), and this one where it will sort once stored: it is judged
    // with them before anything is written, so it is stored once, already judged.
    let mut pending: Vec<Stored> = Vec::new();
    let mut judged_before: u32 = 0;
    let mut this = None;
    if row.judged_or_pending {
        let mut results = db.prepare_cached(
            "SELECT id, wallet, output, spot_check, trusted, verdict, received_ms, rowid, site,
                    COALESCE(vetted, 0)
             FROM leases WHERE unit_id = ?1 AND state = 'returned'
                 AND verdict IN ('pending', 'invalid')
             ORDER BY received_ms, rowid",
        )?;
        let mut rows = results.query([unit])?;
        while let Some(r) = rows.next()? {
            if r.get_ref(5)? == rusqlite::types::ValueRef::Text(b"invalid") {
                // Only wrong results of wallets with a record count toward failing the
                // unit: wallets cost nothing, and fresh ones sending garbage would
                // otherwise fail any job.
                if r.get::<_, bool>(9)? {
                    judged_before = judged_before.saturating_add(1);
                }
                continue;
            }
            // Where this result sorts once stored, received `now` on its lease.
            if this.is_none() && (r.get::<_, i64>(6)?, r.get::<_, i64>(7)?) > (now, row.rowid) {
                this = Some(pending.len());
            }
            pending.push(Stored {
                lease: r.get(0)?,
                wallet: r.get(1)?,
                output: r.get(2)?,
                spot_check: r.get(3)?,
                trusted: r.get(4)?,
                site: r.get(8)?,
                vetted: r.get(9)?,
            });
        }
    }
    let this = this.unwrap_or(pending.len());
    pending.insert(
        this,
        Stored {
            lease: lease.clone(),
            wallet: wallet.clone(),
            output: result.output.to_vec(),
            spot_check: result.spot_check,
            trusted,
            vetted,
            site: row.site.clone(),
        },
    );
    let candidates: Vec<Candidate<'_>> = pending
        .iter()
        .map(|s| Candidate {
            output: &s.output,
            spot_check: s.spot_check,
            trusted: s.trusted,
            vetted: s.vetted,
        })
        .collect();
    // The job's quorum binds every result but a trusted wallet's: the unit's own
    // quorum of 1 (fixed at its first lease, to a then-trusted wallet) only lets a
    // trusted result stand alone, never an untrusted one that got the unit after the
    // trusted lease was lost.
    let policy = Policy {
        quorum: u32::try_from(row.job_quorum).unwrap_or(2).max(1),
        trusted_alone: row.unit_quorum == 1,
        trust_stands_in: !row.quorum_explicit,
        // A quorum of one is the submitter's choice to trust one result that passes the
        // kernel's checks, whoever sends it: vetting guards replicas against collusion.
        vet_newcomers: judging.vet_newcomers && row.job_quorum >= 2,
        // Results already judged invalid count towards the limit.
        max_results: judging.max_results.saturating_sub(judged_before),
    };

    let outcome = judge(policy, &candidates, reference, agree);
    if missed.get() {
        let mut pairs = Vec::new();
        // The reference run's output against every result (the judge compares it with
        // each), then the results passing the checks against each other.
        if let Reference::Output(known) = reference {
            for c in &candidates {
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
        return Ok(Attempt::Compare(pairs));
    }
    if matches!(outcome, Outcome::Unanchored { .. }) {
        return Ok(Attempt::Reference);
    }
    let judged_as = match &outcome {
        Outcome::Valid { valid, .. } if valid.contains(&this) => "valid",
        Outcome::Pending { invalid, .. } if !invalid.contains(&this) => "pending",
        _ => "invalid",
    };
    // Where the unit settles, its price is shared before anything is stored, so each
    // valid result is written with what it earned.
    let payment = match &outcome {
        Outcome::Valid {
            canonical, valid, ..
        } => {
            let site = pending[*canonical].site.clone();
            let paid: Vec<&str> = valid.iter().map(|&i| pending[i].wallet.as_str()).collect();
            payment(billing, &row, &paid, site, (&wallet, result.wallet))?
        }
        _ => None,
    };
    let share = payment.as_ref().map_or(0, Payment::share_micro);
    let canonical = match &outcome {
        Outcome::Valid { canonical, .. } => Some(*canonical),
        _ => None,
    };
    store(
        judged_as,
        if judged_as == "valid" { share } else { 0 },
        canonical == Some(this),
    )?;
    // This wallet's standing was read above; the others' are read as they are judged.
    let before = |w: &str| (w == wallet).then_some(row.record);
    // Sets another result's state (this one was stored with its own).
    let judged = |i: usize, state: &str, paid_micro: i64| -> Result<(), StorageError> {
        if i != this {
            mark(
                db,
                &pending[i].lease,
                state,
                paid_micro,
                canonical == Some(i),
            )?;
        }
        Ok(())
    };
    let mut payments = Vec::new();
    let mut judged_wallets = Vec::new();
    // Judged wallets go back as addresses, for the in-memory standings: this result's is
    // known, the others' parsed. Text that is no address (an edited database) cannot be
    // any connection's wallet, so its judgment is stored but there is nothing to cache.
    let address = |w: &str| -> Option<WalletAddress> {
        if w == wallet {
            Some(result.wallet)
        } else {
            w.parse().ok()
        }
    };
    // Records a judged result against its wallet, keeping the wallet's new standing.
    let rate = |judged_wallets: &mut Vec<(WalletAddress, Reliability)>,
                i: usize,
                valid: bool|
     -> Result<(), StorageError> {
        let wallet = &pending[i].wallet;
        let standing = wallets::judge(db, wallet, &row.kernel, valid, before(wallet))?;
        judged_wallets.extend(address(wallet).map(|w| (w, standing)));
        Ok(())
    };
    let recorded = match outcome {
        Outcome::Valid {
            canonical,
            valid,
            invalid,
        } => {
            for &i in &valid {
                judged(i, "valid", share)?;
                rate(&mut judged_wallets, i, true)?;
            }
            for &i in &invalid {
                judged(i, "invalid", 0)?;
                rate(&mut judged_wallets, i, false)?;
            }
            db.prepare_cached("UPDATE units SET state = 'done', output = ?1 WHERE id = ?2")?
                .execute(rusqlite::params![pending[canonical].output, unit])?;
            if let Some(p) = &payment {
                ledger::accrue_unit(
                    db,
                    job,
                    &p.split,
                    &p.wallets,
                    p.site.as_ref(),
                    Some(row.escrow),
                )
                .map_err(StorageError::ledger)?;
            }
            if row.others_active > 0 {
                // Replicas still out are no longer needed.
                db.prepare_cached(
                    "UPDATE leases SET state = 'void' WHERE unit_id = ?1 AND state = 'active'",
                )?
                .execute([unit])?;
            }
            // The counts were read in this transaction, and only settling a unit moves
            // them; no `RETURNING` (SQLite buffers returned rows in a temporary b-tree).
            db.prepare_cached(
                "UPDATE jobs SET units_done = units_done + 1, updated_ms = ?1 WHERE id = ?2",
            )?
            .execute(rusqlite::params![now, row.job])?;
            let job_complete = row.units_done + 1 == row.units_total;
            if valid.contains(&this) {
                Recorded::Valid { job, job_complete }
            } else {
                Recorded::Invalid {
                    job,
                    reason: "the result disagreed with the other volunteers' results",
                }
            }
        }
        Outcome::Pending { more, invalid } => {
            for &i in &invalid {
                judged(i, "invalid", 0)?;
                rate(&mut judged_wallets, i, false)?;
            }
            let eligible = (pending.len() - invalid.len()) as i64;
            // As above: only vetted wallets' wrong results count toward failing the job.
            let vetted_invalid = invalid.iter().filter(|&&i| pending[i].vetted).count();
            db.prepare_cached(
                "UPDATE units SET wanted = ?1, attempts = attempts + ?2 WHERE id = ?3",
            )?
            .execute(rusqlite::params![
                eligible + i64::from(more),
                vetted_invalid as i64,
                unit
            ])?;
            refresh_unit(db, unit)?;
            if invalid.contains(&this) {
                Recorded::Invalid {
                    job,
                    reason: "the result failed the kernel's check",
                }
            } else {
                Recorded::Pending { job }
            }
        }
        // Returned before anything was written; the writer keeps nothing of this attempt.
        Outcome::Unanchored { .. } => return Ok(Attempt::Reference),
        Outcome::Failed { reason } => {
            // Nobody can tell which results were right: none are paid, none punished.
            db.prepare_cached(
                "UPDATE leases SET verdict = 'invalid' WHERE unit_id = ?1 AND verdict = 'pending'",
            )?
            .execute([unit])?;
            let reason = format!("a unit could not be verified: {reason}");
            payments = super::fail_in(db, billing, job, &reason)?;
            Recorded::JobFailed { job, reason }
        }
    };
    Ok(Attempt::Done(recorded, payments, judged_wallets))
}

/// One unit as `GET /api/v1/jobs/{id}/units` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSummary {
    /// Position in the job.
    pub idx: i64,
    /// Life-cycle state: queued, leased, done or failed.
    pub state: String,
    /// Results that came back, judged or not.
    pub results: i64,
    /// Wallets whose results were judged valid, in the order they came.
    pub valid_wallets: Vec<String>,
    /// Leases out now.
    pub active_leases: i64,
}

impl Storage {
    /// Up to `limit` of `job`'s units after position `after` (from the first when
    /// `None`), in unit order: one query, outputs left out.
    pub async fn unit_page(
        &self,
        job: JobId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<UnitSummary>, StorageError> {
        let rows = sqlx::query(
            "SELECT idx, state,
                    (SELECT COUNT(*) FROM leases
                     WHERE unit_id = units.id AND state = 'active') AS active,
                    (SELECT COUNT(*) FROM leases
                     WHERE unit_id = units.id AND verdict IS NOT NULL) AS results,
                    (SELECT group_concat(wallet, ' ' ORDER BY received_ms, rowid) FROM leases
                     WHERE unit_id = units.id AND verdict = 'valid') AS valid
             FROM units WHERE job_id = ?1 AND idx > ?2 ORDER BY idx LIMIT ?3",
        )
        .bind(job.to_string())
        .bind(after.unwrap_or(-1))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let valid: Option<String> = row.try_get("valid")?;
                Ok(UnitSummary {
                    idx: row.try_get("idx")?,
                    state: row.try_get("state")?,
                    results: row.try_get("results")?,
                    valid_wallets: valid
                        .map(|v| v.split(' ').map(str::to_owned).collect())
                        .unwrap_or_default(),
                    active_leases: row.try_get("active")?,
                })
            })
            .collect()
    }

    /// Every unit of `job` with its results, in unit order.
    pub async fn audit_units(&self, job: JobId) -> Result<Vec<UnitAudit>, StorageError> {
        let units = sqlx::query(
            "SELECT id, idx, state, output,
                    (SELECT COUNT(*) FROM leases WHERE unit_id = units.id AND state = 'active') AS active
             FROM units WHERE job_id = ? ORDER BY idx",
        )
        .bind(job.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut audit = Vec::with_capacity(units.len());
        for unit in units {
            let results = sqlx::query(
                // The result whose output its unit took keeps none of its own.
                "SELECT wallet, verdict, paid_micro,
                        COALESCE(output, (SELECT output FROM units WHERE units.id = leases.unit_id))
                            AS output
                 FROM leases WHERE unit_id = ? AND verdict IS NOT NULL
                 ORDER BY received_ms, rowid",
            )
            .bind(unit.try_get::<&str, _>("id")?)
            .fetch_all(&self.pool)
            .await?;
            let mut valid_outputs = Vec::new();
            let mut valid_wallets = Vec::new();
            let mut valid_paid_micro = Vec::new();
            let mut result_wallets = Vec::new();
            for r in results {
                let wallet: String = r.try_get("wallet")?;
                if r.try_get::<&str, _>("verdict")? == "valid" {
                    valid_outputs.push(r.try_get("output")?);
                    valid_wallets.push(wallet.clone());
                    valid_paid_micro.push(
                        u64::try_from(r.try_get::<i64, _>("paid_micro")?).map_err(|_| {
                            StorageError::Corrupt("a result's pay is negative".into())
                        })?,
                    );
                }
                result_wallets.push(wallet);
            }
            let state: String = unit.try_get("state")?;
            audit.push(UnitAudit {
                id: unit.try_get("id")?,
                idx: unit.try_get("idx")?,
                done: state == "done",
                state,
                valid_wallets,
                valid_paid_micro,
                output: unit.try_get("output")?,
                valid_outputs,
                result_wallets,
                active_leases: unit.try_get("active")?,
            });
        }
        Ok(audit)
    }

    /// Stores `result` and judges its unit under `judging` and the unit's quorum, with
    /// `agree` as the kernel's comparison and `reference` as what the relay's own run of
    /// the unit said, if it ran. Idempotent: a result for a lease already answered, or for
    /// a unit already settled, changes nothing; so is [`Recorded::NeedsReference`].
    pub async fn record_result(
        &self,
        result: ReturnedResult<'_>,
        judging: Judging,
        agree: Comparison,
        reference: Reference,
    ) -> Result<Recorded, StorageError> {
        let reference = Arc::new(reference);
        let owned = OwnedResult {
            lease: result.lease,
            wallet: result.wallet,
            output: result.output.to_vec(),
            spot_check: result.spot_check,
        };
        let owned = Arc::new(owned);
        let mut verdicts: Arc<Verdicts> = Arc::default();
        loop {
            let billing = self.billing.clone();
            let (result, tried, compare) = (owned.clone(), verdicts.clone(), agree.clone());
            let reference = reference.clone();
            let attempt = self
                .writer
                .submit(move |db| {
                    let result = ReturnedResult {
                        lease: result.lease,
                        wallet: result.wallet,
                        output: &result.output,
                        spot_check: result.spot_check,
                    };
                    match record_in(
                        db,
                        billing.as_deref(),
                        &result,
                        judging,
                        &reference,
                        &tried,
                        &*compare,
                    ) {
                        Ok(Attempt::Compare(pairs)) => (Ok(Attempt::Compare(pairs)), Keep::Nothing),
                        Ok(Attempt::Reference) => (Ok(Attempt::Reference), Keep::Nothing),
                        other => (other, Keep::Writes),
                    }
                })
                .await?;
            match attempt {
                Attempt::Done(recorded, payments, judged) => {
                    // Receipts and standings change only now, after the commit.
                    self.announce(&payments);
                    for &(wallet, reliability) in &judged {
                        self.standings.judged(wallet, reliability);
                    }
                    return Ok(recorded);
                }
                Attempt::Reference => return Ok(Recorded::NeedsReference),
                Attempt::Compare(pairs) if pairs.is_empty() => {
                    return Err(StorageError::Corrupt(format!(
                        "judging the result for {} asked for no comparison it lacked",
                        owned.lease
                    )));
                }
                Attempt::Compare(pairs) => {
                    let verdicts = Arc::make_mut(&mut verdicts);
                    for (a, b) in pairs {
                        let agreed = agree(&a, &b);
                        verdicts.push((a, b, agreed));
                    }
                }
            }
        }
    }
}

/// A [`ReturnedResult`] with its output copied, to travel to the writer thread.
struct OwnedResult {
    lease: LeaseId,
    wallet: WalletAddress,
    output: Vec<u8>,
    spot_check: Option<bool>,
}
