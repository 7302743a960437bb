//! What other relays on the same database change, as this relay learns it: by reading
//! the rows changed lately, every [`FOLLOW_EVERY`], and at once when another relay says
//! something changed that should not wait for the next read.
//!
//! Two ways together. The read is what makes it complete: a notification sent while a
//! relay's listening connection is being made again is lost, so a relay needs the read
//! anyway to catch up, and four small indexed reads a second per relay cost the database
//! little. PostgreSQL's LISTEN/NOTIFY makes the rare events that someone waits on fast: a
//! new job (idle volunteers on every relay), a job ending (its watcher may be on another
//! relay) and a wallet caught lying (trusted nowhere from then on). Progress, the frequent
//! change, is left to the read: a notification per unit would wake every relay's
//! follower, and every listening server process, thousands of times a second. Both
//! measured in `docs/performance.md` ("Changes across relays").
//!
//! What it feeds: the event streams of jobs other relays' volunteers advance, the idle
//! volunteers of this relay when another relay stored a job, and [`Standings`]: a wallet
//! another relay caught lying is no longer trusted here either.

use super::sql::{params, Db, Dialect};
use super::wallets::{reliability_of, Standings};
use super::{now_ms, parse_id, StorageError};
use starling_protocol::{JobId, WalletAddress};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How often the changed rows are read.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// PostgreSQL's notification channel for changes that should not wait for a read.
const CHANNEL: &str = "starling_changes";

/// How a relay on PostgreSQL learns what other relays change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Following {
    /// Also LISTEN for the changes other relays tell of (the default); off for the
    /// bench's baseline, or where a connection pooler cannot hold a listening session.
    pub notified: bool,
    /// How often the changed rows are read ([`FOLLOW_EVERY`]).
    pub read_every: Duration,
}

impl Default for Following {
    fn default() -> Self {
        Self {
            notified: true,
            read_every: FOLLOW_EVERY,
        }
    }
}

/// Tells the other relays on the database, when the transaction commits, that a change
/// they should not wait for was made (see the module's notes). Nothing on SQLite, whose
/// one relay is the only writer.
pub(super) fn tell_other_relays(db: &dyn Db) -> Result<(), StorageError> {
    if db.dialect() == Dialect::Postgres {
        db.write(&format!("NOTIFY {CHANNEL}"), params![])?;
    }
    Ok(())
}

/// A connection listening on [`CHANNEL`]; `None` where it cannot be made (the reads go
/// on without it).
async fn listen(options: sqlx::postgres::PgConnectOptions) -> Option<sqlx::postgres::PgListener> {
    let made = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with(options)
            .await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(CHANNEL).await?;
        Ok::<_, sqlx::Error>(listener)
    };
    match made.await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!("listening for other relays' changes failed, reading only: {e}");
            None
        }
    }
}

/// The next notification; never, without a listener. A lost connection is made again
/// by the listener itself (what was sent meanwhile is the reads' to catch).
async fn told(listener: &mut Option<sqlx::postgres::PgListener>) {
    let Some(l) = listener.as_mut() else {
        return std::future::pending().await;
    };
    match l.recv().await {
        // One read answers everything told so far.
        Ok(_) => while l.next_buffered().is_some() {},
        Err(e) => {
            tracing::warn!("listening for other relays' changes failed, reading only: {e}");
            *listener = None;
        }
    }
}

/// How far back each read looks past the last one: rows carry their writer's wall clock,
/// which relays' clocks differ by less than this less [`STALE_MS`] (NTP keeps them within
/// milliseconds), and may lag the change by up to [`STALE_MS`]. Rows seen twice are
/// harmless: both uses are idempotent.
const CLOCK_SKEW_MS: i64 = 2_000;

/// How old a job's or wallet's `updated_ms` may be left by a change, so that the frequent
/// ones (a unit settled, a result judged) leave it alone: on PostgreSQL an update that
/// changes no indexed column touches no index (a HOT update), and `updated_ms` is indexed
/// for these reads. A read still sees every change, since it looks back
/// [`CLOCK_SKEW_MS`], more than this.
const STALE_MS: i64 = 500;
const _: () = assert!(STALE_MS < CLOCK_SKEW_MS);

/// `updated_ms` in an `UPDATE` of `table`, set to `now` (an SQL expression, a parameter)
/// only where it is [`STALE_MS`] old.
pub(super) fn touch(table: &str, now: &str) -> String {
    format!("updated_ms = CASE WHEN {table}.updated_ms > {now} - {STALE_MS} THEN {table}.updated_ms ELSE {now} END")
}

/// Most rows of each table one read takes; more changed than this in one read's window
/// means "everything changed".
const PAGE: i64 = 2_000;

/// What changed, announced to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// These jobs' progress or state may have changed.
    Jobs(Vec<JobId>),
    /// Too much changed to list: every job may have.
    Everything,
    /// A job was stored that this relay has not announced yet: units may be waiting.
    NewWork,
}

/// One read's rows.
struct Read {
    jobs: Vec<(String, i64)>,
    wallets: Vec<(String, f64, i64, i64, bool)>,
}

impl super::Storage {
    /// Changes other relays made (and this one's too), as [`Storage::follow_others`]
    /// reads them; nothing ever arrives on SQLite, where one relay is the database's only
    /// writer.
    ///
    /// [`Storage::follow_others`]: super::Storage
    pub fn others_changes(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    /// Starts the follower; it stops with the last clone of this storage. `listen_on`:
    /// where to LISTEN for [`tell_other_relays`]' notifications, if anywhere.
    pub(super) fn follow_others(
        &self,
        read_every: Duration,
        listen_on: Option<sqlx::postgres::PgConnectOptions>,
    ) {
        let reads = self.reads.clone();
        let changes = self.changes.clone();
        let standings = self.standings.clone();
        let alive = Arc::downgrade(&self.alive);
        tokio::spawn(async move {
            let mut since = now_ms() - CLOCK_SKEW_MS;
            let mut newest_job = now_ms();
            let mut tick = tokio::time::interval(read_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut listener = match listen_on {
                Some(options) => listen(options).await,
                None => None,
            };
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = told(&mut listener) => tick.reset(),
                }
                if alive.strong_count() == 0 {
                    return;
                }
                let started = now_ms();
                match reads.read(move |db| read_changed(db, since)).await {
                    Ok(read) => {
                        since = started - CLOCK_SKEW_MS;
                        announce(&read, &changes, &standings, &mut newest_job);
                    }
                    Err(e) => tracing::warn!("reading what other relays changed failed: {e}"),
                }
            }
        });
    }
}

fn read_changed(db: &dyn Db, since: i64) -> Result<Read, StorageError> {
    let jobs = db.query_all(
        "SELECT id, created_ms FROM jobs WHERE updated_ms >= ?1 LIMIT ?2",
        params![since, PAGE],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let wallets = db.query_all(
        "SELECT address, error_rate, valid, invalid, quarantined FROM wallets
             WHERE updated_ms >= ?1 LIMIT ?2",
        params![since, PAGE],
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get::<i64>(4)? != 0,
            ))
        },
    )?;
    Ok(Read { jobs, wallets })
}

fn announce(
    read: &Read,
    changes: &broadcast::Sender<Changed>,
    standings: &Standings,
    newest_job: &mut i64,
) {
    for (address, error_rate, valid, invalid, quarantined) in &read.wallets {
        let Ok(wallet) = address.parse::<WalletAddress>() else {
            continue;
        };
        standings.judged(
            wallet,
            reliability_of(Some(*error_rate), Some(*valid), Some(*invalid)),
        );
        if *quarantined {
            standings.quarantined(wallet);
        }
    }
    if read.jobs.len() as i64 >= PAGE {
        let _ = changes.send(Changed::Everything);
        let _ = changes.send(Changed::NewWork);
        return;
    }
    let created = read.jobs.iter().map(|(_, created)| *created).max();
    if let Some(created) = created.filter(|c| *c > *newest_job) {
        *newest_job = created;
        let _ = changes.send(Changed::NewWork);
    }
    let jobs: Vec<JobId> = read
        .jobs
        .iter()
        .filter_map(|(id, _)| parse_id(id).ok())
        .collect();
    if !jobs.is_empty() {
        // Nobody listening (no scheduler yet) is fine.
        let _ = changes.send(Changed::Jobs(jobs));
    }
}
