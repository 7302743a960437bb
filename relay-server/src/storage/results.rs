//! Returned results in SQLite: what judging one needs loaded in one statement, and what
//! the judgment decided written, in the transaction that stores the result. The judging
//! itself is [`lifecycle::settle`](crate::lifecycle::settle).

use super::ledger::{accrue_unit, escrow_standing_columns};
use super::sql::{params, Cell, Db, Dialect, Row};
use super::writer::{Command, GroupError, Reply, Together};
use super::{fail_in, now_ms, refresh_unit, wallets, Billing, Storage, StorageError};
use crate::lifecycle::billing::EscrowStanding;
use crate::lifecycle::settle::{
    decide_settle, Replica, SettleDecision, SettleSnapshot, Slot, Stored, Terms, UnitFate,
    Verdicts, WalletStanding,
};
use crate::validation::quorum::Reference;
use crate::validation::trust::Reliability;
use starling_api::UnitStates;
use starling_protocol::{JobId, LeaseId, WalletAddress};
use std::sync::{Arc, LazyLock};

pub use crate::lifecycle::settle::{Comparison, Judging, Recorded, ReturnedResult};

mod together;
pub(super) use together::{judge_together, tell_completed, write_counters};

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

/// The result being recorded, with its lease's and wallet's text as stored, and when it
/// is received.
struct Answer<'a> {
    result: &'a ReturnedResult<'a>,
    lease: &'a str,
    wallet: &'a str,
    now_ms: i64,
}

/// Everything judging a result needs, as columns of one row per lease; `FROM` and joins
/// in [`ANSWERED_FROM`].
///
/// Whether a unit has results of some kind is counted, not asked with `EXISTS`: for a
/// statement over many leases PostgreSQL turns such an `EXISTS` into one hash of every
/// returned lease in the table, read again at each call (2 ms a call at 3 000 leases, and
/// growing with the table), where a count reads the unit's few leases by index.
static ANSWERED_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "leases.unit_id, leases.wallet, leases.kind,
                units.state, units.quorum, units.output, units.job_id,
                jobs.state, jobs.quorum,
                (SELECT COUNT(*) FROM leases AS mine WHERE mine.unit_id = leases.unit_id
                 AND mine.state = 'returned' AND mine.wallet = leases.wallet) > 0,
                jobs.submitter, jobs.price_per_gflop, units.flops, leases.site,
                wallets.error_rate, wallets.valid, wallets.invalid,
                (SELECT COUNT(*) FROM leases AS others WHERE others.unit_id = leases.unit_id
                 AND others.state = 'active' AND others.id != leases.id),
                (SELECT COUNT(*) FROM leases AS others WHERE others.unit_id = leases.unit_id
                 AND others.state = 'returned' AND others.verdict IN ('pending', 'invalid')) > 0,
                jobs.units_done, jobs.units_total, leases.rowid, {}, jobs.quorum_explicit,
                jobs.kernel, on_kernel.error_rate, on_kernel.valid, on_kernel.invalid",
        escrow_standing_columns(
            "COALESCE(jobs.escrow_account, 'escrow:' || units.job_id)",
            "units.job_id"
        )
    )
});

/// How many columns [`ANSWERED_COLUMNS`] names: a statement's own columns follow.
const ANSWERED_WIDTH: usize = 29;

const ANSWERED_FROM: &str =
    "FROM leases JOIN units ON units.id = leases.unit_id JOIN jobs ON jobs.id = units.job_id
          LEFT JOIN wallets ON wallets.address = leases.wallet
          LEFT JOIN wallet_kernels AS on_kernel
              ON on_kernel.wallet = leases.wallet AND on_kernel.kernel = jobs.kernel";

/// Everything judging a result needs, read in one statement by its lease id.
static ANSWERED_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} {ANSWERED_FROM} WHERE leases.id = ?1",
        *ANSWERED_COLUMNS
    )
});

/// A result's snapshot as [`ANSWERED_COLUMNS`] has it, without the unit's replicas; and
/// whether it has results pending or judged invalid (which judging it also needs).
fn read_snapshot(r: &dyn Row) -> Result<(SettleSnapshot, bool), StorageError> {
    let snapshot = SettleSnapshot {
        unit: r.get(0)?,
        wallet: r.get(1)?,
        known_answer: r.cell(2)? == Cell::Text("canary"),
        unit_state: r.get(3)?,
        unit_quorum: r.get(4)?,
        known: r.get(5)?,
        job: r.get(6)?,
        job_state: r.get(7)?,
        job_quorum: r.get(8)?,
        answered: r.get(9)?,
        submitter: r.get(10)?,
        price_per_gflop: r.get(11)?,
        flops: r.get(12)?,
        site: r.get(13)?,
        standing: WalletStanding {
            total: wallets::reliability_of(r.get(14)?, r.get(15)?, r.get(16)?),
            kernel: wallets::reliability_of(r.get(26)?, r.get(27)?, r.get(28)?),
        },
        others_active: r.get(17)?,
        units_done: r.get(19)?,
        units_total: r.get(20)?,
        order: r.get(21)?,
        escrow: EscrowStanding {
            held: r.get(22)?,
            owed: r.get(23)?,
        },
        quorum_explicit: r.get(24)?,
        kernel: r.get(25)?,
        replicas: Vec::new(),
        vetted_invalid: 0,
    };
    let judged_or_pending: bool = r.get(18)?;
    Ok((snapshot, judged_or_pending))
}

/// What judging the result on `lease` needs, in one statement, and a second for the
/// unit's results so far where it has pending or invalid ones (most units have none when
/// their first result comes) and is not a known-answer test; `None` for an unknown lease.
fn load_settle(db: &dyn Db, lease: &str) -> Result<Option<SettleSnapshot>, StorageError> {
    // On PostgreSQL another relay may judge a replica of the same unit; relays write in
    // turns (`writer::BEGIN_IN_TURN`), so the two judgments are one after the other and
    // the second sees the first's without a row lock here.
    let loaded = db.query_opt(&ANSWERED_SQL, params![lease], read_snapshot)?;
    let Some((mut snapshot, judged_or_pending)) = loaded else {
        return Ok(None);
    };
    if judged_or_pending && !snapshot.known_answer {
        db.for_each_row(
            "SELECT id, wallet, output, spot_check, trusted, verdict, received_ms, rowid, site,
                    COALESCE(vetted, 0)
             FROM leases WHERE unit_id = ?1 AND state = 'returned'
                 AND verdict IN ('pending', 'invalid')
             ORDER BY received_ms, rowid",
            params![snapshot.unit],
            &mut |r| {
                if r.cell(5)? == Cell::Text("invalid") {
                    // Invalid results only count toward the limit, and only vetted wallets'.
                    if r.get::<bool>(9)? {
                        snapshot.vetted_invalid = snapshot.vetted_invalid.saturating_add(1);
                    }
                    return Ok(());
                }
                snapshot.replicas.push(Replica {
                    lease: r.get(0)?,
                    wallet: r.get(1)?,
                    output: r.get(2)?,
                    spot_check: r.get(3)?,
                    trusted: r.get(4)?,
                    received_ms: r.get(6)?,
                    order: r.get(7)?,
                    site: r.get(8)?,
                    vetted: r.get(9)?,
                });
                Ok(())
            },
        )?;
    }
    Ok(Some(snapshot))
}

/// Stores the result being recorded in its lease's row, as `stored` says. A canonical
/// result's output is its unit's, which holds the only copy.
fn store(db: &dyn Db, answer: &Answer<'_>, stored: Stored) -> Result<(), StorageError> {
    db.write(
        "UPDATE leases SET state = 'returned', verdict = ?2, output = ?3, spot_check = ?4,
             trusted = ?5, received_ms = ?6, paid_micro = ?7, vetted = ?8
         WHERE id = ?1",
        params![
            answer.lease,
            stored.verdict.as_str(),
            (!stored.canonical).then_some(answer.result.output),
            answer.result.spot_check,
            stored.trusted,
            answer.now_ms,
            stored.paid_micro,
            stored.vetted
        ],
    )?;
    Ok(())
}

/// Sets a stored result's verdict and what it earned; `canonical` drops its output, which
/// its unit now holds.
fn mark(
    db: &dyn Db,
    lease: &str,
    state: &str,
    paid_micro: i64,
    canonical: bool,
) -> Result<(), StorageError> {
    db.write(
        "UPDATE leases SET verdict = ?1, paid_micro = ?2,
             output = CASE WHEN ?4 = 1 THEN NULL ELSE output END
         WHERE id = ?3",
        params![state, paid_micro, lease, canonical],
    )?;
    Ok(())
}

/// Writes what `decision` says about `answer`, its unit as `snapshot` was loaded.
fn apply_settle(
    db: &dyn Db,
    billing: Option<&Billing>,
    snapshot: &SettleSnapshot,
    answer: &Answer<'_>,
    decision: SettleDecision,
) -> Result<Attempt, StorageError> {
    let judgment = match decision {
        SettleDecision::Stale(why) => {
            return Ok(Attempt::Done(Recorded::Stale(why), Vec::new(), Vec::new()))
        }
        SettleDecision::Compare(pairs) => return Ok(Attempt::Compare(pairs)),
        SettleDecision::NeedsReference => return Ok(Attempt::Reference),
        SettleDecision::KnownAnswer { passed, this } => {
            store(db, answer, this)?;
            let standing = wallets::judge(
                db,
                answer.wallet,
                &snapshot.kernel,
                passed,
                Some(snapshot.standing),
            )?;
            return Ok(Attempt::Done(
                Recorded::Canary { passed },
                Vec::new(),
                vec![(answer.result.wallet, standing)],
            ));
        }
        SettleDecision::Judged(judgment) => *judgment,
    };
    store(db, answer, judgment.this)?;
    let mut judged_wallets = Vec::new();
    for ruling in &judgment.rulings {
        // This wallet's standing was loaded; the others' are read as they are judged.
        let (wallet, before) = match ruling.slot {
            Slot::This => (answer.wallet, Some(snapshot.standing)),
            Slot::Replica(i) => {
                let replica = &snapshot.replicas[i];
                let verdict = if ruling.valid { "valid" } else { "invalid" };
                mark(
                    db,
                    &replica.lease,
                    verdict,
                    ruling.paid_micro,
                    ruling.canonical,
                )?;
                (replica.wallet.as_str(), None)
            }
        };
        let standing = wallets::judge(db, wallet, &snapshot.kernel, ruling.valid, before)?;
        // Judged wallets go back as addresses, for the in-memory standings. Text that is
        // no address (an edited database) cannot be any connection's wallet, so its
        // judgment is stored but there is nothing to cache.
        let address = match ruling.slot {
            Slot::This => Some(answer.result.wallet),
            Slot::Replica(_) => wallet.parse().ok(),
        };
        judged_wallets.extend(address.map(|w| (w, standing)));
    }
    let unit = snapshot.unit.as_str();
    let mut payments = Vec::new();
    match judgment.unit {
        UnitFate::Settled {
            canonical,
            payment,
            void_others,
        } => {
            let output = match canonical {
                Slot::This => answer.result.output,
                Slot::Replica(i) => snapshot.replicas[i].output.as_slice(),
            };
            db.write(
                "UPDATE units SET state = 'done', output = ?1 WHERE id = ?2",
                params![output, unit],
            )?;
            if let Some(p) = &payment {
                accrue_unit(
                    db,
                    judgment.job,
                    &p.split,
                    &p.wallets,
                    p.site.as_ref(),
                    Some(snapshot.escrow),
                )
                .map_err(StorageError::ledger)?;
            }
            if void_others {
                db.write(
                    "UPDATE leases SET state = 'void' WHERE unit_id = ?1 AND state = 'active'",
                    params![unit],
                )?;
            }
            // The counts were read in this transaction, and only settling a unit moves
            // them; no `RETURNING` (SQLite buffers returned rows in a temporary b-tree).
            db.write(
                &format!(
                    "UPDATE jobs SET units_done = units_done + 1, {} WHERE id = ?2",
                    super::others::touch("jobs", "?1")
                ),
                params![answer.now_ms, snapshot.job],
            )?;
        }
        UnitFate::Reopened { wanted, attempts } => {
            db.write(
                "UPDATE units SET wanted = ?1, attempts = attempts + ?2 WHERE id = ?3",
                params![wanted, attempts, unit],
            )?;
            refresh_unit(db, unit)?;
        }
        UnitFate::Failed { reason } => {
            db.write(
                "UPDATE leases SET verdict = 'invalid' WHERE unit_id = ?1 AND verdict = 'pending'",
                params![unit],
            )?;
            payments = fail_in(db, billing, judgment.job, &reason)?;
        }
    }
    Ok(Attempt::Done(judgment.recorded, payments, judged_wallets))
}

/// [`Storage::record_result`] inside the writer: load the unit's snapshot, decide, apply;
/// outputs are compared through `verdicts` where too large to compare here.
fn record_in(
    db: &dyn Db,
    billing: Option<&Billing>,
    result: &ReturnedResult<'_>,
    judging: Judging,
    reference: &Reference,
    verdicts: &Verdicts,
    compare: &(dyn Fn(&[u8], &[u8]) -> bool + Send + Sync),
) -> Result<Attempt, StorageError> {
    let lease = result.lease.to_string();
    let Some(snapshot) = load_settle(db, &lease)? else {
        return Ok(Attempt::Done(
            Recorded::Stale("no such lease"),
            Vec::new(),
            Vec::new(),
        ));
    };
    let wallet = result.wallet.to_string();
    let answer = Answer {
        result,
        lease: &lease,
        wallet: &wallet,
        now_ms: now_ms(),
    };
    let terms = Terms {
        judging,
        pricing: billing.map(|b| &b.pricing),
        reference,
        verdicts,
        compare,
        now_ms: answer.now_ms,
    };
    let decision = decide_settle(&snapshot, result, &wallet, &terms)?;
    apply_settle(db, billing, &snapshot, &answer, decision)
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
        let job = job.to_string();
        let after = after.unwrap_or(-1);
        self.reads
            .read(move |db| {
                // The wallets whose results were valid, in the order they came.
                let valid_wallets = match db.dialect() {
                    Dialect::Sqlite => "group_concat(wallet, ' ' ORDER BY received_ms, rowid)",
                    Dialect::Postgres => "string_agg(wallet, ' ' ORDER BY received_ms, rowid)",
                };
                db.query_all(
                    &format!(
                        "SELECT idx, state,
                                (SELECT COUNT(*) FROM leases
                                 WHERE unit_id = units.id AND state = 'active') AS active,
                                (SELECT COUNT(*) FROM leases
                                 WHERE unit_id = units.id AND verdict IS NOT NULL) AS results,
                                (SELECT {valid_wallets} FROM leases
                                 WHERE unit_id = units.id AND verdict = 'valid') AS valid
                         FROM units WHERE job_id = ?1 AND idx > ?2 ORDER BY idx LIMIT ?3"
                    ),
                    params![job, after, i64::from(limit)],
                    |row| {
                        let valid: Option<String> = row.get(4)?;
                        Ok(UnitSummary {
                            idx: row.get(0)?,
                            state: row.get(1)?,
                            results: row.get(3)?,
                            valid_wallets: valid
                                .map(|v| v.split(' ').map(str::to_owned).collect())
                                .unwrap_or_default(),
                            active_leases: row.get(2)?,
                        })
                    },
                )
            })
            .await
    }

    /// Every unit's state of `job`, in unit order, as runs (see [`UnitStates`]). Read as a
    /// stream, so a job of any size costs the relay the runs, not a row per unit.
    pub async fn unit_states(&self, job: JobId) -> Result<UnitStates, StorageError> {
        let job = job.to_string();
        self.reads
            .read(move |db| {
                let mut map = UnitStates::default();
                db.for_each_row(
                    "SELECT state FROM units WHERE job_id = ?1 ORDER BY idx",
                    params![job],
                    &mut |r| {
                        map.push(super::model::parse_unit_state(&r.get::<String>(0)?)?);
                        Ok(())
                    },
                )?;
                Ok(map)
            })
            .await
    }

    /// Every unit of `job` with its results, in unit order.
    pub async fn audit_units(&self, job: JobId) -> Result<Vec<UnitAudit>, StorageError> {
        let job = job.to_string();
        self.reads.read(move |db| audit_units_in(db, &job)).await
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
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.writer.queue(Box::new(Recording {
                billing: self.billing.clone(),
                result: owned.clone(),
                judging,
                reference: reference.clone(),
                verdicts: verdicts.clone(),
                compare: agree.clone(),
                reply: Reply::to(reply),
            }))?;
            let attempt = answer.await.map_err(|_| StorageError::WriterGone)??;
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

/// Recording a result, as the writer runs it: alone ([`Command::run`]), or with the other
/// results of its group ([`together::judge_together`], on PostgreSQL).
pub(super) struct Recording {
    billing: Option<Arc<Billing>>,
    result: Arc<OwnedResult>,
    judging: Judging,
    reference: Arc<Reference>,
    verdicts: Arc<Verdicts>,
    compare: Comparison,
    reply: Reply<Attempt, StorageError>,
}

impl Command for Recording {
    fn run(&mut self, db: &dyn Db) -> bool {
        let result = ReturnedResult {
            lease: self.result.lease,
            wallet: self.result.wallet,
            output: &self.result.output,
            spot_check: self.result.spot_check,
        };
        let outcome = record_in(
            db,
            self.billing.as_deref(),
            &result,
            self.judging,
            &self.reference,
            &self.verdicts,
            &*self.compare,
        );
        // Asking for a comparison or the reference run writes nothing.
        let keep = matches!(outcome, Ok(Attempt::Done(..)));
        self.reply.set(outcome);
        keep
    }

    fn together(&mut self) -> Option<Together<'_>> {
        Some(Together::Result(self))
    }

    fn fail(&mut self, error: StorageError) {
        self.reply.fail(error);
    }

    fn reply(self: Box<Self>, commit: Option<&GroupError>) {
        self.reply.send(commit);
    }
}

/// [`Storage::audit_units`] on one connection.
fn audit_units_in(db: &dyn Db, job: &str) -> Result<Vec<UnitAudit>, StorageError> {
    let units = db.query_all(
        "SELECT id, idx, state, output,
                (SELECT COUNT(*) FROM leases WHERE unit_id = units.id AND state = 'active') AS active
         FROM units WHERE job_id = ?1 ORDER BY idx",
        params![job],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<i64>(1)?,
                r.get::<String>(2)?,
                r.get::<Option<Vec<u8>>>(3)?,
                r.get::<i64>(4)?,
            ))
        },
    )?;
    let mut audit = Vec::with_capacity(units.len());
    for (id, idx, state, output, active) in units {
        let mut valid_outputs = Vec::new();
        let mut valid_wallets = Vec::new();
        let mut valid_paid_micro = Vec::new();
        let mut result_wallets = Vec::new();
        db.for_each_row(
            // The result whose output its unit took keeps none of its own.
            "SELECT wallet, verdict, paid_micro,
                    COALESCE(output, (SELECT output FROM units WHERE units.id = leases.unit_id))
                        AS output
             FROM leases WHERE unit_id = ?1 AND verdict IS NOT NULL
             ORDER BY received_ms, rowid",
            params![id],
            &mut |r| {
                let wallet: String = r.get(0)?;
                if r.get::<String>(1)? == "valid" {
                    valid_outputs.push(r.get(3)?);
                    valid_wallets.push(wallet.clone());
                    valid_paid_micro.push(
                        u64::try_from(r.get::<i64>(2)?).map_err(|_| {
                            StorageError::Corrupt("a result's pay is negative".into())
                        })?,
                    );
                }
                result_wallets.push(wallet);
                Ok(())
            },
        )?;
        audit.push(UnitAudit {
            id,
            idx,
            done: state == "done",
            state,
            valid_wallets,
            valid_paid_micro,
            output,
            valid_outputs,
            result_wallets,
            active_leases: active,
        });
    }
    Ok(audit)
}
