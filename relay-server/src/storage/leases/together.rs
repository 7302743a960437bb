//! A PostgreSQL group's work leases drawn together: the oldest queued units loaded once
//! with their leases, each lease drawn from them in memory, and all of them written with
//! one statement per table (see [`many_rows`](crate::storage::many_rows)).
//!
//! Why: a draw alone is a statement per lease (about 60 µs of the server's time, and the
//! round trip around it). Here a group of any size costs two reads: the units it may draw
//! from, and the parameters of those it drew. Each lease's draw sees the leases drawn
//! before it in the group (added to its unit in memory), so no unit goes out beyond what
//! it wants, and a unit's next replica can still go out in the same group (where nothing
//! else is left: see [`draw`]). Who may have a unit is [`bars`], the rule the draw alone
//! spells in SQL.
//!
//! Relays draw at once (they share the write turn for this, `writer::BEGIN_SHARED`), so
//! the load locks the units it reads and passes over those another group holds: no unit
//! is drawn by two groups at once, and no group waits for another here.
//!
//! A lease whose draw the loaded units cannot settle (it may have fewer of them than its
//! draw reached, and the units after them were not loaded or were passed over) is left
//! to be drawn alone after the others, holding the turn alone, on a view that then
//! includes them.

use super::{drawn_at, Leasing, UnitRow, WorkLease, DRAW_FROM, REPEAT_AFTER_MS};
use crate::lifecycle::lease::{bars, decide_work_lease, Asker, LeaseDecision, NewLease, PastLease};
use crate::storage::many_rows::{write_rows, Param};
use crate::storage::sql::{params, Db};
use crate::storage::{now_ms, StorageError};
use std::collections::{BTreeSet, HashMap};
use std::sync::LazyLock;

/// A queued unit of a live job, with every lease it had (but void ones), as loaded.
struct Drawable {
    row: UnitRow,
    wanted: i64,
    leases: Vec<PastLease>,
    /// Its returned results not judged yet (with its active leases, what it has out).
    pending: i64,
    /// Whether it still takes leases (it goes `leased` once it has all it wants).
    queued: bool,
    /// Whether the group drew it already.
    drawn: bool,
}

impl Drawable {
    /// Its active leases and pending results, as the unit's refresh counts them.
    fn outstanding(&self) -> i64 {
        let active = self.leases.iter().filter(|l| l.state == "active").count();
        i64::try_from(active).unwrap_or(i64::MAX) + self.pending
    }
}

/// How many of the oldest queued units a group may load: each size a statement prepared
/// once. Each step half again the last: every unit loaded is locked (a row lock writes
/// its page and the WAL) and read with its leases, so a group loads at most a half more
/// than it needs (doubling, a group of 180 leases loaded 256 units).
const LOADS: [usize; 11] = [32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024];

/// How many of the oldest queued units a group of `leases` loads, the statement that
/// locks them (passing over those another group holds) and returns their ids, and the one
/// that counts them: enough for each draw's [`DRAW_FROM`] after the group's own leases
/// took some, and a margin for units a wallet may not have.
fn drawable_units(leases: usize) -> (usize, &'static str, &'static str) {
    static STATEMENTS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
        LOADS
            .iter()
            .map(|n| {
                let queued = |limit| {
                    format!(
                        "SELECT units.id
                         FROM units CROSS JOIN LATERAL
                             (SELECT state FROM jobs WHERE jobs.id = units.job_id OFFSET 0)
                             AS jobs
                         WHERE units.state = 'queued' AND jobs.state IN ('queued', 'running')
                         ORDER BY units.rowid LIMIT {limit}"
                    )
                };
                (
                    format!("{} FOR UPDATE OF units SKIP LOCKED", queued(n)),
                    format!("SELECT COUNT(*) FROM ({}) AS queued", queued(n)),
                )
            })
            .collect()
    });
    let wanted = 2 * usize::try_from(DRAW_FROM).unwrap_or(16) + leases;
    let n = LOADS
        .iter()
        .position(|&n| n >= wanted)
        .unwrap_or(LOADS.len() - 1);
    (LOADS[n], &STATEMENTS[n].0, &STATEMENTS[n].1)
}

/// The units of a list (`?2`: their ids, space separated) that are still queued, in
/// order, a row per lease (or one with NULL lease columns for a unit with none): the
/// unit's columns as [`UnitRow`] reads them but for the parameters (read later, for the
/// units drawn only), its `wanted`, then the lease's state, whether its verdict is
/// pending, wallet, peer, network and issue time: every active or returned lease, and
/// hand-backs issued after `?1` (older ones keep the unit from nobody, and a unit many
/// fresh wallets took and handed back would otherwise load every one of them at every
/// group). It is fenced as the draw alone is (`eligible_units!`): the job looked up for
/// each unit and the leases for each unit, whatever plan a nearly empty table suggested
/// when the statement was prepared.
const LOAD_DRAWABLE: &str = "WITH drawable AS MATERIALIZED (
       SELECT units.rowid AS position, units.id, units.job_id, units.flops,
              units.quorum, jobs.kernel, jobs.quorum AS job_quorum,
              jobs.state AS job_state, jobs.quorum_explicit, jobs.created_ms,
              units.wanted
       FROM units CROSS JOIN LATERAL
           (SELECT kernel, quorum, state, quorum_explicit, created_ms
            FROM jobs WHERE jobs.id = units.job_id OFFSET 0) AS jobs
       WHERE units.id = ANY(string_to_array(?2, ' '))
         AND units.state = 'queued' AND jobs.state IN ('queued', 'running'))
     SELECT drawable.id, drawable.job_id, '', drawable.flops, drawable.quorum,
            drawable.kernel, '', drawable.job_quorum, drawable.job_state,
            drawable.quorum_explicit, drawable.created_ms, drawable.wanted,
            had.state, had.verdict = 'pending', had.wallet, had.peer,
            had.network, had.issued_ms
     FROM drawable LEFT JOIN LATERAL
         ((SELECT state, verdict, wallet, peer, network, issued_ms FROM leases
           WHERE leases.unit_id = drawable.id
             AND leases.state IN ('active', 'returned')
           OFFSET 0)
          UNION ALL
          -- Through `leases_handed_back`: recent hand-backs, not the pile.
          (SELECT state, verdict, wallet, peer, network, issued_ms FROM leases
           WHERE leases.unit_id = drawable.id
             AND (leases.state = 'released' OR leases.state = 'expired')
             AND leases.issued_ms > ?1
           OFFSET 0)) AS had ON true
     ORDER BY drawable.position";

/// The units a group of `leases` draws from, in order, with the hand-backs issued after
/// `since`, each locked for this group (units another relay's group holds, drawing or
/// judging them, are passed over); and whether they are all the queued units of live jobs
/// there are (fewer came than were asked for, and none was passed over).
///
/// Locked first, read after, in a statement of its own: a statement reads what was
/// committed when it began, and a unit it waits for or passes over may change before it
/// is locked (another group's leases of it committed in between would be missed, and the
/// unit drawn beyond its quorum).
fn load_drawable(
    db: &dyn Db,
    leases: usize,
    since: i64,
) -> Result<(Vec<Drawable>, bool), StorageError> {
    let (limit, lock, count) = drawable_units(leases);
    let mut locked: Vec<String> = Vec::new();
    db.for_each_row(lock, params![], &mut |r| {
        locked.push(r.get(0)?);
        Ok(())
    })?;
    // Only where the queue is short (at a job's end, or with no work at all) is it worth
    // a statement to know that nothing was passed over: then a lease that finds nothing
    // is told so here rather than drawn again alone.
    let complete = locked.len() < limit
        && db.query_one(count, params![], |r| r.get::<i64>(0))?
            == i64::try_from(locked.len()).unwrap_or(i64::MAX);
    let mut units: Vec<Drawable> = Vec::new();
    if locked.is_empty() {
        return Ok((units, complete));
    }
    db.for_each_row(LOAD_DRAWABLE, params![since, locked.join(" ")], &mut |r| {
        let id: String = r.get(0)?;
        if units.last().is_none_or(|u| u.row.id != id) {
            units.push(Drawable {
                row: UnitRow::read(r)?,
                wanted: r.get(UnitRow::COLUMNS)?,
                leases: Vec::new(),
                pending: 0,
                queued: true,
                drawn: false,
            });
        }
        let Some(unit) = units.last_mut() else {
            return Ok(());
        };
        let Some(state) = r.get::<Option<String>>(UnitRow::COLUMNS + 1)? else {
            return Ok(());
        };
        unit.pending += i64::from(r.get::<Option<bool>>(UnitRow::COLUMNS + 2)? == Some(true));
        unit.leases.push(PastLease {
            state,
            wallet: r.get(UnitRow::COLUMNS + 3)?,
            peer: r.get(UnitRow::COLUMNS + 4)?,
            network: r.get(UnitRow::COLUMNS + 5)?,
            issued_ms: r.get(UnitRow::COLUMNS + 6)?,
        });
        Ok(())
    })?;
    Ok((units, complete))
}

/// Where a lease's draw lands among the loaded units.
enum Draw {
    /// The unit at this index.
    Unit(usize),
    /// Nothing: no queued unit it may have.
    Nothing,
    /// Among units that were not loaded: it is drawn alone.
    Unknown,
}

/// The draw of `asker` (which of its oldest [`DRAW_FROM`] units it may have it gets: `draw`,
/// 0 to 1), as the draw alone makes it, from the units the group has not drawn yet: that
/// unit, or, where it may have fewer, one of those it may have; and only where it may
/// have none of them, from the group's units too (a unit's next replica).
///
/// Why the group's own units last: a unit's replicas drawn by one group reach their
/// volunteers at once, their results tend to arrive in one group, and a unit met twice in
/// a group is judged alone. Drawn from any unit, quorum 2 ran 25 658 statements for 3 000
/// units against 15 007.
fn draw(units: &[Drawable], complete: bool, asker: &Asker<'_>, custom_ok: bool, draw: f64) -> Draw {
    match draw_among(units, complete, asker, custom_ok, draw, false) {
        Draw::Nothing => draw_among(units, complete, asker, custom_ok, draw, true),
        fresh => fresh,
    }
}

/// [`draw`] among the units the group has not drawn, or (`again`) among all.
fn draw_among(
    units: &[Drawable],
    complete: bool,
    asker: &Asker<'_>,
    custom_ok: bool,
    draw: f64,
    again: bool,
) -> Draw {
    let open: Vec<usize> = units
        .iter()
        .enumerate()
        .filter(|(_, u)| {
            u.queued
                && (again || !u.drawn)
                // A registered kernel's id is its 64-digit content address; built-ins' are short.
                && (custom_ok || u.row.kernel.len() != 64)
                && !u.leases.iter().any(|l| bars(l, asker))
        })
        .map(|(n, _)| n)
        .take(usize::try_from(DRAW_FROM).unwrap_or(16))
        .collect();
    let offset = drawn_at(draw, DRAW_FROM);
    let count = i64::try_from(open.len()).unwrap_or(0);
    let pick = |n: i64| usize::try_from(n).ok().and_then(|n| open.get(n).copied());
    if let Some(n) = pick(offset) {
        Draw::Unit(n)
    } else if !complete {
        Draw::Unknown
    } else if count == 0 {
        Draw::Nothing
    } else {
        pick(drawn_at(draw, count)).map_or(Draw::Nothing, Draw::Unit)
    }
}

/// Draws the leases of `leasings` that it can, writes them, and sets their outcomes; says
/// which it drew (the others are left to be drawn alone). An error leaves the transaction
/// to be rolled back.
pub(in crate::storage) fn lease_together(
    db: &dyn Db,
    leasings: &mut [(usize, &mut Leasing)],
) -> Result<Vec<bool>, StorageError> {
    let repeat_since =
        |leasing: &Leasing| (leasing.request.terms.start_ms).saturating_sub(REPEAT_AFTER_MS);
    let since = leasings
        .iter()
        .map(|(_, l)| repeat_since(l))
        .min()
        .unwrap_or(0);
    let (mut units, complete) = load_drawable(db, leasings.len(), since)?;
    // Decide each lease in turn, its unit's view in memory carrying the leases before it.
    let mut drawn: Vec<Option<(usize, NewLease)>> = Vec::new();
    let mut outcomes: Vec<Option<WorkLease>> = Vec::new();
    for (_, leasing) in leasings.iter() {
        let request = &leasing.request;
        let (wallet, peer) = (request.wallet.to_string(), request.peer.to_string());
        let network = request.network.map(|n| n.to_string());
        let asker = Asker {
            wallet: &wallet,
            peer: &peer,
            network: network.as_deref(),
            repeat_since: repeat_since(leasing),
        };
        let n = match draw(&units, complete, &asker, request.custom_ok, request.draw) {
            Draw::Unit(n) => n,
            Draw::Nothing => {
                drawn.push(None);
                outcomes.push(Some(WorkLease::Done(None)));
                continue;
            }
            Draw::Unknown => {
                drawn.push(None);
                outcomes.push(None);
                continue;
            }
        };
        let unit = &mut units[n];
        let lease = match decide_work_lease(
            &unit.row.drawn(unit.wanted, unit.outstanding()),
            &leasing.quorums,
            &request.terms,
        ) {
            LeaseDecision::NeedsQuorum { kernel, job_quorum } => {
                drawn.push(None);
                outcomes.push(Some(WorkLease::NeedsQuorum(kernel, job_quorum)));
                continue;
            }
            LeaseDecision::Lease(lease) => lease,
        };
        // What the lease's writes will make of the unit, for the draws after it.
        unit.row.quorum = lease.quorum;
        unit.wanted = lease.wanted;
        unit.queued = !lease.leased;
        unit.drawn = true;
        unit.leases.push(PastLease {
            state: "active".to_owned(),
            wallet,
            peer,
            network,
            issued_ms: request.terms.start_ms,
        });
        if lease.starts_job {
            let job = unit.row.job_id.clone();
            for other in units.iter_mut().filter(|u| u.row.job_id == job) {
                other.row.job_state = "running".to_owned();
            }
        }
        drawn.push(Some((n, lease)));
        outcomes.push(None);
    }
    write_leases(db, leasings, &units, &drawn)?;
    // The drawn units' parameters, which the volunteers need and the draw did not.
    let ids: BTreeSet<&str> = drawn
        .iter()
        .flatten()
        .map(|(n, _)| units[*n].row.id.as_str())
        .collect();
    let mut params: HashMap<String, (String, String)> = HashMap::new();
    if !ids.is_empty() {
        let ids: Vec<&str> = ids.into_iter().collect();
        db.for_each_row(
            "SELECT units.id, units.params, jobs.params
             FROM units CROSS JOIN LATERAL
                 (SELECT params FROM jobs WHERE jobs.id = units.job_id OFFSET 0) AS jobs
             WHERE units.id = ANY(string_to_array(?1, ' '))",
            params![ids.join(" ")],
            &mut |r| {
                params.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
                Ok(())
            },
        )?;
    }
    for (n, lease) in drawn.iter().enumerate() {
        let Some((unit, lease)) = lease else { continue };
        let row = &units[*unit].row;
        let (unit_params, job_params) = params.get(&row.id).cloned().ok_or_else(|| {
            StorageError::Corrupt(format!("unit {} vanished as it was leased", row.id))
        })?;
        let leased = UnitRow {
            params: unit_params,
            job_params,
            ..row.clone()
        };
        outcomes[n] = Some(WorkLease::Done(Some(leased.leased(
            leasings[n].1.request.lease,
            lease.deadline_ms,
            false,
        )?)));
    }
    let mut answered = vec![false; leasings.len()];
    for (n, outcome) in outcomes.into_iter().enumerate() {
        if let Some(outcome) = outcome {
            leasings[n].1.reply.set(Ok(outcome));
            answered[n] = true;
        }
    }
    Ok(answered)
}

/// Writes the leases `drawn` (for each of `leasings`, its unit among `units` and its
/// lease, if it drew one): each unit's row as the last of its leases left it, the leases'
/// rows, the jobs they start.
fn write_leases(
    db: &dyn Db,
    leasings: &[(usize, &mut Leasing)],
    units: &[Drawable],
    drawn: &[Option<(usize, NewLease)>],
) -> Result<(), StorageError> {
    // One row per unit: a unit drawn twice is written as its last lease left it.
    let mut changed: BTreeSet<usize> = BTreeSet::new();
    let mut leases: Vec<Vec<Param<'_>>> = Vec::new();
    let mut started: BTreeSet<&str> = BTreeSet::new();
    for ((_, leasing), drawn) in leasings.iter().zip(drawn) {
        let Some((n, lease)) = drawn else { continue };
        let (request, row) = (&leasing.request, &units[*n].row);
        if lease.update_unit {
            changed.insert(*n);
        }
        if lease.starts_job {
            started.insert(&row.job_id);
        }
        leases.push(vec![
            Param::Text(request.lease.to_string()),
            Param::Text(row.id.clone()),
            Param::Text(request.peer.to_string()),
            Param::Text(request.wallet.to_string()),
            request
                .site
                .map_or(Param::Null, |s| Param::Text(s.to_string())),
            Param::Int(Some(request.terms.start_ms)),
            Param::Int(Some(lease.deadline_ms)),
            request
                .network
                .map_or(Param::Null, |n| Param::Text(n.to_string())),
            Param::Text(leasing.relay.to_string()),
        ]);
    }
    let rows: Vec<Vec<Param<'_>>> = changed
        .into_iter()
        .map(|n| {
            let unit = &units[n];
            vec![
                Param::Text(unit.row.id.clone()),
                Param::Int(Some(unit.row.quorum)),
                Param::Int(Some(unit.wanted)),
                Param::Int(Some(i64::from(!unit.queued))),
            ]
        })
        .collect();
    write_rows(
        db,
        &rows,
        &[],
        "UPDATE units SET quorum = v.quorum, wanted = v.wanted,
             state = CASE WHEN v.leased = 1 THEN 'leased' ELSE units.state END
         FROM (VALUES {}) AS v (id, quorum, wanted, leased) WHERE units.id = v.id",
        &["text", "bigint", "bigint", "bigint"],
    )?;
    write_rows(
        db,
        &leases,
        &[],
        "INSERT INTO leases (id, unit_id, peer, wallet, site, kind, state, issued_ms,
                             deadline_ms, network, relay)
         SELECT v.id, v.unit_id, v.peer, v.wallet, v.site, 'work', 'active',
                v.issued_ms, v.deadline_ms, v.network, v.relay
         FROM (VALUES {}) AS v (id, unit_id, peer, wallet, site, issued_ms, deadline_ms,
                                network, relay)",
        &[
            "text", "text", "text", "text", "text", "bigint", "bigint", "text", "text",
        ],
    )?;
    if !started.is_empty() {
        let started: Vec<&str> = started.into_iter().collect();
        db.write(
            "UPDATE jobs SET state = 'running', updated_ms = ?1
             WHERE id IN (SELECT id FROM jobs
                          WHERE state = 'queued' AND id = ANY(string_to_array(?2, ' '))
                          ORDER BY id FOR UPDATE)",
            params![now_ms(), started.join(" ")],
        )?;
    }
    Ok(())
}
