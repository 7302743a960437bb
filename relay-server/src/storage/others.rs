//! What other relays on the same database change, as this relay learns it: by reading
//! the rows changed lately, every [`FOLLOW_EVERY`].
//!
//! Why polling rather than LISTEN/NOTIFY: a notification sent while a relay's listening
//! connection is being re-established is lost, so a relay would need this read anyway to
//! catch up; four small indexed reads a second per relay cost the database little
//! (measured in `docs/performance.md`), and the wake-ups it feeds have fallbacks of their
//! own (an idle volunteer looks for work every second, a watched job is read every five).
//!
//! What it feeds: the event streams of jobs other relays' volunteers advance, the idle
//! volunteers of this relay when another relay stored a job, and [`Standings`]: a wallet
//! another relay caught lying is no longer trusted here either.

use super::sql::params;
use super::wallets::{reliability_of, Standings};
use super::{now_ms, parse_id, StorageError};
use starling_protocol::{JobId, WalletAddress};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// How often the changed rows are read.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// How far back each read looks past the last one: rows carry their writer's wall clock,
/// and relays' clocks differ by less than this (NTP keeps them within milliseconds).
/// Rows seen twice are harmless: both uses are idempotent.
const CLOCK_SKEW_MS: i64 = 2_000;

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

    /// Starts the follower; it stops with the last clone of this storage.
    pub(super) fn follow_others(&self) {
        let reads = self.reads.clone();
        let changes = self.changes.clone();
        let standings = self.standings.clone();
        let alive = Arc::downgrade(&self.alive);
        tokio::spawn(async move {
            let mut since = now_ms() - CLOCK_SKEW_MS;
            let mut newest_job = now_ms();
            let mut tick = tokio::time::interval(FOLLOW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
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

fn read_changed(db: &dyn super::sql::Db, since: i64) -> Result<Read, StorageError> {
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
