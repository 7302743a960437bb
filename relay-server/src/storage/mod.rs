//! Durable state in SQLite: jobs, units, leases, results and wallets. Every state
//! transition is one transaction, so a crash at any point leaves either the old or the
//! new state.
//!
//! A unit's life: `queued` (needs leases) → `leased` (enough out) → back to `queued` when
//! a lease is lost or replicas disagree → `done` once a quorum of results agrees, or
//! `failed`. Leases go `active` → `returned` | `expired` | `released` | `void`. A result
//! is stored in its lease's row (a lease has at most one), which goes `returned` with it;
//! its verdict goes `pending` → `valid` | `invalid`. Judging a result happens in the
//! transaction that stores it, so there is no half-judged state to recover.
//!
//! The HTTP layer and the scheduler call these methods; nothing else touches SQL. What a
//! transition decides (whether a unit settles, who is paid, when a job ends) is
//! [`lifecycle`](crate::lifecycle)'s: storage loads the rows a decision needs and writes
//! what it decided, in one transaction.

use crate::data_dir::create_private_dir;
use crate::ledger::{Account, EscrowRef, MicroCredits};
use crate::lifecycle::billing::{bill_of, job_budget, BudgetError, JobBill};
use crate::lifecycle::finish::{decide_fail, decide_finish, ClosingJob};
use crate::lifecycle::Inconsistent;
use sql::{params, Db};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection as _};
use starling_protocol::{JobId, UnitId, WalletKey};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// SQL for how many of a unit's replicas are out or in (`units` in scope): its active
/// leases and its results awaiting their replicas. Reads only active and returned leases
/// (`leases_by_unit`), never the unit's pile of hand-backs: a pending verdict is only
/// ever on a returned lease. What a draw, a refresh and a group's reopened units compare
/// with `wanted`.
macro_rules! replicas_out {
    () => {
        "(SELECT COUNT(*) FROM leases WHERE leases.unit_id = units.id
          AND leases.state IN ('active', 'returned')
          AND (leases.state = 'active' OR leases.verdict = 'pending'))"
    };
}

mod custom_kernels;
pub mod job_keys;
pub mod job_queries;
mod leaderboard;
mod leases;
mod ledger;
mod many_rows;
mod migrate;
mod model;
mod others;
mod pipeline;
mod postgres;
mod probes;
mod reader;
mod results;
mod sites;
pub(crate) mod sql;
mod unit_outputs;
mod wallets;
mod writer;

/// The integration tests' PostgreSQL server, for the unit tests of the PostgreSQL side.
#[cfg(test)]
#[path = "../../tests/common/postgres.rs"]
mod test_postgres;
pub use crate::lifecycle::billing::Pricing;
pub use crate::lifecycle::lease::LeaseTerms;
pub use custom_kernels::StoredKernel;
pub use leaderboard::Earner;
pub use leases::{LeaseRequest, RELAY_GONE_AFTER_MS, REPEAT_AFTER_MS};
pub use ledger::{Accrual, LedgerError, SignedTransfer};
pub use migrate::Copied;
pub(crate) use model::parse_unit_state;
pub use model::{
    EscrowProof, IdempotencyClaim, JobOutput, JobRecord, JobState, LeaseContext, LeasedUnit,
    NewJob, PeerId,
};
pub use others::{Changed, Following};
pub use probes::{NewProbe, ProbeUnit};
pub use results::{Comparison, Judging, Recorded, ReturnedResult, UnitAudit, UnitSummary};
pub use wallets::WalletRecord;

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The database failed or is unreachable (the writer's PostgreSQL connection).
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database's files could not be made private to the relay's user.
    #[error("cannot make {path} readable by its owner only (mode 0600): {source}; run the relay as the user who owns the data directory")]
    FileMode {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A stored value does not parse; the database was edited by hand or is corrupt.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The writer's connection failed (a statement, or its group's commit).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL group could not commit (the error as the server or connection told it).
    #[error("database error: {0}")]
    Commit(String),
    /// The database cannot be reached now (nothing was written); asking again later may
    /// work.
    #[error("the database is unreachable: {0}")]
    Unreachable(String),
    /// The writer thread stopped (it could not start, or a write panicked in it) before
    /// answering.
    #[error("the database writer thread is gone")]
    WriterGone,
    /// Credit could not move (for example, the submitter cannot cover a job).
    #[error(transparent)]
    Ledger(Box<LedgerError>),
    /// Job data at rest could not be sealed or opened (a damaged blob or key file).
    #[error("job data at rest: {0}")]
    Sealing(String),
    /// The submitter has as many jobs queued or running as it may.
    #[error("this API key has {active} jobs queued or running, the most it may")]
    TooManyActiveJobs {
        /// Its jobs queued or running.
        active: u64,
    },
    /// Another job already holds this idempotency key: nothing was stored.
    #[error("the idempotency key is already taken")]
    IdempotencyKeyTaken,
}

impl From<Inconsistent> for StorageError {
    fn from(e: Inconsistent) -> Self {
        Self::Corrupt(e.0)
    }
}

impl StorageError {
    /// Whether this says the database could not be reached (so the caller may try again
    /// later), rather than that it refused something.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Db(e) => postgres::connection_lost(e),
            Self::Postgres(e) => pipeline::connection_lost(e),
            _ => false,
        }
    }

    fn ledger(e: LedgerError) -> Self {
        match e {
            LedgerError::Storage(inner) => inner,
            other => Self::Ledger(Box::new(other)),
        }
    }
}

/// Sets open units' state from what is outstanding: `leased` while active leases plus
/// results awaiting their replicas cover `wanted`, else `queued` (leasable).
macro_rules! refresh_units {
    () => {
        concat!(
            "UPDATE units SET state = CASE WHEN ",
            replicas_out!(),
            " >= units.wanted THEN 'leased' ELSE 'queued' END
    WHERE state IN ('queued', 'leased')"
        )
    };
}

/// `refresh_units!()` over every open unit.
const REFRESH_UNITS: &str = refresh_units!();

fn refresh_unit(db: &dyn Db, unit: &str) -> Result<(), StorageError> {
    db.write(concat!(refresh_units!(), " AND id = ?1"), params![unit])?;
    Ok(())
}

/// How many migrations the database file has applied (none for a new file).
async fn applied_migrations(db: &mut sqlx::SqliteConnection) -> Result<i64, StorageError> {
    let tracked: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master
                        WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *db)
    .await?;
    if !tracked {
        return Ok(0);
    }
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut *db)
        .await?)
}

/// Columns of a job's public record, as [`JobRecord::from_row`] reads them.
const RECORD_COLUMNS: &str =
    "id, kernel, params, state, units_total, units_done, flops, quorum, error, created_ms, updated_ms,
     escrow_account, escrow_salt, inputs_purged_ms, purged_ms,
     (SELECT COUNT(*) FROM units WHERE job_id = jobs.id AND state = 'leased') AS units_leased";

/// Fails a job's open units and voids their leases (the job failed or was cancelled);
/// returns how many units were withdrawn.
fn withdraw_units(db: &dyn Db, job: JobId) -> Result<u64, StorageError> {
    let job = job.to_string();
    db.write(
        "UPDATE leases SET state = 'void'
         WHERE state = 'active' AND unit_id IN (SELECT id FROM units WHERE job_id = ?1)",
        params![&job],
    )?;
    let withdrawn = db.execute(
        "UPDATE units SET state = 'failed' WHERE job_id = ?1 AND state IN ('queued', 'leased')",
        params![&job],
    )?;
    Ok(withdrawn)
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_id<T: FromStr>(s: &str) -> Result<T, StorageError> {
    s.parse()
        .map_err(|_| StorageError::Corrupt(format!("bad id {s:?}")))
}

/// Connections (and threads) for reads.
const READERS: usize = 4;

/// Prepared statements kept per PostgreSQL connection: every statement the relay runs,
/// plus the `format!`-built variants, fits.
const STATEMENT_CACHE: usize = 256;

/// Units in one job past which PostgreSQL's statistics are refreshed after it is stored.
const ANALYZE_AFTER_UNITS: usize = 1_000;

/// Rows a job's units are inserted by, largest first: a few statement shapes (each
/// prepared once per connection) cover any number of units.
const UNIT_ROWS: [usize; 4] = [256, 32, 4, 1];

/// Inserts a job's units (`units`' parameters and `flops` by position), queued, with as
/// few statements as [`UNIT_ROWS`] allows.
///
/// Why: each statement has a cost of its own on PostgreSQL's side whatever its rows
/// (planning the executor, locking the table and its indexes), and one a unit made a
/// 100 000-unit submission 100 000 statements.
fn insert_units(
    db: &dyn Db,
    job: &str,
    units: &[String],
    flops: &[u64],
) -> Result<(), StorageError> {
    static STATEMENTS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
        UNIT_ROWS
            .into_iter()
            .map(|rows| {
                let values: Vec<String> = (0..rows)
                    .map(|r| {
                        let p = r * 5;
                        format!(
                            "(?{}, ?{}, ?{}, ?{}, 'queued', ?{})",
                            p + 1,
                            p + 2,
                            p + 3,
                            p + 4,
                            p + 5
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO units (id, job_id, idx, params, state, flops) VALUES {}",
                    values.join(", ")
                );
                (rows, sql)
            })
            .collect()
    });
    let mut start = 0;
    for (rows, sql) in STATEMENTS.iter() {
        while units.len() - start >= *rows {
            let mut values = Vec::with_capacity(rows * 5);
            for (idx, params) in units.iter().enumerate().skip(start).take(*rows) {
                let flops = flops.get(idx).copied().unwrap_or(0);
                values.extend([
                    // Time-ordered, like lease ids: units are leased in order, so the
                    // leases' and results' by-unit indexes grow at their ends.
                    sql::Value::Text(UnitId::from_uuid(uuid::Uuid::now_v7()).to_string()),
                    sql::Value::Text(job.to_owned()),
                    sql::Value::Int(idx as i64),
                    sql::Value::Text(params.clone()),
                    sql::Value::Int(i64::try_from(flops).unwrap_or(i64::MAX)),
                ]);
            }
            let bound: Vec<&dyn sql::ToParam> =
                values.iter().map(|v| v as &dyn sql::ToParam).collect();
            db.write(sql, &bound)?;
            start += rows;
        }
    }
    Ok(())
}

/// Refreshes PostgreSQL's statistics of the tables a draw reads (nothing on SQLite).
///
/// Why: its planner otherwise believes a job's units just stored are a handful, and
/// drew each lease by gathering every queued unit and sorting them (4 ms of server CPU a
/// unit at 5 000 units, 206 units/s) until autovacuum's next look, up to a minute later.
fn refresh_statistics(db: &dyn Db) -> Result<(), StorageError> {
    if db.dialect() == sql::Dialect::Postgres {
        db.write("ANALYZE units, leases, jobs", params![])?;
    }
    Ok(())
}

/// The relay's database.
#[derive(Clone)]
pub struct Storage {
    /// Connections for reads (see [`reader`]).
    reads: reader::Readers,
    /// The one connection that writes, on its own thread (see [`writer`]).
    writer: writer::Writer,
    /// Every ledger entry paying a wallet, announced once committed (receipts).
    feed: tokio::sync::broadcast::Sender<crate::ledger::Entry>,
    /// Where set, jobs are paid for: escrow at submission, payment per settled unit,
    /// refund at the end. Without it (tests of other parts) jobs are free.
    billing: Option<Arc<Billing>>,
    /// (kernel, job quorum) pairs that first leases needed a quorum for (see
    /// [`Storage::lease_work`]).
    quorum_hints: Arc<std::sync::Mutex<Vec<(String, u32)>>>,
    /// Wallets' standing as last committed (see [`wallets::Standings`]).
    standings: Arc<wallets::Standings>,
    /// Each job's key for its data at rest.
    keys: Arc<job_keys::JobKeys>,
    /// This process's name among relays sharing the database: on its leases and its
    /// heartbeat (see [`Storage::heartbeat`]).
    relay: Arc<str>,
    /// Where the feed of payments comes from the ledger's tail rather than from this
    /// process's own payouts (PostgreSQL: other relays pay this relay's volunteers too).
    follows_ledger: bool,
    /// What other relays on the database changed (see [`others`]).
    changes: tokio::sync::broadcast::Sender<Changed>,
    /// Dropped with the last clone, which ends the followers.
    alive: Arc<()>,
}

/// The relay's signing key and prices.
#[derive(Debug)]
pub struct Billing {
    /// Signs every ledger entry.
    pub key: WalletKey,
    /// Prices of new jobs and shares of their payments.
    pub pricing: Pricing,
}

fn job_bill(db: &dyn Db, job: &str) -> Result<Option<JobBill>, StorageError> {
    let row = db.query_opt(
        "SELECT submitter, price_per_gflop FROM jobs WHERE id = ?1",
        params![job],
        |r| Ok((r.get::<Option<String>>(0)?, r.get::<i64>(1)?)),
    )?;
    let Some((submitter, price)) = row else {
        return Ok(None);
    };
    Ok(bill_of(submitter.as_deref(), price)?)
}

/// `job`'s state and progress, as closing it reads them; `None` for an unknown job.
fn load_closing_job(db: &dyn Db, job: JobId) -> Result<Option<ClosingJob>, StorageError> {
    db.query_opt(
        "SELECT state, units_done, units_total FROM jobs WHERE id = ?1",
        params![job.to_string()],
        |r| {
            Ok(ClosingJob {
                state: r.get(0)?,
                units_done: r.get(1)?,
                units_total: r.get(2)?,
            })
        },
    )
}

/// Fails an open job with `reason` inside the caller's transaction, as
/// [`decide_fail`] decides: its units are withdrawn, what its settled units earned is
/// paid out and what is left of its escrow goes back to the submitter. Returns the
/// payout's entries, for receipts.
fn fail_in(
    db: &dyn Db,
    billing: Option<&Billing>,
    job: JobId,
    reason: &str,
) -> Result<Vec<crate::ledger::Entry>, StorageError> {
    let close = decide_fail(load_closing_job(db, job)?.as_ref());
    if close.ends {
        db.write(
            "UPDATE jobs SET state = 'failed', error = ?1, updated_ms = ?2 WHERE id = ?3",
            params![reason, now_ms(), job.to_string()],
        )?;
        others::tell_other_relays(db)?;
    }
    if close.withdraws_units {
        withdraw_units(db, job)?;
    }
    if !close.closes_escrow {
        return Ok(Vec::new());
    }
    settle_escrow(db, billing, job)
}

/// Closes a finished, failed or cancelled job's escrow: pays out what its settled units
/// accrued, then returns the rest to its submitter. Returns the payout's entries.
fn settle_escrow(
    db: &dyn Db,
    billing: Option<&Billing>,
    job: JobId,
) -> Result<Vec<crate::ledger::Entry>, StorageError> {
    let Some(billing) = billing else {
        return Ok(Vec::new());
    };
    let paid = ledger::pay_out(db, &billing.key, Some(job), None).map_err(StorageError::ledger)?;
    if let Some(bill) = job_bill(db, &job.to_string())? {
        ledger::refund_job(db, &billing.key, job, bill.submitter).map_err(StorageError::ledger)?;
    }
    Ok(paid)
}

/// Creates the database file at `path` if it is missing, and makes it and any WAL and
/// shared-memory files beside it readable and writable by their owner only (on unix),
/// tightening files an older relay left readable by others. SQLite creates its `-wal`
/// and `-shm` files with the database file's mode, so new ones follow.
fn make_database_private(path: &Path) -> Result<(), StorageError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let denied = |file: &Path, source| StorageError::FileMode {
            path: file.display().to_string(),
            source,
        };
        // Created here rather than by SQLite so it is never readable by others, not even
        // for the moment between its creation and a chmod. Empty is a valid database.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| denied(path, e))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            let file = Path::new(&file);
            match std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(denied(file, e)),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Storage {
    /// The same database, billing jobs with `billing`.
    pub fn with_billing(mut self, billing: Billing) -> Self {
        self.billing = Some(Arc::new(billing));
        self
    }

    /// Payments to wallets as they are committed. A slow subscriber misses old ones
    /// (the ledger keeps them all).
    pub fn ledger_feed(&self) -> tokio::sync::broadcast::Receiver<crate::ledger::Entry> {
        self.feed.subscribe()
    }

    /// Sends committed payout entries to [`Storage::ledger_feed`]'s subscribers. Nobody
    /// listening is fine: receipts are a courtesy, the ledger is the record.
    fn announce(&self, entries: &[crate::ledger::Entry]) {
        if self.follows_ledger {
            return;
        }
        for entry in entries {
            let _ = self.feed.send(entry.clone());
        }
    }

    /// The billing settings, where jobs are paid for.
    pub fn billing(&self) -> Option<&Billing> {
        self.billing.as_deref()
    }

    /// Opens (creating if needed) `DIR/starling.sqlite3` and applies migrations. A new
    /// data directory is its owner's only (0700), and the database's files always are
    /// (0600).
    pub async fn open(data_dir: &Path) -> Result<Self, StorageError> {
        create_private_dir(data_dir).map_err(|source| StorageError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join("starling.sqlite3");
        make_database_private(&path)?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // Migrations run before the writer opens, on a connection that is closed after:
        // two writers would meet in SQLite's lock, whose busy handler sleeps. They run
        // with foreign keys off, as sqlite.org's procedure for rebuilding a table asks
        // (dropping a parent table would otherwise delete its children's rows), and the
        // keys are checked when one ran: the check reads every reference in the file,
        // which an ordinary start need not pay for.
        let mut migrating = options.clone().foreign_keys(false).connect().await?;
        let before = applied_migrations(&mut migrating).await?;
        sqlx::migrate!("./migrations").run(&mut migrating).await?;
        if applied_migrations(&mut migrating).await? != before {
            let dangling: Vec<(String, Option<i64>)> =
                sqlx::query_as(r#"SELECT "table", rowid FROM pragma_foreign_key_check LIMIT 5"#)
                    .fetch_all(&mut migrating)
                    .await?;
            if !dangling.is_empty() {
                return Err(StorageError::Corrupt(format!(
                    "rows whose foreign keys point nowhere after migrating: {dangling:?}"
                )));
            }
        }
        migrating.close().await?;
        Ok(Self {
            reads: reader::Readers::open_sqlite(&path, READERS)?,
            writer: writer::Writer::open(&path)?,
            feed: tokio::sync::broadcast::channel(1024).0,
            billing: None,
            quorum_hints: Arc::default(),
            standings: Arc::default(),
            keys: Arc::new(job_keys::JobKeys::open(data_dir)?),
            relay: uuid::Uuid::new_v4().to_string().into(),
            follows_ledger: false,
            changes: tokio::sync::broadcast::channel(64).0,
            alive: Arc::default(),
        })
    }

    /// Opens the PostgreSQL database at `url` (`postgres://USER:PASS@HOST/DB`) and applies
    /// its migrations; `data_dir` holds what is not in the database (the jobs' data keys).
    /// An unreachable server or a bad URL is an error here. Any number of relays (and
    /// administrative commands) may open one database at once.
    pub async fn open_postgres(url: &str, data_dir: &Path) -> Result<Self, StorageError> {
        Self::open_postgres_following(url, data_dir, Following::default()).await
    }

    /// On PostgreSQL, whether the writer sends a write whose count nobody reads with the
    /// next statement that needs an answer (on, the default) or waits for each (the
    /// bench's baseline: see `storage/pipeline.rs`). Takes effect from the next group.
    pub fn pipeline_writes(&self, on: bool) {
        self.writer
            .pipelined
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Round trips the writer has made to PostgreSQL so far (0 on SQLite): the bench's
    /// measure of what pipelining saves.
    pub fn writer_round_trips(&self) -> u64 {
        self.writer
            .round_trips
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long this relay's writer has held PostgreSQL's write turn so far, alone and
    /// shared (zero on SQLite): groups that hold it alone run one at a time across all
    /// relays, so the first is the bench's measure of what bounds the writes of all
    /// relays together.
    pub fn writer_time_in_turn(&self) -> (Duration, Duration) {
        let times = &self.writer.in_turn_nanos;
        let read = |n: &std::sync::atomic::AtomicU64| {
            Duration::from_nanos(n.load(std::sync::atomic::Ordering::Relaxed))
        };
        (read(&times.alone), read(&times.shared))
    }

    /// [`Storage::open_postgres`], learning what other relays change as `following` says.
    pub async fn open_postgres_following(
        url: &str,
        data_dir: &Path,
        following: Following,
    ) -> Result<Self, StorageError> {
        create_private_dir(data_dir).map_err(|source| StorageError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = sqlx::postgres::PgConnectOptions::from_str(url)?
            .statement_cache_capacity(STATEMENT_CACHE)
            .application_name("starling-relay");
        // sqlx's PostgreSQL migrator holds an advisory lock while it runs, so relays
        // started together migrate one at a time.
        let mut migrating = postgres::connect(&options).await?;
        sqlx::migrate!("./migrations-postgres")
            .run(&mut migrating)
            .await?;
        migrating.close().await?;
        // Bumped by any connection that finds the server gone: the others then connect
        // again before their next use instead of each failing one request first.
        let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let storage = Self {
            reads: reader::Readers::open_postgres(&options, READERS, &lost).await?,
            writer: writer::Writer::open_postgres(url, lost).await?,
            feed: tokio::sync::broadcast::channel(1024).0,
            billing: None,
            quorum_hints: Arc::default(),
            standings: Arc::default(),
            keys: Arc::new(job_keys::JobKeys::in_rows(data_dir)?),
            relay: uuid::Uuid::new_v4().to_string().into(),
            follows_ledger: true,
            changes: tokio::sync::broadcast::channel(64).0,
            alive: Arc::default(),
        };
        storage.follow_ledger().await?;
        storage.follow_others(following.read_every, following.notified.then_some(options));
        Ok(storage)
    }

    /// Stores a new job and all its units in one transaction, and (where jobs are billed
    /// and the job names its submitter) moves its price into escrow in the same one: a
    /// submitter who cannot cover it gets [`LedgerError::Overdraft`] and nothing is stored.
    pub async fn insert_job(&self, job: &NewJob) -> Result<(), StorageError> {
        let job_id = job.id;
        let many_units = job.units.len() >= ANALYZE_AFTER_UNITS;
        let bill = match (self.billing(), job.submitter) {
            (Some(billing), Some(submitter)) => Some((billing, submitter)),
            _ => None,
        };
        let price = bill.map_or(MicroCredits(0), |(b, _)| b.pricing.price_per_gflop);
        // A unit's price does not depend on how it is shared, so the job's budget is
        // exactly what its units will pay out.
        let budget = if bill.is_some() {
            let flops =
                (0..job.units.len()).map(|idx| job.unit_flops.get(idx).copied().unwrap_or(0));
            job_budget(flops, price).map_err(|e| match e {
                BudgetError::UnitPrice(e) => StorageError::Corrupt(format!("unit price: {e}")),
                BudgetError::Total(e) => StorageError::ledger(e.into()),
            })?
        } else {
            MicroCredits(0)
        };
        let escrow = bill.map(|(billing, submitter)| (billing.key.clone(), submitter));
        // Sealed before the write (which may run more than once), with a key on disk first:
        // a crash in between leaves a key without a job, never a job without its key.
        let (key, wrapped_key) = self.keys.create(job.id)?;
        let sealed_input = key.seal(job.id, job_keys::Part::Input, &job.input)?;
        let job = NewJob {
            input: Vec::new(),
            units: job.units.clone(),
            unit_flops: job.unit_flops.clone(),
            params: job.params.clone(),
            kernel: job.kernel.clone(),
            idempotency: job.idempotency.clone(),
            ..*job
        };
        let inserted = self
            .writer
            .exec(move |db| {
                let now = now_ms();
                let id = job.id.to_string();
                if let (Some(submitter), Some(limit)) = (job.submitter, job.max_active) {
                    // Relays sharing a database count under one lock (the ledger's, which
                    // a billed insert takes anyway): two relays each counting one job
                    // short of the limit would otherwise both insert.
                    ledger::lock_ledger(db)?;
                    let active: i64 = db.query_one(
                        "SELECT COUNT(*) FROM jobs
                             WHERE submitter = ?1 AND (state = 'queued' OR state = 'running')",
                        params![submitter.to_string()],
                        |r| r.get(0),
                    )?;
                    let active = u64::try_from(active).unwrap_or(0);
                    if active >= limit {
                        return Err(StorageError::TooManyActiveJobs { active });
                    }
                }
                let salt = EscrowRef::new_salt();
                let escrow_account = Account::Escrow(EscrowRef::for_job(job.id, &salt));
                db.write(
                    "INSERT INTO jobs (id, kernel, params, state, units_total, flops, quorum,
                                       submitter, price_per_gflop, created_ms, updated_ms,
                                       escrow_salt, escrow_account, sealed, quorum_explicit,
                                       wrapped_key)
                     VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, 1, ?12,
                             ?13)",
                    params![
                        id,
                        job.kernel,
                        job.params.to_string(),
                        job.units.len() as i64,
                        job.flops as i64,
                        i64::from(job.quorum.clamp(1, 5)),
                        // Its owner, who alone may see it, whether or not it is billed.
                        job.submitter.map(|submitter| submitter.to_string()),
                        i64::try_from(price.0).unwrap_or(i64::MAX),
                        now,
                        salt,
                        escrow_account.to_string(),
                        job.quorum_explicit,
                        wrapped_key,
                    ],
                )?;
                others::tell_other_relays(db)?;
                if let Some(claim) = &job.idempotency {
                    // A key taken (by a submission that committed first, on any relay)
                    // undoes this job: the caller answers with the key's job instead.
                    let claimed = db.execute(
                        "INSERT INTO idempotency_keys (key, request_sha256, job_id, created_ms)
                             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO NOTHING",
                        params![claim.key, claim.request_sha256, id, now],
                    )?;
                    if claimed == 0 {
                        return Err(StorageError::IdempotencyKeyTaken);
                    }
                }
                db.write(
                    "INSERT INTO job_inputs (job_id, input) VALUES (?1, ?2)",
                    params![id, sealed_input],
                )?;
                insert_units(db, &id, &job.units, &job.unit_flops)?;
                if let Some((key, submitter)) = &escrow {
                    if !budget.is_zero() {
                        ledger::escrow_job(db, key, *submitter, job.id, budget)
                            .map_err(StorageError::ledger)?;
                    }
                }
                Ok(())
            })
            .await;
        if inserted.is_err() {
            // Nothing was stored: the key protects nothing.
            if let Err(e) = self.keys.destroy(job_id) {
                tracing::warn!(job = %job_id, "cannot remove the key of a job not stored: {e}");
            }
        }
        if inserted.is_ok() && many_units {
            self.writer.exec(refresh_statistics).await?;
        }
        inserted
    }

    /// `job`'s key, for data it sealed.
    fn job_key(
        &self,
        job: JobId,
        wrapped: Option<&[u8]>,
    ) -> Result<job_keys::JobKey, StorageError> {
        self.keys
            .get(job, wrapped)?
            .ok_or_else(|| StorageError::Sealing(format!("job {job} has no key (purged?)")))
    }

    /// A job's public record (without input or result bytes).
    pub async fn job(&self, id: JobId) -> Result<Option<JobRecord>, StorageError> {
        let id = id.to_string();
        self.reads
            .read(move |db| {
                db.query_opt(
                    &format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?1"),
                    params![id],
                    JobRecord::from_row,
                )
            })
            .await
    }

    /// A job's state, kernel and (once done) result bytes; `None` when it does not exist.
    pub async fn job_result(&self, id: JobId) -> Result<Option<JobOutput>, StorageError> {
        let job = id.to_string();
        let row = self
            .reads
            .read(move |db| {
                db.query_opt(
                    "SELECT state, kernel, result, sealed, purged_ms, wrapped_key
                     FROM jobs WHERE id = ?1",
                    params![job],
                    |r| {
                        Ok((
                            r.get::<String>(0)?,
                            r.get::<String>(1)?,
                            r.get::<Option<Vec<u8>>>(2)?,
                            r.get::<bool>(3)?,
                            r.get::<Option<i64>>(4)?,
                            r.get::<Option<Vec<u8>>>(5)?,
                        ))
                    },
                )
            })
            .await?;
        let Some((state, kernel, result, sealed, purged_ms, wrapped_key)) = row else {
            return Ok(None);
        };
        let result = match (result, sealed) {
            (Some(sealed), true) => Some(self.job_key(id, wrapped_key.as_deref())?.open(
                id,
                job_keys::Part::Result,
                &sealed,
            )?),
            (plain, _) => plain,
        };
        Ok(Some(JobOutput {
            state: model::parse_job_state(&state)?,
            kernel,
            result,
            purged_ms,
        }))
    }

    /// A job's packed input blob; [`StorageError::Sealing`] once it was purged.
    pub async fn job_input(&self, id: JobId) -> Result<Vec<u8>, StorageError> {
        let job = id.to_string();
        let (input, sealed, wrapped_key) = self
            .reads
            .read(move |db| {
                db.query_one(
                    "SELECT job_inputs.input, jobs.sealed, jobs.wrapped_key FROM jobs
                     LEFT JOIN job_inputs ON job_inputs.job_id = jobs.id WHERE jobs.id = ?1",
                    params![job],
                    |r| {
                        Ok((
                            r.get::<Option<Vec<u8>>>(0)?,
                            r.get::<bool>(1)?,
                            r.get::<Option<Vec<u8>>>(2)?,
                        ))
                    },
                )
            })
            .await?;
        let input =
            input.ok_or_else(|| StorageError::Sealing(format!("job {id}'s input was purged")))?;
        if sealed {
            self.job_key(id, wrapped_key.as_deref())?
                .open(id, job_keys::Part::Input, &input)
        } else {
            Ok(input)
        }
    }

    /// Every unit output of a job whose units are all done, in unit order.
    pub async fn unit_outputs(&self, job: JobId) -> Result<Vec<Vec<u8>>, StorageError> {
        let id = job.to_string();
        let outputs: Vec<Option<Vec<u8>>> = self
            .reads
            .read(move |db| {
                db.query_all(
                    "SELECT output FROM units WHERE job_id = ?1 ORDER BY idx",
                    params![id],
                    |r| r.get(0),
                )
            })
            .await?;
        outputs
            .into_iter()
            .map(|o| {
                o.ok_or_else(|| {
                    StorageError::Corrupt(format!("job {job} merged with a unit not done"))
                })
            })
            .collect()
    }

    /// Stores the merged result and marks the job done (once; later calls change nothing),
    /// paying out what its units earned and refunding what is left of its escrow.
    pub async fn finish_job(&self, job: JobId, result: &[u8]) -> Result<bool, StorageError> {
        let id = job.to_string();
        let (sealed, wrapped_key): (bool, Option<Vec<u8>>) = self
            .reads
            .read(move |db| {
                db.query_opt(
                    "SELECT sealed, wrapped_key FROM jobs WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await?
            .unwrap_or((false, None));
        let result = if sealed {
            self.job_key(job, wrapped_key.as_deref())?
                .seal(job, job_keys::Part::Result, result)?
        } else {
            result.to_vec()
        };
        let billing = self.billing.clone();
        let (finished, paid) = self
            .writer
            .exec(move |db| {
                let close = decide_finish(load_closing_job(db, job)?.as_ref());
                if close.ends {
                    db.write("UPDATE jobs SET state = 'done', result = ?1, updated_ms = ?2 WHERE id = ?3", params![result, now_ms(), job.to_string()])?;
                    others::tell_other_relays(db)?;
                }
                let paid = if close.closes_escrow {
                    settle_escrow(db, billing.as_deref(), job)?
                } else {
                    Vec::new()
                };
                Ok::<_, StorageError>((close.ends, paid))
            })
            .await?;
        self.announce(&paid);
        Ok(finished)
    }

    /// Marks a job failed with a reason and withdraws its outstanding units.
    pub async fn fail_job(&self, job: JobId, reason: &str) -> Result<(), StorageError> {
        let reason = reason.to_owned();
        let billing = self.billing.clone();
        let paid = self
            .writer
            .exec(move |db| fail_in(db, billing.as_deref(), job, &reason))
            .await?;
        self.announce(&paid);
        Ok(())
    }

    /// Jobs with every unit done but no merged result (the relay stopped between the two,
    /// or no result saw the job complete), whose row did not change since `before_ms`
    /// (`i64::MAX` for all: a job just completed is being merged by whoever settled it).
    pub async fn jobs_awaiting_merge(&self, before_ms: i64) -> Result<Vec<JobId>, StorageError> {
        let ids: Vec<String> = self
            .reads
            .read({
                move |db| {
                    db.query_all(
                        "SELECT id FROM jobs
                         WHERE state = 'running' AND units_done = units_total
                           AND updated_ms < ?1",
                        params![before_ms],
                        |r| r.get(0),
                    )
                }
            })
            .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[tokio::test]
    async fn the_data_dir_and_database_are_readable_by_the_owner_only(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let root = std::env::temp_dir().join(format!("starling-modes-{}", uuid::Uuid::new_v4()));
        let dir = root.join("data");
        let storage = Storage::open(&dir).await?;
        // A write, so the WAL and its index exist.
        storage
            .create_account(&WalletKey::from_seed([1; 32]), MicroCredits(5), None)
            .await?;
        assert_eq!(mode(&dir), 0o700, "data dir");
        let db = dir.join("starling.sqlite3");
        for file in [
            db.clone(),
            dir.join("starling.sqlite3-wal"),
            dir.join("starling.sqlite3-shm"),
        ] {
            if file.exists() {
                assert_eq!(mode(&file), 0o600, "{}", file.display());
            }
        }
        drop(storage);
        // A database left readable by everyone (made before this check existed) is
        // tightened when the relay opens it.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644))?;
        let storage = Storage::open(&dir).await?;
        assert_eq!(mode(&db), 0o600, "reopened database");
        drop(storage);
        let _ = std::fs::remove_dir_all(&root);
        Ok(())
    }
}
