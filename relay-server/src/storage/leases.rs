//! Leases: handing units out, taking them back when volunteers vanish or time out, and
//! known-answer (canary) leases of settled units.

use super::sql::{params, Db, Dialect, Row, ToParam};
use super::writer::{Command, GroupError, Reply, Together};
use super::{
    now_ms, parse_id, refresh_unit, LeaseContext, LeaseTerms, LeasedUnit, PeerId, Storage,
    StorageError, REFRESH_UNITS,
};
use crate::lifecycle::lease::{
    decide_work_lease, loss_counts, over_allowance, DrawnUnit, HandBack, LeaseDecision, NewLease,
};
use crate::validation::Network;
use std::sync::LazyLock;

use starling_protocol::{JobId, LeaseId, WalletAddress};

pub use crate::lifecycle::lease::REPEAT_AFTER_MS;

mod together;
pub(super) use together::lease_together;

/// Who asks for a lease, and on what terms.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRequest {
    /// The connection.
    pub peer: PeerId,
    /// The wallet behind it.
    pub wallet: WalletAddress,
    /// The embedding site it came through, for the site's share of payments.
    pub site: Option<WalletAddress>,
    /// The new lease's id.
    pub lease: LeaseId,
    /// How long it lasts.
    pub terms: LeaseTerms,
    /// The network its data comes from (`None`: an address that counts as its own).
    pub network: Option<Network>,
    /// Which of the oldest units it may have it gets, from 0 to 1: drawn at random by
    /// the caller, so that two wallets asking one after the other do not get the two
    /// replicas of one unit.
    pub draw: f64,
    /// Whether units of kernels submitters registered may go to it: only to a volunteer
    /// computing on a GPU (never the CPU fallback) that did not ask for built-ins only.
    pub custom_ok: bool,
}

/// Units a lease is drawn from: the oldest this many the volunteer may have. Wide enough
/// that a unit's next replica goes to one of many askers, narrow enough that jobs still
/// finish in the order they came.
pub const DRAW_FROM: i64 = 16;

/// Most (kernel, job quorum) pairs remembered for `quorum_for` (a few kernels times five
/// quorums in practice).
const QUORUM_HINTS: usize = 64;

/// Columns of a unit and its job that an assignment needs, as [`UnitRow::read`] reads them.
macro_rules! unit_columns {
    () => {
        "units.id, units.job_id, units.params, units.flops, units.quorum,
         jobs.kernel, jobs.params, jobs.quorum, jobs.state, jobs.quorum_explicit,
         jobs.created_ms"
    };
}

/// Units a volunteer may be leased, after `FROM`, for a statement binding ?1 its wallet,
/// ?2 its connection, ?3 when its hand-backs stop counting against a unit, ?4 its
/// network: queued units of live jobs that it holds or answered not, handed back not
/// lately, and that no live lease or result of its network touches (one network, one say
/// per unit). The rule is [`bars`](crate::lifecycle::lease::bars) in Rust, which a
/// PostgreSQL group's draws read ([`lease_together`]): the two change together.
///
/// On PostgreSQL (`eligible_units!(postgres)`) two fences keep the plan a walk of the
/// queued units in order, each checked by lookups, which is what the draw needs: the job
/// is looked up for each unit (`LATERAL … OFFSET 0`), and the check of the unit's leases
/// ends with `OFFSET 0`. Without them PostgreSQL may join either table, and a plan made
/// while it was nearly empty (as it is for the first leases of a new network, and a
/// prepared statement keeps its plan) reads all of it at every draw: every lease for
/// every unit the draw passes (1.6 ms a draw at 5 000 units), or every job ever stored.
macro_rules! eligible_units {
    () => {
        eligible_units!("FROM units JOIN jobs ON jobs.id = units.job_id", "")
    };
    (postgres) => {
        eligible_units!(
            "FROM units CROSS JOIN LATERAL
                (SELECT kernel, params, quorum, state, quorum_explicit, created_ms
                 FROM jobs WHERE jobs.id = units.job_id OFFSET 0) AS jobs",
            " OFFSET 0"
        )
    };
    ($from:literal, $fence:literal) => {
        concat!(
            $from,
            "
         WHERE units.state = 'queued' AND jobs.state IN ('queued', 'running')
           AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.unit_id = units.id
                           AND leases.state IN ('active', 'returned')
                           AND ((leases.state = 'active' AND (leases.wallet = ?1 OR leases.peer = ?2))
                                OR (leases.state = 'returned' AND leases.wallet = ?1)
                                OR leases.network = ?4)",
            $fence,
            ")
           -- Through `leases_handed_back` (its condition spelled as the index's): the
           -- unit's recent hand-backs, never its whole pile.
           AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.unit_id = units.id
                           AND (leases.state = 'released' OR leases.state = 'expired')
                           AND leases.issued_ms > ?3 AND leases.wallet = ?1",
            $fence,
            ")
           -- A registered kernel's id is its 64-digit content address; built-ins' are short.
           AND (?6 = 1 OR LENGTH(jobs.kernel) <> 64)"
        )
    };
}

/// A unit and its job, as selected for a lease.
#[derive(Clone)]
struct UnitRow {
    id: String,
    job_id: String,
    params: String,
    flops: i64,
    quorum: i64,
    kernel: String,
    job_params: String,
    job_quorum: i64,
    job_state: String,
    quorum_explicit: bool,
    job_created_ms: i64,
}

impl UnitRow {
    /// How many columns [`unit_columns!`] names: a statement's own columns follow.
    const COLUMNS: usize = 11;

    fn read(r: &dyn Row) -> Result<Self, StorageError> {
        Ok(Self {
            id: r.get(0)?,
            job_id: r.get(1)?,
            params: r.get(2)?,
            flops: r.get(3)?,
            quorum: r.get(4)?,
            kernel: r.get(5)?,
            job_params: r.get(6)?,
            job_quorum: r.get(7)?,
            job_state: r.get(8)?,
            quorum_explicit: r.get(9)?,
            job_created_ms: r.get(10)?,
        })
    }

    /// What deciding its lease needs, with its `wanted` and `outstanding` as drawn.
    fn drawn(&self, wanted: i64, outstanding: i64) -> DrawnUnit<'_> {
        DrawnUnit {
            quorum: self.quorum,
            wanted,
            outstanding,
            kernel: &self.kernel,
            job_quorum: self.job_quorum,
            quorum_explicit: self.quorum_explicit,
            job_state: &self.job_state,
            flops: self.flops,
        }
    }

    fn flops(&self) -> u64 {
        u64::try_from(self.flops).unwrap_or(0)
    }

    fn leased(
        self,
        lease: LeaseId,
        deadline_ms: i64,
        canary: bool,
    ) -> Result<LeasedUnit, StorageError> {
        Ok(LeasedUnit {
            lease,
            unit: parse_id(&self.id)?,
            job: parse_id(&self.job_id)?,
            flops: self.flops(),
            job_params: self.job_params,
            kernel: self.kernel,
            unit_params: self.params,
            deadline_ms,
            job_created_ms: self.job_created_ms,
            canary,
        })
    }
}

/// Inserts `request`'s lease of `unit`; `wallet` is its wallet's address, as text.
fn insert_lease(
    db: &dyn Db,
    relay: &str,
    request: &LeaseRequest,
    wallet: &str,
    unit: &str,
    kind: &str,
    deadline_ms: i64,
) -> Result<(), StorageError> {
    db.write(
        "INSERT INTO leases (id, unit_id, peer, wallet, site, kind, state, issued_ms, deadline_ms,
                             network, relay)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, ?8, ?9, ?10)",
        params![
            request.lease.to_string(),
            unit,
            request.peer.to_string(),
            wallet,
            request.site.map(|s| s.to_string()),
            kind,
            request.terms.start_ms,
            deadline_ms,
            request.network.map(|n| n.to_string()),
            relay,
        ],
    )?;
    Ok(())
}

/// What losing leases came to.
#[derive(Debug, Default)]
pub(crate) struct Lost {
    /// Each open unit that lost a lease: its id, job and the distinct wallets with a
    /// record that lost it so far (what fails a job past its limit).
    pub units: Vec<(String, JobId, i64)>,
    /// Wallets that went over their hand-back allowance with these losses, now
    /// quarantined.
    pub cut_off: Vec<WalletAddress>,
}

/// Marks `state` every active lease matched by `filter` (SQL over `leases`, one `?1`),
/// counts the losses against their wallets, and puts the units back in the queue. A loss
/// counts against the unit (toward failing its job) only the first time a wallet with
/// a valid result on record loses it: fresh wallets, which cost nothing to make, cannot
/// fail a job by dropping its units, and one wallet counts once however often it tries.
fn lose_leases(
    db: &dyn Db,
    state: &str,
    filter: &str,
    bind: &dyn ToParam,
    count: HandBack,
) -> Result<Lost, StorageError> {
    let leases = db.query_all(
        &format!(
            "UPDATE leases SET state = '{state}' WHERE state = 'active' AND {filter}
             RETURNING id, unit_id, wallet"
        ),
        params![bind],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
            ))
        },
    )?;
    let mut handbacks: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (_, _, wallet) in &leases {
        let n = handbacks.entry(wallet.as_str()).or_default();
        *n = count.charge(*n);
    }
    let mut lost = Lost::default();
    // Valid results on record, per wallet.
    let mut valid_of: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for (wallet, n) in handbacks {
        let standing = db.query_opt(
            "UPDATE wallets SET handbacks = handbacks + ?2 WHERE address = ?1
                 RETURNING handbacks, valid, quarantined",
            params![wallet, n],
            |r| Ok((r.get::<i64>(0)?, r.get::<i64>(1)?, r.get::<bool>(2)?)),
        )?;
        let (handbacks, valid, quarantined) = standing.unwrap_or((0, 0, false));
        if !quarantined && over_allowance(handbacks, valid) {
            db.write(
                "UPDATE wallets SET quarantined = 1, updated_ms = ?2 WHERE address = ?1",
                params![wallet, now_ms()],
            )?;
            super::others::tell_other_relays(db)?;
            lost.cut_off.push(parse_id(wallet)?);
        }
        valid_of.insert(wallet, valid);
    }
    for (lease, unit, wallet) in &leases {
        let valid = valid_of.get(wallet.as_str()).copied().unwrap_or(0);
        // Whether it lost the unit before matters only for a wallet with a record.
        let counts = valid > 0
            && loss_counts(
                valid,
                db.query_one(
                    "SELECT EXISTS (SELECT 1 FROM leases WHERE unit_id = ?1 AND wallet = ?2
                     AND id != ?3 AND (state = 'released' OR state = 'expired'))",
                    params![unit, wallet, lease],
                    |r| r.get::<bool>(0),
                )?,
            );
        // Canary leases point at settled units: losing one costs the unit nothing.
        let row = db.query_opt(
            "UPDATE units SET attempts = attempts + ?2
                 WHERE id = ?1 AND state IN ('queued', 'leased')
                 RETURNING job_id, attempts",
            params![unit, i64::from(counts)],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )?;
        if let Some((job, attempts)) = row {
            refresh_unit(db, unit)?;
            lost.units.push((unit.clone(), parse_id(&job)?, attempts));
        }
    }
    Ok(lost)
}

/// How long a relay may go without a heartbeat before relays sharing its database take
/// its volunteers' leases for lost: ten of the housekeeping's beats.
pub const RELAY_GONE_AFTER_MS: i64 = 5_000;

/// Relay rows kept after their relay was last seen, for whoever looks at the table.
const RELAY_FORGOTTEN_AFTER_MS: i64 = 24 * 60 * 60 * 1000;

fn heartbeat_in(db: &dyn Db, relay: &str, now: i64) -> Result<(), StorageError> {
    db.write(
        "INSERT INTO relays (id, seen_ms) VALUES (?1, ?2)
         ON CONFLICT (id) DO UPDATE SET seen_ms = excluded.seen_ms",
        params![relay, now],
    )?;
    Ok(())
}

/// Voids active leases whose relay was not seen since `now - RELAY_GONE_AFTER_MS` (or
/// that name none), refreshing their units; forgets relays gone for a day.
fn void_leases_of_stopped_relays(db: &dyn Db, now: i64) -> Result<u64, StorageError> {
    // Every lease has a peer: saying so is what lets PostgreSQL go through the active
    // leases' index (`leases_active_by_peer`, whose predicate says it) instead of every
    // lease there ever was.
    let units = db.query_all(
        "UPDATE leases SET state = 'void'
         WHERE state = 'active' AND peer IS NOT NULL
           AND (relay IS NULL
                OR relay NOT IN (SELECT id FROM relays WHERE seen_ms >= ?1))
         RETURNING unit_id",
        params![now - RELAY_GONE_AFTER_MS],
        |r| r.get::<String>(0),
    )?;
    for unit in &units {
        refresh_unit(db, unit)?;
    }
    db.write(
        "DELETE FROM relays WHERE seen_ms < ?1",
        params![now - RELAY_FORGOTTEN_AFTER_MS],
    )?;
    Ok(units.len() as u64)
}

/// What one try at a work lease came to.
enum WorkLease {
    /// Done: the unit leased, or `None` when nothing is leasable.
    Done(Option<LeasedUnit>),
    /// The unit's first lease needs `quorum_for(kernel, job quorum)`, which the caller
    /// did not evaluate; nothing was written.
    NeedsQuorum(String, u32),
}

/// An eligible unit with its `wanted` and outstanding leases, as [`load_drawn_unit`]
/// reads it (the statement goes on with more conditions).
macro_rules! pick_one_unit {
    ($($engine:ident)?) => {
        concat!(
            "SELECT ",
            unit_columns!(),
            ", units.wanted, ",
            replicas_out!(),
            " ",
            eligible_units!($($engine)?)
        )
    };
}

/// The drawn unit, as [`load_drawn_unit`] selects it (`?5`: how many to skip).
macro_rules! pick_unit {
    () => {
        concat!(pick_one_unit!(), " ORDER BY units.rowid LIMIT 1 OFFSET ?5")
    };
}

/// The draw on PostgreSQL, with the units to skip written into the statement. A prepared
/// statement is planned once for any parameters after a few runs, and for an `OFFSET`
/// parameter PostgreSQL plans to skip a tenth of the table, gathering and sorting every
/// queued unit (5.6 ms a lease against 0.05 ms); with the offset a constant, each of the
/// [`DRAW_FROM`] statements keeps the one good plan, the queued units' index in order.
/// `?5` stays bound (and unused) so that both spellings take the same parameters.
///
/// No row lock: relays write in turns (`writer::BEGIN_IN_TURN`), so while this
/// transaction runs no other relay's is open, and every statement sees all that any
/// relay committed. (`FOR UPDATE SKIP LOCKED` here locked each unit it skipped, a write
/// per unit: about 1 ms of a 15-unit draw.)
fn pick_at_offset(offset: i64) -> &'static str {
    static PICKS: LazyLock<Vec<String>> = LazyLock::new(|| {
        (0..DRAW_FROM)
            .map(|n| {
                format!(
                    "{} AND ?5 >= 0 ORDER BY units.rowid LIMIT 1 OFFSET {n}",
                    pick_one_unit!(postgres)
                )
            })
            .collect()
    });
    let n = usize::try_from(offset.clamp(0, DRAW_FROM - 1)).unwrap_or(0);
    &PICKS[n]
}

/// Which of `count` units (at least one) a lease's `draw` (0 to 1) lands on, from 0.
fn drawn_at(draw: f64, count: i64) -> i64 {
    ((draw.clamp(0.0, 1.0) * count as f64) as i64).min(count - 1)
}

/// The drawn one of the oldest units `request`'s volunteer (`wallet`, as text) may have,
/// with what the unit's refresh would count (its active leases and pending results) and
/// its `wanted`, so its new state is known without another query; `None` when nothing is
/// leasable. Skipping to it costs a check of each unit before it, so on average half of
/// `DRAW_FROM`, not all of them.
fn load_drawn_unit(
    db: &dyn Db,
    request: &LeaseRequest,
    wallet: &str,
) -> Result<Option<(UnitRow, i64, i64)>, StorageError> {
    let network = request.network.map(|n| n.to_string());
    let peer = request.peer.to_string();
    let since = request.terms.start_ms.saturating_sub(REPEAT_AFTER_MS);
    let custom_ok = i64::from(request.custom_ok);
    let pick = |offset: i64| {
        let pick_sql = match db.dialect() {
            Dialect::Sqlite => pick_unit!(),
            Dialect::Postgres => pick_at_offset(offset),
        };
        db.query_opt(
            pick_sql,
            params![wallet, peer, since, network, offset, custom_ok],
            |r| {
                Ok((
                    UnitRow::read(r)?,
                    r.get::<i64>(UnitRow::COLUMNS)?,
                    r.get::<i64>(UnitRow::COLUMNS + 1)?,
                ))
            },
        )
    };
    let offset = drawn_at(request.draw, DRAW_FROM);
    let mut row = pick(offset)?;
    if row.is_none() && offset > 0 {
        // Fewer units than the draw reached: draw again among those there are. On
        // PostgreSQL the count is fenced as the draw is: unfenced, a plan made while
        // `leases` was small read every lease (16 ms a count at 20 000 units).
        static ELIGIBLE: LazyLock<[String; 2]> = LazyLock::new(|| {
            [
                format!(
                    "SELECT COUNT(*) FROM (SELECT 1 {} LIMIT ?5) AS eligible",
                    eligible_units!()
                ),
                format!(
                    "SELECT COUNT(*) FROM (SELECT 1 {} LIMIT ?5) AS eligible",
                    eligible_units!(postgres)
                ),
            ]
        });
        let count = &ELIGIBLE[usize::from(db.dialect() == Dialect::Postgres)];
        let eligible: i64 = db.query_one(
            count,
            params![wallet, peer, since, network, DRAW_FROM, custom_ok],
            |r| r.get(0),
        )?;
        if eligible > 0 {
            row = pick(drawn_at(request.draw, eligible))?;
        }
    }
    Ok(row)
}

/// Writes `lease` of the unit in `row` to `request`'s volunteer (`wallet`, as text).
fn apply_work_lease(
    db: &dyn Db,
    relay: &str,
    request: &LeaseRequest,
    wallet: &str,
    row: UnitRow,
    lease: NewLease,
) -> Result<LeasedUnit, StorageError> {
    if lease.update_unit {
        db.write(
            "UPDATE units SET quorum = ?1, wanted = ?2,
                 state = CASE WHEN ?3 = 1 THEN 'leased' ELSE state END
             WHERE id = ?4",
            params![lease.quorum, lease.wanted, lease.leased, row.id],
        )?;
    }
    insert_lease(
        db,
        relay,
        request,
        wallet,
        &row.id,
        "work",
        lease.deadline_ms,
    )?;
    // The job's first lease starts it; later ones need not touch the job's row.
    if lease.starts_job {
        db.write(
            "UPDATE jobs SET state = 'running', updated_ms = ?1 WHERE id = ?2 AND state = 'queued'",
            params![now_ms(), row.job_id],
        )?;
    }
    row.leased(request.lease, lease.deadline_ms, false)
}

/// [`Storage::lease_work`] inside the writer: load the drawn unit, decide, apply; with
/// `quorum_for` evaluated in advance for the `(kernel, job quorum, quorum)` triples in
/// `quorums`.
fn lease_work_in(
    db: &dyn Db,
    relay: &str,
    request: &LeaseRequest,
    quorums: &[(String, u32, u32)],
) -> Result<WorkLease, StorageError> {
    let wallet = request.wallet.to_string();
    let Some((row, wanted, outstanding)) = load_drawn_unit(db, request, &wallet)? else {
        return Ok(WorkLease::Done(None));
    };
    let drawn = row.drawn(wanted, outstanding);
    match decide_work_lease(&drawn, quorums, &request.terms) {
        LeaseDecision::NeedsQuorum { kernel, job_quorum } => {
            Ok(WorkLease::NeedsQuorum(kernel, job_quorum))
        }
        LeaseDecision::Lease(lease) => Ok(WorkLease::Done(Some(apply_work_lease(
            db, relay, request, &wallet, row, lease,
        )?))),
    }
}

/// A probe's unit no wallet ever leased, newest probe first (?1: whether the volunteer runs
/// registered kernels). Walks probe jobs, then each one's units by job: CROSS JOIN keeps
/// SQLite to that loop order and `|| ''` keeps it off the state index (SQLite keeps no
/// statistics; both spellings mean the same to PostgreSQL). Left to choose, SQLite walked
/// every settled unit of every job on each canary: 3.4 ms a canary after 20 000 units, two
/// thirds of the writer's time through the scheduler.
const FRESH_PROBE_UNIT: &str = concat!(
    "SELECT ",
    unit_columns!(),
    " FROM jobs CROSS JOIN units
         WHERE units.job_id = jobs.id AND jobs.probe = 1 AND units.state || '' = 'done'
           AND (?1 = 1 OR LENGTH(jobs.kernel) <> 64)
           AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.unit_id = units.id)
           AND EXISTS (SELECT 1 FROM job_inputs WHERE job_inputs.job_id = units.job_id)
         ORDER BY jobs.rowid DESC LIMIT 1"
);

fn lease_canary_in(
    db: &dyn Db,
    relay: &str,
    request: &LeaseRequest,
    pick: f64,
) -> Result<Option<LeasedUnit>, StorageError> {
    let wallet = request.wallet.to_string();
    // A probe's unit no wallet ever leased first: fresh parameters and data that nobody
    // saw, so a group of wallets sharing what they were sent cannot tell it from new
    // work (a settled unit of a real job is one its other wallets computed). Newest
    // probes first: spent ones are older.
    let probe = db.query_opt(
        FRESH_PROBE_UNIT,
        params![i64::from(request.custom_ok)],
        UnitRow::read,
    )?;
    if let Some(row) = probe {
        let deadline_ms = request.terms.deadline(row.flops());
        insert_lease(db, relay, request, &wallet, &row.id, "canary", deadline_ms)?;
        return Ok(Some(row.leased(request.lease, deadline_ms, true)?));
    }
    // No probe in stock: a settled unit of a real job this wallet never saw.
    let max_rowid: Option<i64> =
        // Among settled units, whose order an index keeps on both engines.
        db.query_one(
            "SELECT MAX(rowid) FROM units WHERE state = 'done'",
            params![],
            |r| r.get(0),
        )?;
    let from = (max_rowid.unwrap_or(0) as f64 * pick.clamp(0.0, 1.0)) as i64;
    let mut found = None;
    let select = concat!(
        "SELECT ",
        unit_columns!(),
        " FROM units JOIN jobs ON jobs.id = units.job_id
         WHERE units.state = 'done' AND units.rowid >= ?1 AND jobs.probe = 0
           AND (?3 = 1 OR LENGTH(jobs.kernel) <> 64)
           AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.unit_id = units.id
                           AND leases.wallet = ?2)
           -- Only from jobs whose data is kept: a purged job's units are never sent again.
           AND EXISTS (SELECT 1 FROM job_inputs WHERE job_inputs.job_id = units.job_id)
         ORDER BY units.rowid LIMIT 1"
    );
    // From the drawn point on, then from the start if nothing was after it.
    for start in [from, 0] {
        found = db.query_opt(
            select,
            params![start, wallet, i64::from(request.custom_ok)],
            UnitRow::read,
        )?;
        if found.is_some() {
            break;
        }
    }
    let Some(row) = found else {
        return Ok(None);
    };
    let deadline_ms = request.terms.deadline(row.flops());
    insert_lease(db, relay, request, &wallet, &row.id, "canary", deadline_ms)?;
    Ok(Some(row.leased(request.lease, deadline_ms, true)?))
}

/// A work lease, as the writer runs it: alone ([`Command::run`]), or drawn with the other
/// leases of its group ([`lease_together`], on PostgreSQL).
pub(super) struct Leasing {
    relay: std::sync::Arc<str>,
    request: LeaseRequest,
    quorums: Vec<(String, u32, u32)>,
    reply: Reply<WorkLease, StorageError>,
}

impl Command for Leasing {
    fn run(&mut self, db: &dyn Db) -> bool {
        let outcome = lease_work_in(db, &self.relay, &self.request, &self.quorums);
        // Asking for a quorum writes nothing.
        let keep = matches!(outcome, Ok(WorkLease::Done(_)));
        self.reply.set(outcome);
        keep
    }

    fn together(&mut self) -> Option<Together<'_>> {
        Some(Together::Lease(self))
    }

    fn fail(&mut self, error: StorageError) {
        self.reply.fail(error);
    }

    fn reply(self: Box<Self>, commit: Option<&GroupError>) {
        self.reply.send(commit);
    }
}

impl Storage {
    /// Leases one of the [`DRAW_FROM`] oldest units that need another result to
    /// `request`'s volunteer (by its draw), never one this wallet or connection already
    /// holds or answered, nor one its network holds or answered. A unit's first lease fixes
    /// its quorum: `quorum_for(kernel, job_quorum)` decides (it sees the job's setting and
    /// may lower it for a trusted wallet).
    pub async fn lease_work(
        &self,
        request: &LeaseRequest,
        quorum_for: impl Fn(&str, u32) -> u32,
    ) -> Result<Option<LeasedUnit>, StorageError> {
        // `quorum_for` borrows from its caller, so it cannot go to the writer thread: it
        // is evaluated here for the pairs first leases have needed so far, and a unit
        // needing another pair sends the lease back for one more try.
        let mut missed: Vec<(String, u32)> = Vec::new();
        loop {
            let quorums: Vec<(String, u32, u32)> = self
                .quorum_hints()
                .into_iter()
                .chain(missed.iter().cloned())
                .map(|(kernel, q)| {
                    let quorum = quorum_for(&kernel, q).clamp(1, 5);
                    (kernel, q, quorum)
                })
                .collect();
            let (reply, answer) = tokio::sync::oneshot::channel();
            self.writer.queue(Box::new(Leasing {
                relay: self.relay.clone(),
                request: *request,
                quorums,
                reply: Reply::to(reply),
            }))?;
            let attempt = answer.await.map_err(|_| StorageError::WriterGone)??;
            match attempt {
                WorkLease::Done(leased) => return Ok(leased),
                WorkLease::NeedsQuorum(kernel, q) => {
                    self.remember_quorum_hint(&kernel, q);
                    missed.push((kernel, q));
                }
            }
        }
    }

    /// The (kernel, job quorum) pairs first leases asked `quorum_for` about lately.
    fn quorum_hints(&self) -> Vec<(String, u32)> {
        self.quorum_hints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn remember_quorum_hint(&self, kernel: &str, job_quorum: u32) {
        let mut hints = self
            .quorum_hints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !hints.iter().any(|(k, q)| *q == job_quorum && k == kernel) {
            if hints.len() >= QUORUM_HINTS {
                hints.remove(0);
            }
            hints.push((kernel.to_owned(), job_quorum));
        }
    }

    /// Leases a known-answer test: a probe's unit no wallet leased yet, else a settled
    /// unit this wallet never saw, drawn from `pick` (0 to 1) so that canaries come from
    /// all over the history.
    pub async fn lease_canary(
        &self,
        request: &LeaseRequest,
        pick: f64,
    ) -> Result<Option<LeasedUnit>, StorageError> {
        let request = *request;
        let relay = self.relay.clone();
        self.writer
            .exec(move |db| lease_canary_in(db, &relay, &request, pick))
            .await
    }

    /// What `lease` was for, whatever its state now; `None` if it never existed.
    pub async fn lease_context(
        &self,
        lease: LeaseId,
    ) -> Result<Option<LeaseContext>, StorageError> {
        let id = lease.to_string();
        self.reads
            .read(move |db| {
                db.query_opt(
                    "SELECT jobs.id, jobs.kernel, jobs.params AS job_params, units.params, leases.wallet
                     FROM leases JOIN units ON units.id = leases.unit_id JOIN jobs ON jobs.id = units.job_id
                     WHERE leases.id = ?1",
                    params![id],
                    |r| {
                        Ok(LeaseContext {
                            job: parse_id(&r.get::<String>(0)?)?,
                            kernel: r.get(1)?,
                            job_params: std::sync::Arc::new(
                                serde_json::from_str(&r.get::<String>(2)?)
                                    .map_err(|e| StorageError::Corrupt(e.to_string()))?,
                            ),
                            unit_params: r.get(3)?,
                            wallet: r.get::<String>(4)?.parse().map_err(|e| {
                                StorageError::Corrupt(format!("lease {lease}'s wallet: {e}"))
                            })?,
                        })
                    },
                )
            })
            .await
    }

    /// The volunteer gave up on `lease` (it held it on `peer`): the unit goes back to the
    /// queue. Returns the unit's job and its lost-lease count when the lease was active.
    pub async fn release_lease(
        &self,
        lease: LeaseId,
        peer: PeerId,
    ) -> Result<Option<(JobId, i64)>, StorageError> {
        let lost = self
            .writer
            .exec(move |db| {
                let lease = lease.to_string();
                // Only the connection holding the lease may give it back.
                let owner: Option<String> = db.query_opt(
                    "SELECT peer FROM leases WHERE id = ?1 AND state = 'active'",
                    params![&lease],
                    |r| r.get(0),
                )?;
                if owner.as_deref() != Some(peer.to_string().as_str()) {
                    return Ok::<_, StorageError>(Lost::default());
                }
                // A volunteer that gives a registered kernel's unit back failed to run it:
                // noted once per kernel and wallet, for suspension (see
                // `hung_custom_kernels`).
                db.write(
                    "INSERT INTO kernel_failures (kernel, wallet, failed_ms)
                     SELECT jobs.kernel, leases.wallet, ?2
                     FROM leases JOIN units ON units.id = leases.unit_id
                          JOIN jobs ON jobs.id = units.job_id
                     WHERE leases.id = ?1 AND LENGTH(jobs.kernel) = 64
                     ON CONFLICT (kernel, wallet) DO NOTHING",
                    params![&lease, now_ms()],
                )?;
                let lost = lose_leases(db, "released", "id = ?1", &lease, HandBack::PerLease)?;
                Ok(lost)
            })
            .await?;
        self.cut_off(&lost.cut_off);
        Ok(lost
            .units
            .into_iter()
            .next()
            .map(|(_, job, attempts)| (job, attempts)))
    }

    /// Tells the standings cache about wallets just cut off for handing back too much.
    fn cut_off(&self, wallets: &[WalletAddress]) {
        for wallet in wallets {
            tracing::warn!(%wallet, "wallet cut off: it handed back more units than it computed");
            self.standings.quarantined(*wallet);
        }
    }

    /// Requeues every unit leased to a connection that went away; returns how many.
    pub async fn release_peer(&self, peer: PeerId) -> Result<u64, StorageError> {
        let lost = self
            .writer
            .exec(move |db| {
                lose_leases(
                    db,
                    "released",
                    "peer = ?1",
                    &peer.to_string(),
                    HandBack::Once,
                )
            })
            .await?;
        self.cut_off(&lost.cut_off);
        Ok(lost.units.len() as u64)
    }

    /// Voids the leases `peer` holds because the relay ended its session (it is stopping):
    /// their units go back to the queue, and nothing counts against the wallet or the
    /// units, as after a restart. Returns how many leases were voided.
    pub async fn void_peer(&self, peer: PeerId) -> Result<u64, StorageError> {
        self.writer
            .exec(move |db| {
                let voided = db.query_all(
                    "UPDATE leases SET state = 'void' WHERE state = 'active' AND peer = ?1
                         RETURNING unit_id",
                    params![peer.to_string()],
                    |r| r.get::<String>(0),
                )?;
                for unit in &voided {
                    refresh_unit(db, unit)?;
                }
                Ok(voided.len() as u64)
            })
            .await
    }

    /// Requeues units whose lease deadline passed; returns how many leases expired.
    pub async fn expire_leases(&self, now: i64) -> Result<u64, StorageError> {
        let lost = self
            .writer
            .exec(move |db| {
                // Every lease has a peer: saying so lets PostgreSQL go through the active
                // leases' index (`leases_active_by_peer`, whose predicate says it).
                let filter = "deadline_ms < ?1 AND peer IS NOT NULL";
                lose_leases(db, "expired", filter, &now, HandBack::Never)
            })
            .await?;
        self.cut_off(&lost.cut_off);
        Ok(lost.units.len() as u64)
    }

    /// Jobs with a unit that lost leases to too many distinct wallets with a record, or
    /// too many wrong results: they fail instead of looping.
    pub async fn jobs_over_attempts(&self, max_attempts: i64) -> Result<Vec<JobId>, StorageError> {
        let ids: Vec<String> = self
            .reads
            .read(move |db| {
                db.query_all(
                    "SELECT DISTINCT units.job_id FROM units JOIN jobs ON jobs.id = units.job_id
                     WHERE units.state = 'queued' AND units.attempts >= ?1
                       AND jobs.state IN ('queued', 'running')",
                    params![max_attempts],
                    |r| r.get(0),
                )
            })
            .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }

    /// After a restart no connection from before exists: every active lease is void and
    /// its unit goes back to the queue. Returns how many leases were voided.
    pub async fn recover_leases(&self) -> Result<u64, StorageError> {
        let relay = self.relay.clone();
        self.writer
            .exec(move |db| {
                let voided = match db.dialect() {
                    // One relay per file: whatever was active was the last process's.
                    Dialect::Sqlite => db.execute(
                        "UPDATE leases SET state = 'void' WHERE state = 'active'",
                        params![],
                    )?,
                    // Relays sharing the database: only leases of no live relay (this
                    // one's, those of relays that stopped, and those from before relays
                    // signed their leases); a live relay's volunteers keep theirs.
                    Dialect::Postgres => {
                        heartbeat_in(db, &relay, now_ms())?;
                        void_leases_of_stopped_relays(db, now_ms())?
                    }
                };
                db.write(REFRESH_UNITS, params![])?;
                Ok(voided)
            })
            .await
    }

    /// Records that this relay is alive at `now` and voids the active leases of relays
    /// not seen for [`RELAY_GONE_AFTER_MS`] (their volunteers lost them with the relay's
    /// process), putting their units back in the queue. Returns how many were voided.
    pub async fn heartbeat(&self, now: i64) -> Result<u64, StorageError> {
        let relay = self.relay.clone();
        self.writer
            .exec(move |db| {
                heartbeat_in(db, &relay, now)?;
                void_leases_of_stopped_relays(db, now)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_canary_looks_for_fresh_probes_among_probe_jobs_not_every_settled_unit(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let root =
            std::env::temp_dir().join(format!("starling-probe-plan-{}", uuid::Uuid::new_v4()));
        let dir = root.join("data");
        drop(Storage::open(&dir).await?);
        let db = rusqlite::Connection::open(dir.join("starling.sqlite3"))?;
        let mut explain = db.prepare(&format!("EXPLAIN QUERY PLAN {FRESH_PROBE_UNIT}"))?;
        let plan = explain
            .query_map([1], |row| row.get::<_, String>(3))?
            .collect::<Result<Vec<_>, _>>()?;
        let _ = std::fs::remove_dir_all(&root);
        // Probe jobs first, newest first straight from their index (no sort of them all),
        // then their units by job: never every settled unit through the state index.
        assert!(plan[0].contains("jobs_probes"), "{plan:?}");
        assert!(
            plan.iter().all(|step| !step.contains("units_by_state")),
            "{plan:?}"
        );
        assert!(
            plan.iter().all(|step| !step.contains("TEMP B-TREE")),
            "{plan:?}"
        );
        Ok(())
    }
}
