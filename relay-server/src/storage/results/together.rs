//! A PostgreSQL group's returned results judged together: their snapshots loaded in one
//! statement, each judged in turn with what the ones before it changed carried in memory
//! (the job's count and what its escrow owes, the wallet's standing), and what they
//! decided written with one statement per table.
//!
//! Why: a statement's own cost on the server (parsing its message, planning, executing,
//! answering) is most of what a unit's writes cost, whatever it changes, and the server's
//! CPU is what every relay shares.
//! Written one unit at a time, a settled unit was eight statements; a group's settled units
//! are eight statements however many there are (up to [`ROWS`](crate::storage::many_rows::ROWS) to a statement).
//!
//! Only the plain cases are judged here: a result that settles its unit with every result
//! judged valid (alone, or with its unit's earlier replicas, which are loaded for all of
//! the group's units in one more statement), a result that leaves its unit waiting for
//! more replicas with none judged, or one that changes nothing (stale, or needing a
//! comparison or the reference run first). Anything else (a result judged invalid, a
//! known-answer test, a unit met twice in the group, an escrow that cannot pay) is left to
//! be judged alone after these, by [`record_in`](super::record_in), on a snapshot that then
//! includes what this wrote; that is one order the group's commands could have run in.

use super::{read_snapshot, Attempt, Recording, ANSWERED_COLUMNS, ANSWERED_FROM, ANSWERED_WIDTH};
use crate::lifecycle::billing::decide_accrual;
use crate::lifecycle::settle::{
    decide_settle, Recorded, Replica, ReturnedResult, SettleDecision, SettleSnapshot, Slot, Stored,
    Terms, UnitFate, WalletStanding,
};
use crate::storage::many_rows::{write_rows, write_rows_returning, Param};
use crate::storage::sql::{Cell, Db};
use crate::storage::{now_ms, others, wallets, StorageError};
use crate::validation::trust::Reliability;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

/// Everything judging needs for each of a list of leases (`?1`: their ids, space
/// separated), with the lease's id last.
static ANSWERED_MANY_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, leases.id {ANSWERED_FROM}
         WHERE leases.id IN (SELECT unnest(string_to_array(?1, ' ')))",
        *ANSWERED_COLUMNS
    )
});

/// The results of a list of units (`?1`: their ids, space separated) that are pending or
/// judged invalid, as `load_settle` reads one unit's, each with its wallet's standing
/// overall and on its job's kernel; in the order they are judged.
const REPLICAS_MANY_SQL: &str =
    "SELECT leases.unit_id, leases.id, leases.wallet, leases.output, leases.spot_check,
            leases.trusted, leases.verdict, leases.received_ms, leases.rowid, leases.site,
            COALESCE(leases.vetted, 0),
            wallets.error_rate, wallets.valid, wallets.invalid,
            on_kernel.error_rate, on_kernel.valid, on_kernel.invalid
     FROM leases JOIN units ON units.id = leases.unit_id JOIN jobs ON jobs.id = units.job_id
          LEFT JOIN wallets ON wallets.address = leases.wallet
          LEFT JOIN wallet_kernels AS on_kernel
              ON on_kernel.wallet = leases.wallet AND on_kernel.kernel = jobs.kernel
     WHERE leases.unit_id IN (SELECT unnest(string_to_array(?1, ' ')))
       AND leases.state = 'returned' AND leases.verdict IN ('pending', 'invalid')
     ORDER BY leases.received_ms, leases.rowid";

/// A unit's results so far, as [`REPLICAS_MANY_SQL`] loads them.
#[derive(Default)]
struct Replicas {
    pending: Vec<Replica>,
    /// Each pending result's wallet's standing, by its lease.
    standings: HashMap<String, WalletStanding>,
    /// Results judged invalid of vetted wallets.
    vetted_invalid: u32,
}

/// Locks the units of a list of results (`?1`: their lease ids, space separated), in key
/// order.
const LOCK_UNITS: &str = "SELECT units.id FROM units
     WHERE units.id IN (SELECT leases.unit_id FROM leases
                        WHERE leases.id IN (SELECT unnest(string_to_array(?1, ' '))))
     ORDER BY units.id FOR UPDATE OF units";

/// Gives each wallet of a list (`?1`, space separated) and each (wallet, kernel) of two
/// (`?2`, `?3`) that has no row yet a new one (`?4`: a new wallet's error rate, `?5`: now),
/// so that two relays judging a new wallet at once write its standing one after the other.
const NEW_WALLETS: &str = "WITH new_wallets AS (
       INSERT INTO wallets (address, error_rate, first_seen_ms, updated_ms)
       SELECT address, ?4::float8, ?5::bigint, ?5::bigint
       FROM unnest(string_to_array(?1, ' ')) AS address
       ON CONFLICT (address) DO NOTHING)
     INSERT INTO wallet_kernels (wallet, kernel, error_rate)
     SELECT wallet, kernel, ?4::float8
     FROM unnest(string_to_array(?2, ' '), string_to_array(?3, ' ')) AS on_kernel (wallet, kernel)
     ON CONFLICT (wallet, kernel) DO NOTHING";

/// Locks and reads the standing of each wallet of a list (`?1`, space separated), then of
/// each (wallet, kernel) of two (`?2`, `?3`), each in key order: the address, the kernel
/// ('' for a wallet's overall standing), the error rate, valid and invalid results.
const LOCK_WALLETS: &str = "WITH total AS (
       SELECT address, error_rate, valid, invalid FROM wallets
       WHERE address = ANY(string_to_array(?1, ' '))
       ORDER BY address FOR UPDATE),
     on_kernel AS (
       SELECT wallet, kernel, error_rate, valid, invalid FROM wallet_kernels
       WHERE (wallet, kernel) IN
             (SELECT * FROM unnest(string_to_array(?2, ' '), string_to_array(?3, ' ')))
       ORDER BY wallet, kernel FOR UPDATE)
     SELECT address, '', error_rate, valid, invalid FROM total
     UNION ALL SELECT wallet, kernel, error_rate, valid, invalid FROM on_kernel";

/// The standings of the wallets a group may judge, overall and on kernels, as
/// [`LOCK_WALLETS`] read them.
#[derive(Default)]
struct Locked {
    total: HashMap<String, Reliability>,
    on_kernel: HashMap<(String, String), Reliability>,
}

impl Locked {
    /// Locks the wallets that judging `loaded` (with its units' `replicas`) may change the
    /// standing of (each result's own, and its unit's pending replicas'), giving those
    /// that have none a row (after locking those that have one), and reads their
    /// standings.
    fn wallets(
        db: &dyn Db,
        loaded: &HashMap<String, (SettleSnapshot, bool)>,
        replicas: &HashMap<String, Replicas>,
        now: i64,
    ) -> Result<Self, StorageError> {
        let mut on_kernel: BTreeSet<(&str, &str)> = BTreeSet::new();
        for (snapshot, _) in loaded.values() {
            on_kernel.insert((&snapshot.wallet, &snapshot.kernel));
            for replica in replicas.get(&snapshot.unit).iter().flat_map(|r| &r.pending) {
                on_kernel.insert((&replica.wallet, &snapshot.kernel));
            }
        }
        let mut locked = Self::default();
        if on_kernel.is_empty() {
            return Ok(locked);
        }
        let total: BTreeSet<&str> = on_kernel.iter().map(|(wallet, _)| *wallet).collect();
        locked.lock(db, &total, &on_kernel)?;
        // Rows are made only for what had none (a network's wallets mostly have theirs),
        // in key order, then locked: a group that makes a row another group is making
        // waits for that one's commit, and neither waits for the other holding a row
        // that the other waits for (each locks the rows it found before making any).
        let total: BTreeSet<&str> = total
            .into_iter()
            .filter(|wallet| !locked.total.contains_key(*wallet))
            .collect();
        let on_kernel: BTreeSet<(&str, &str)> = on_kernel
            .into_iter()
            .filter(|&(wallet, kernel)| {
                !locked
                    .on_kernel
                    .contains_key(&(wallet.to_owned(), kernel.to_owned()))
            })
            .collect();
        if total.is_empty() && on_kernel.is_empty() {
            return Ok(locked);
        }
        let (wallets, kernels) = pairs(&on_kernel);
        db.write(
            NEW_WALLETS,
            crate::storage::sql::params![
                spaced(&total),
                wallets,
                kernels,
                Reliability::default().error_rate,
                now
            ],
        )?;
        locked.lock(db, &total, &on_kernel)?;
        Ok(locked)
    }

    /// Locks the rows there are of the standings of `total` wallets and of `on_kernel`
    /// (wallet, kernel) pairs and reads them.
    fn lock(
        &mut self,
        db: &dyn Db,
        total: &BTreeSet<&str>,
        on_kernel: &BTreeSet<(&str, &str)>,
    ) -> Result<(), StorageError> {
        let (total, (wallets, kernels)) = (spaced(total), pairs(on_kernel));
        db.for_each_row(
            LOCK_WALLETS,
            crate::storage::sql::params![total, wallets, kernels],
            &mut |r| {
                let (wallet, kernel): (String, String) = (r.get(0)?, r.get(1)?);
                let standing = wallets::reliability_of(r.get(2)?, r.get(3)?, r.get(4)?);
                if kernel.is_empty() {
                    self.total.insert(wallet, standing);
                } else {
                    self.on_kernel.insert((wallet, kernel), standing);
                }
                Ok(())
            },
        )
    }

    /// `wallet`'s standing as locked, overall and on `kernel`, where it was read.
    fn standing(&self, wallet: &str, kernel: &str, loaded: WalletStanding) -> WalletStanding {
        WalletStanding {
            total: self.total.get(wallet).copied().unwrap_or(loaded.total),
            kernel: self
                .on_kernel
                .get(&(wallet.to_owned(), kernel.to_owned()))
                .copied()
                .unwrap_or(loaded.kernel),
        }
    }
}

/// `words`, space separated, in order.
fn spaced(words: &BTreeSet<&str>) -> String {
    words.iter().copied().collect::<Vec<_>>().join(" ")
}

/// The wallets and the kernels of (wallet, kernel) pairs, each space separated, in the
/// pairs' order.
fn pairs(on_kernel: &BTreeSet<(&str, &str)>) -> (String, String) {
    let (wallets, kernels): (Vec<&str>, Vec<&str>) = on_kernel.iter().copied().unzip();
    (wallets.join(" "), kernels.join(" "))
}

/// The pending and invalid results of `units`, by unit.
fn load_replicas(db: &dyn Db, units: &[&str]) -> Result<HashMap<String, Replicas>, StorageError> {
    let mut loaded: HashMap<String, Replicas> = HashMap::new();
    if units.is_empty() {
        return Ok(loaded);
    }
    db.for_each_row(
        REPLICAS_MANY_SQL,
        crate::storage::sql::params![units.join(" ")],
        &mut |r| {
            let unit = loaded.entry(r.get(0)?).or_default();
            if r.cell(6)? == Cell::Text("invalid") {
                // Invalid results only count toward the limit, and only vetted wallets'.
                if r.get::<bool>(10)? {
                    unit.vetted_invalid = unit.vetted_invalid.saturating_add(1);
                }
                return Ok(());
            }
            let lease: String = r.get(1)?;
            unit.standings.insert(
                lease.clone(),
                WalletStanding {
                    total: wallets::reliability_of(r.get(11)?, r.get(12)?, r.get(13)?),
                    kernel: wallets::reliability_of(r.get(14)?, r.get(15)?, r.get(16)?),
                },
            );
            unit.pending.push(Replica {
                lease,
                wallet: r.get(2)?,
                output: r.get(3)?,
                spot_check: r.get(4)?,
                trusted: r.get(5)?,
                received_ms: r.get(7)?,
                order: r.get(8)?,
                site: r.get(9)?,
                vetted: r.get(10)?,
            });
            Ok(())
        },
    )?;
    Ok(loaded)
}

/// The units and leases met so far (judged here or not): a second result for either is
/// judged alone. What the results judged so far changed is in [`Rows`], which the ones
/// after them read.
#[derive(Default)]
struct Met {
    units: HashSet<String>,
    leases: HashSet<String>,
}

/// A judged result as its lease's row stores it.
struct StoredResult<'a> {
    lease: &'a str,
    stored: Stored,
    /// Its output, when it is not its unit's.
    output: Option<&'a [u8]>,
    spot_check: Option<bool>,
}

/// The rows the group's judged results write, by table, keyed in the order their rows are
/// written (and so locked).
#[derive(Default)]
struct Rows<'a> {
    leases: Vec<StoredResult<'a>>,
    /// Wallet: its standing after the group, and whether any of the group's judgments
    /// quarantined it (a quarantine stays).
    wallets: BTreeMap<String, (Reliability, bool)>,
    on_kernel: BTreeMap<(String, String), Reliability>,
    /// Unit id and its output.
    units: Vec<(String, Cow<'a, [u8]>)>,
    /// Replicas judged valid with this group's results: lease, what it earned, whether
    /// its output became its unit's.
    marked: Vec<(String, i64, bool)>,
    /// Unit id, the results it wants out or pending, and its results newly counted as
    /// failed: units left open.
    reopened: Vec<(String, i64, i64)>,
    /// Units whose other leases are voided.
    voided: Vec<String>,
    counters: Counters,
}

/// What a group's judged results add to the counters that every result of a job adds to
/// (its progress, what its escrow owes, each payee's accruals): written last in the
/// group's transaction, after its leases are drawn, so that another relay's group adding
/// to the same job waits for this one's COMMIT and not for its draws too.
#[derive(Default)]
pub(in crate::storage) struct Counters {
    /// Job: micro-credits its escrow came to owe.
    accrued: BTreeMap<String, i64>,
    /// (job, reason, account): micro-credits and units. In the order a payout locks them
    /// (`ledger::payable`), which takes them before what jobs owe, as this does.
    accruals: BTreeMap<(String, &'static str, String), (i64, i64)>,
    /// Job: units settled.
    jobs: BTreeMap<String, i64>,
    now: i64,
}

/// Judges the results of `recordings` that the plain cases cover, writes what they
/// decided but for the counters they add to (returned, for [`write_counters`] at the end
/// of the transaction), and sets their outcomes; says which it judged (the others are left
/// to be recorded alone). An error leaves the transaction to be rolled back.
pub(in crate::storage) fn judge_together(
    db: &dyn Db,
    recordings: &mut [(usize, &mut Recording)],
) -> Result<(Vec<bool>, Counters), StorageError> {
    let leases: Vec<String> = recordings
        .iter()
        .map(|(_, r)| r.result.lease.to_string())
        .collect();
    let now = now_ms();
    // Relays judge results at once (sharing the write turn), so the rows judging reads
    // and then writes are locked first, each kind in key order, units before wallets, by
    // every group alike, so that no two groups wait for each other. The units are locked
    // before anything of them is read (sent with the first read, which then sees whatever
    // a group that held them committed); the wallets once the results and replicas name
    // them, and their standings read again as locked.
    let ids = leases.join(" ");
    db.write(LOCK_UNITS, crate::storage::sql::params![ids])?;
    let mut loaded: HashMap<String, (SettleSnapshot, bool)> = HashMap::new();
    db.for_each_row(
        &ANSWERED_MANY_SQL,
        crate::storage::sql::params![ids],
        &mut |r| {
            let lease: String = r.get(ANSWERED_WIDTH)?;
            loaded.insert(lease, read_snapshot(r)?);
            Ok(())
        },
    )?;
    // Units with results before these (a replica's, in a quorum of two or more).
    let replicated: Vec<&str> = loaded
        .values()
        .filter(|(snapshot, replicated)| *replicated && !snapshot.known_answer)
        .map(|(snapshot, _)| snapshot.unit.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut replicas = load_replicas(db, &replicated)?;
    let locked = Locked::wallets(db, &loaded, &replicas, now)?;
    let mut met = Met::default();
    let mut rows = Rows::default();
    let mut judged = vec![false; recordings.len()];
    let mut outcomes: Vec<Option<Attempt>> = (0..recordings.len()).map(|_| None).collect();
    for (n, (_, recording)) in recordings.iter().enumerate() {
        let lease = leases[n].as_str();
        if !met.leases.insert(lease.to_owned()) {
            // Its lease's result is already in this group: judged after it, alone.
            continue;
        }
        let Some((mut snapshot, replicated)) = loaded.remove(lease) else {
            outcomes[n] = Some(Attempt::Done(
                Recorded::Stale("no such lease"),
                Vec::new(),
                Vec::new(),
            ));
            continue;
        };
        if !met.units.insert(snapshot.unit.clone()) || snapshot.known_answer {
            continue;
        }
        snapshot.standing = locked.standing(&snapshot.wallet, &snapshot.kernel, snapshot.standing);
        let mut standings = HashMap::new();
        if replicated {
            let Some(unit) = replicas.remove(&snapshot.unit) else {
                continue;
            };
            snapshot.replicas = unit.pending;
            snapshot.vetted_invalid = unit.vetted_invalid;
            standings = unit.standings;
            for replica in &snapshot.replicas {
                if let Some(standing) = standings.get_mut(&replica.lease) {
                    *standing = locked.standing(&replica.wallet, &snapshot.kernel, *standing);
                }
            }
        }
        if let Some(&done) = rows.counters.jobs.get(&snapshot.job) {
            snapshot.units_done = snapshot.units_done.saturating_add(done);
        }
        if let Some(&owed) = rows.counters.accrued.get(&snapshot.job) {
            snapshot.escrow.owed = snapshot.escrow.owed.saturating_add(owed);
        }
        if let Some((standing, _)) = rows.wallets.get(&snapshot.wallet) {
            snapshot.standing.total = *standing;
        }
        let on_kernel = (snapshot.wallet.clone(), snapshot.kernel.clone());
        if let Some(standing) = rows.on_kernel.get(&on_kernel) {
            snapshot.standing.kernel = *standing;
        }
        let wallet = recording.result.wallet.to_string();
        let result = ReturnedResult {
            lease: recording.result.lease,
            wallet: recording.result.wallet,
            output: &recording.result.output,
            spot_check: recording.result.spot_check,
        };
        let terms = Terms {
            judging: recording.judging,
            pricing: recording.billing.as_deref().map(|b| &b.pricing),
            reference: &recording.reference,
            verdicts: &recording.verdicts,
            compare: &*recording.compare,
            now_ms: now,
        };
        let Ok(decision) = decide_settle(&snapshot, &result, &wallet, &terms) else {
            continue;
        };
        let judgment = match decision {
            SettleDecision::Stale(why) => {
                outcomes[n] = Some(Attempt::Done(Recorded::Stale(why), Vec::new(), Vec::new()));
                continue;
            }
            SettleDecision::Compare(pairs) => {
                outcomes[n] = Some(Attempt::Compare(pairs));
                continue;
            }
            SettleDecision::NeedsReference => {
                outcomes[n] = Some(Attempt::Reference);
                continue;
            }
            SettleDecision::KnownAnswer { .. } => continue,
            SettleDecision::Judged(judgment) => *judgment,
        };
        if let UnitFate::Reopened { wanted, attempts } = judgment.unit {
            // A replica waiting for the others (quorum 2 and up): its lease's row and its
            // unit's wants, and no wallet, price or job touched.
            if !judgment.rulings.is_empty() {
                continue;
            }
            let this = judgment.this;
            rows.leases.push(StoredResult {
                lease,
                stored: this,
                output: (!this.canonical).then_some(recording.result.output.as_slice()),
                spot_check: recording.result.spot_check,
            });
            rows.reopened
                .push((snapshot.unit.clone(), wanted, attempts));
            outcomes[n] = Some(Attempt::Done(judgment.recorded, Vec::new(), Vec::new()));
            continue;
        }
        let UnitFate::Settled {
            canonical,
            payment,
            void_others,
        } = &judgment.unit
        else {
            continue;
        };
        // Every result judged valid (a quorum that agreed): one judged invalid is judged
        // alone, which also tells the other relays that its wallet lied.
        if !judgment.rulings.iter().all(|r| r.valid) {
            continue;
        }
        let output: Cow<'_, [u8]> = match canonical {
            Slot::This => Cow::Borrowed(recording.result.output.as_slice()),
            Slot::Replica(i) => match snapshot.replicas.get(*i) {
                Some(replica) => Cow::Owned(replica.output.clone()),
                None => continue,
            },
        };
        // Each judged wallet, its standing before (as the results before this one left
        // it), and its address for the in-memory standings.
        let mut judged_wallets = Vec::new();
        for ruling in &judgment.rulings {
            judged_wallets.push(match ruling.slot {
                Slot::This => (
                    wallet.clone(),
                    snapshot.standing,
                    Some(recording.result.wallet),
                ),
                Slot::Replica(i) => {
                    let Some(replica) = snapshot.replicas.get(i) else {
                        break;
                    };
                    let Some(&loaded) = standings.get(&replica.lease) else {
                        break;
                    };
                    let mut before = loaded;
                    if let Some((standing, _)) = rows.wallets.get(&replica.wallet) {
                        before.total = *standing;
                    }
                    let key = (replica.wallet.clone(), snapshot.kernel.clone());
                    if let Some(standing) = rows.on_kernel.get(&key) {
                        before.kernel = *standing;
                    }
                    (replica.wallet.clone(), before, replica.wallet.parse().ok())
                }
            });
        }
        if judged_wallets.len() != judgment.rulings.len() {
            continue;
        }
        let accrual = match payment {
            Some(p) => match decide_accrual(&p.split, &p.wallets, p.site.as_ref(), snapshot.escrow)
            {
                Ok(accrual) => accrual,
                // An escrow that cannot pay fails the result's command, alone.
                Err(_) => continue,
            },
            None => None,
        };
        // `decide_accrual` checked that every amount fits.
        let (price, parts) = match &accrual {
            Some(accrual) => (
                i64::try_from(accrual.price.0).unwrap_or(i64::MAX),
                accrual
                    .parts
                    .iter()
                    .map(|part| {
                        let micro = i64::try_from(part.amount.0).unwrap_or(i64::MAX);
                        (part.account.to_string(), part.reason.as_str(), micro)
                    })
                    .collect(),
            ),
            None => (0, Vec::new()),
        };

        // Decided: its rows, and what the results after it see.
        let mut standings_after = Vec::new();
        for (judged, (wallet, mut standing, address)) in judged_wallets.into_iter().enumerate() {
            standing.total.record_valid();
            standing.kernel.record_valid();
            let quarantined =
                rows.wallets.get(&wallet).is_some_and(|(_, q)| *q) || standing.total.quarantined();
            rows.wallets
                .insert(wallet.clone(), (standing.total, quarantined));
            rows.on_kernel
                .insert((wallet, snapshot.kernel.clone()), standing.kernel);
            standings_after.extend(address.map(|a| (a, standing.total)));
            if let Slot::Replica(i) = judgment.rulings[judged].slot {
                let ruling = &judgment.rulings[judged];
                rows.marked.push((
                    snapshot.replicas[i].lease.clone(),
                    ruling.paid_micro,
                    ruling.canonical,
                ));
            }
        }
        let this = judgment.this;
        rows.leases.push(StoredResult {
            lease,
            stored: this,
            output: (!this.canonical).then_some(recording.result.output.as_slice()),
            spot_check: recording.result.spot_check,
        });
        rows.units.push((snapshot.unit.clone(), output));
        if price > 0 {
            *rows
                .counters
                .accrued
                .entry(snapshot.job.clone())
                .or_default() += price;
        }
        for (account, reason, micro) in parts {
            let row = rows
                .counters
                .accruals
                .entry((snapshot.job.clone(), reason, account))
                .or_default();
            row.0 += micro;
            row.1 += 1;
        }
        if *void_others {
            rows.voided.push(snapshot.unit.clone());
        }
        *rows.counters.jobs.entry(snapshot.job.clone()).or_default() += 1;
        outcomes[n] = Some(Attempt::Done(
            judgment.recorded,
            Vec::new(),
            standings_after,
        ));
    }
    write(db, &rows, now)?;
    let counters = Counters {
        now,
        ..rows.counters
    };
    for (n, outcome) in outcomes.into_iter().enumerate() {
        if let Some(outcome) = outcome {
            recordings[n].1.reply.set(Ok(outcome));
            judged[n] = true;
        }
    }
    Ok((judged, counters))
}

/// One statement per table (per [`ROWS`](crate::storage::many_rows::ROWS) rows) for what the group's judged results
/// decided.
fn write(db: &dyn Db, rows: &Rows<'_>, now: i64) -> Result<(), StorageError> {
    let leases: Vec<Vec<Param<'_>>> = rows
        .leases
        .iter()
        .map(
            |StoredResult {
                 lease,
                 stored,
                 output,
                 spot_check,
             }| {
                vec![
                    Param::Text((*lease).to_owned()),
                    Param::Text(stored.verdict.as_str().to_owned()),
                    Param::Blob(*output),
                    Param::Int(spot_check.map(i64::from)),
                    Param::Int(Some(i64::from(stored.trusted))),
                    Param::Int(Some(stored.paid_micro)),
                    Param::Int(Some(i64::from(stored.vetted))),
                ]
            },
        )
        .collect();
    write_rows(
        db,
        &leases,
        &[now],
        "UPDATE leases SET state = 'returned', verdict = v.verdict, output = v.output,
             spot_check = v.spot_check, trusted = v.trusted, received_ms = ?1,
             paid_micro = v.paid_micro, vetted = v.vetted
         FROM (VALUES {}) AS v (id, verdict, output, spot_check, trusted, paid_micro, vetted)
         WHERE leases.id = v.id",
        &[
            "text", "text", "bytea", "bigint", "bigint", "bigint", "bigint",
        ],
    )?;
    let marked: Vec<Vec<Param<'_>>> = rows
        .marked
        .iter()
        .map(|(lease, paid_micro, canonical)| {
            vec![
                Param::Text(lease.clone()),
                Param::Int(Some(*paid_micro)),
                Param::Int(Some(i64::from(*canonical))),
            ]
        })
        .collect();
    // As `mark`: a canonical output is its unit's now, which holds the only copy.
    write_rows(
        db,
        &marked,
        &[],
        "UPDATE leases SET verdict = 'valid', paid_micro = v.paid_micro,
             output = CASE WHEN v.canonical = 1 THEN NULL ELSE leases.output END
         FROM (VALUES {}) AS v (id, paid_micro, canonical) WHERE leases.id = v.id",
        &["text", "bigint", "bigint"],
    )?;
    let wallets: Vec<Vec<Param<'_>>> = rows
        .wallets
        .iter()
        .map(|(wallet, (r, quarantined))| {
            vec![
                Param::Text(wallet.clone()),
                Param::Real(r.error_rate),
                Param::Int(Some(i64::from(r.valid))),
                Param::Int(Some(i64::from(r.invalid))),
                Param::Int(Some(i64::from(*quarantined))),
            ]
        })
        .collect();
    write_rows(
        db,
        &wallets,
        &[now],
        &format!(
            "INSERT INTO wallets (address, error_rate, valid, invalid, quarantined, first_seen_ms,
                                  updated_ms)
             SELECT v.address, v.error_rate, v.valid, v.invalid, v.quarantined, ?1, ?1
             FROM (VALUES {{}}) AS v (address, error_rate, valid, invalid, quarantined)
             ON CONFLICT (address) DO UPDATE SET error_rate = excluded.error_rate,
                 valid = excluded.valid, invalid = excluded.invalid,
                 quarantined = GREATEST(wallets.quarantined, excluded.quarantined), {}",
            others::touch("wallets", "?1")
        ),
        &["text", "float8", "bigint", "bigint", "bigint"],
    )?;
    let on_kernel: Vec<Vec<Param<'_>>> = rows
        .on_kernel
        .iter()
        .map(|((wallet, kernel), r)| {
            vec![
                Param::Text(wallet.clone()),
                Param::Text(kernel.clone()),
                Param::Real(r.error_rate),
                Param::Int(Some(i64::from(r.valid))),
                Param::Int(Some(i64::from(r.invalid))),
            ]
        })
        .collect();
    write_rows(
        db,
        &on_kernel,
        &[],
        "INSERT INTO wallet_kernels (wallet, kernel, error_rate, valid, invalid)
         SELECT * FROM (VALUES {}) AS v (wallet, kernel, error_rate, valid, invalid)
         ON CONFLICT (wallet, kernel) DO UPDATE SET error_rate = excluded.error_rate,
             valid = excluded.valid, invalid = excluded.invalid",
        &["text", "text", "float8", "bigint", "bigint"],
    )?;
    let units: Vec<Vec<Param<'_>>> = rows
        .units
        .iter()
        .map(|(id, output)| vec![Param::Text(id.clone()), Param::Blob(Some(output.as_ref()))])
        .collect();
    write_rows(
        db,
        &units,
        &[],
        "UPDATE units SET state = 'done', output = v.output
         FROM (VALUES {}) AS v (id, output) WHERE units.id = v.id",
        &["text", "bytea"],
    )?;
    let reopened: Vec<Vec<Param<'_>>> = rows
        .reopened
        .iter()
        .map(|(id, wanted, attempts)| {
            vec![
                Param::Text(id.clone()),
                Param::Int(Some(*wanted)),
                Param::Int(Some(*attempts)),
            ]
        })
        .collect();
    // As `refresh_unit` after the unit's wants, with the leases' rows written above.
    write_rows(
        db,
        &reopened,
        &[],
        concat!(
            "UPDATE units SET wanted = v.wanted, attempts = units.attempts + v.attempts,
             state = CASE WHEN units.state NOT IN ('queued', 'leased') THEN units.state
                          WHEN ",
            replicas_out!(),
            " >= v.wanted THEN 'leased'
                          ELSE 'queued' END
         FROM (VALUES {}) AS v (id, wanted, attempts) WHERE units.id = v.id"
        ),
        &["text", "bigint", "bigint"],
    )?;
    if !rows.voided.is_empty() {
        db.write(
            "UPDATE leases SET state = 'void'
             WHERE state = 'active' AND unit_id = ANY(string_to_array(?1, ' '))",
            crate::storage::sql::params![rows.voided.join(" ")],
        )?;
    }
    Ok(())
}

/// Writes what a group's judged results added to each job's counters (see [`Counters`]):
/// accruals, then what jobs owe, then their progress, each table's rows in key order (as
/// a payout locks the first two). Returns the jobs this group's units completed.
///
/// Which group completes a job is read back from the write, not judged from the progress
/// its results loaded: two groups settling a job's last units at once (two relays, or
/// two connections of one) each load the other's progress from before, so neither would
/// see the job complete. The second one's write waits for the first's commit and adds to
/// what it left.
pub(in crate::storage) fn write_counters(
    db: &dyn Db,
    counters: &Counters,
) -> Result<Vec<String>, StorageError> {
    let accruals: Vec<Vec<Param<'_>>> = counters
        .accruals
        .iter()
        .map(|((job, reason, account), (micro, units))| {
            vec![
                Param::Text(job.clone()),
                Param::Text(account.clone()),
                Param::Text((*reason).to_owned()),
                Param::Int(Some(*micro)),
                Param::Int(Some(*units)),
            ]
        })
        .collect();
    write_rows(
        db,
        &accruals,
        &[],
        "INSERT INTO accruals (job_id, account, reason, micro, units)
         SELECT * FROM (VALUES {}) AS v (job_id, account, reason, micro, units)
         ON CONFLICT (job_id, account, reason)
         DO UPDATE SET micro = accruals.micro + excluded.micro,
             units = accruals.units + excluded.units",
        &["text", "text", "text", "bigint", "bigint"],
    )?;
    let accrued: Vec<Vec<Param<'_>>> = counters
        .accrued
        .iter()
        .map(|(job, micro)| vec![Param::Text(job.clone()), Param::Int(Some(*micro))])
        .collect();
    write_rows(
        db,
        &accrued,
        &[],
        "INSERT INTO accrued_jobs (job_id, micro)
         SELECT * FROM (VALUES {}) AS v (job_id, micro)
         ON CONFLICT (job_id) DO UPDATE SET micro = accrued_jobs.micro + excluded.micro",
        &["text", "bigint"],
    )?;
    let jobs: Vec<Vec<Param<'_>>> = counters
        .jobs
        .iter()
        .map(|(job, n)| vec![Param::Text(job.clone()), Param::Int(Some(*n))])
        .collect();
    let completed = write_rows_returning(
        db,
        &jobs,
        &[counters.now],
        &format!(
            "UPDATE jobs SET units_done = units_done + v.settled, {}
             FROM (VALUES {{}}) AS v (id, settled) WHERE jobs.id = v.id
             RETURNING jobs.id, jobs.units_done >= jobs.units_total
                               AND jobs.units_done - v.settled < jobs.units_total",
            others::touch("jobs", "?1")
        ),
        &["text", "bigint"],
        |r| Ok((r.get::<String>(0)?, r.get::<bool>(1)?)),
    )?;
    Ok(completed
        .into_iter()
        .filter_map(|(job, completed)| completed.then_some(job))
        .collect())
}

/// Tells the last of `recordings` that settled a unit of each job of `completed` that its
/// job is complete (see [`write_counters`]).
pub(in crate::storage) fn tell_completed(
    recordings: &mut [(usize, &mut Recording)],
    completed: &[String],
) {
    for job in completed {
        let mut valid = recordings.iter_mut().rev().filter_map(|(_, recording)| {
            match recording.reply.outcome_mut() {
                Some(Ok(Attempt::Done(
                    Recorded::Valid {
                        job: of,
                        job_complete,
                    },
                    _,
                    _,
                ))) if of.to_string() == *job => Some(job_complete),
                _ => None,
            }
        });
        if let Some(last) = valid.next() {
            *last = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ANSWERED_MANY_SQL;
    use crate::storage::sql::to_postgres;
    use sqlx::Connection as _;

    /// The load of a group's results, planned as the writer plans it (generic, on a
    /// network's first minute: `leases` empty) reaches each result's unit's other leases
    /// by the unit, never by reading a partial index of every active lease of the
    /// network: a cost that grows with the network, paid at every result until the plan
    /// is made again.
    #[tokio::test]
    async fn a_groups_results_load_each_units_leases_by_unit_whatever_the_plan_saw(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let url = crate::storage::test_postgres::Postgres::shared()?.database()?;
        let dir = std::env::temp_dir().join(format!("starling-plan-{}", uuid::Uuid::new_v4()));
        let storage = crate::storage::Storage::open_postgres(&url, &dir).await?;
        drop(storage);
        let mut db = sqlx::PgConnection::connect(&url).await?;
        for setting in [
            "SET plan_cache_mode = force_generic_plan",
            "SET enable_seqscan = off",
            "SET enable_bitmapscan = off",
            "SET enable_hashjoin = off",
            "SET enable_mergejoin = off",
        ] {
            sqlx::raw_sql(setting).execute(&mut db).await?;
        }
        let prepare = format!(
            "PREPARE answered (text) AS {}",
            to_postgres(&ANSWERED_MANY_SQL)
        );
        sqlx::raw_sql(&prepare).execute(&mut db).await?;
        let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE answered ('a b')")
            .fetch_all(&mut db)
            .await?;
        let _ = std::fs::remove_dir_all(&dir);
        let plan = plan.join("\n");
        assert!(!plan.contains("leases_active_by"), "{plan}");
        assert!(plan.contains("leases_by_unit"), "{plan}");
        Ok(())
    }
}
