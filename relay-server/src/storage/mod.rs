//! Durable state in SQLite: jobs, units, leases, results and wallets. Every state
//! transition is one transaction, so a crash at any point leaves either the old or the
//! new state.
//!
//! A unit's life: `queued` (needs leases) → `leased` (enough out) → back to `queued` when
//! a lease is lost or replicas disagree → `done` once a quorum of results agrees, or
//! `failed`. Leases go `active` → `returned` | `expired` | `released` | `void`; results
//! go `pending` → `valid` | `invalid`. Judging a result happens in the transaction that
//! stores it, so there is no half-judged state to recover.
//!
//! The HTTP layer and the scheduler call these methods; nothing else touches SQL.

use crate::ledger::{split_unit_price, AccountId, MicroCredits};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use starling_protocol::{JobId, UnitId, WalletKey};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub mod job_queries;
mod leases;
mod ledger;
mod model;
mod network;
mod results;
mod wallets;
pub use leases::LeaseRequest;
pub use ledger::LedgerError;
pub use model::{JobOutput, JobRecord, JobState, LeaseContext, LeasedUnit, NewJob, PeerId};
pub use network::Earner;
pub use results::{Recorded, ReturnedResult, UnitAudit};
pub use wallets::WalletRecord;

/// Errors from the database layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
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
    /// A stored value does not parse; the database was edited by hand or is corrupt.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Credit could not move (for example, the submitter cannot cover a job).
    #[error(transparent)]
    Ledger(Box<LedgerError>),
}

impl StorageError {
    fn ledger(e: LedgerError) -> Self {
        match e {
            LedgerError::Storage(inner) => inner,
            other => Self::Ledger(Box::new(other)),
        }
    }
}

/// Sets open units' state from what is outstanding: `leased` while active leases plus
/// results awaiting their replicas cover `wanted`, else `queued` (leasable). Callers add
/// `AND id = ?` or nothing (all open units).
const REFRESH_UNITS: &str = "UPDATE units SET state = CASE WHEN
        (SELECT COUNT(*) FROM leases WHERE leases.unit_id = units.id AND leases.state = 'active')
      + (SELECT COUNT(*) FROM results WHERE results.unit_id = units.id AND results.state = 'pending')
      >= units.wanted THEN 'leased' ELSE 'queued' END
    WHERE state IN ('queued', 'leased')";

async fn refresh_unit(tx: &mut Tx<'_>, unit: &str) -> Result<(), StorageError> {
    sqlx::query(&format!("{REFRESH_UNITS} AND id = ?"))
        .bind(unit)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Columns of a job's public record, as [`JobRecord::from_row`] reads them.
const RECORD_COLUMNS: &str =
    "id, kernel, params, state, units_total, units_done, flops, quorum, error, created_ms, updated_ms,
     (SELECT COUNT(*) FROM units WHERE job_id = jobs.id AND state = 'leased') AS units_leased";

/// Fails a job's open units and voids their leases (the job failed or was cancelled);
/// returns how many units were withdrawn.
async fn withdraw_units(tx: &mut Tx<'_>, job: JobId) -> Result<u64, StorageError> {
    sqlx::query(
        "UPDATE leases SET state = 'void'
         WHERE state = 'active' AND unit_id IN (SELECT id FROM units WHERE job_id = ?)",
    )
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?;
    let withdrawn = sqlx::query(
        "UPDATE units SET state = 'failed' WHERE job_id = ? AND state IN ('queued', 'leased')",
    )
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(withdrawn.rows_affected())
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Sqlite>;

/// How long a lease lasts: until `start_ms + clamp(slack_ms + flops * ms_per_flop,
/// min_ms, max_ms)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseTerms {
    /// When the lease starts, Unix milliseconds.
    pub start_ms: i64,
    /// Shortest lease.
    pub min_ms: i64,
    /// Longest lease.
    pub max_ms: i64,
    /// Milliseconds added to every lease (network, queueing).
    pub slack_ms: i64,
    /// Milliseconds granted per FLOP of the unit.
    pub ms_per_flop: f64,
}

impl LeaseTerms {
    /// A lease that ends exactly at `deadline_ms`, whatever the unit costs.
    pub fn until(deadline_ms: i64) -> Self {
        Self {
            start_ms: deadline_ms,
            min_ms: 0,
            max_ms: 0,
            slack_ms: 0,
            ms_per_flop: 0.0,
        }
    }
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

/// The relay's database.
#[derive(Clone)]
pub struct Storage {
    /// Connections for reads.
    pool: SqlitePool,
    /// The one connection that writes.
    writer: SqlitePool,
    /// Every ledger entry paying a wallet, announced once committed (receipts).
    feed: tokio::sync::broadcast::Sender<crate::ledger::Entry>,
    /// Where set, jobs are paid for: escrow at submission, payment per settled unit,
    /// refund at the end. Without it (tests of other parts) jobs are free.
    billing: Option<Arc<Billing>>,
}

/// What a unit of work costs and how its price is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pricing {
    /// Price of one GFLOP of verified work.
    pub price_per_gflop: MicroCredits,
    /// The embedding site's share of a unit's price, parts per million.
    pub site_share_ppm: u32,
    /// The platform's fee, parts per million.
    pub platform_fee_ppm: u32,
}

/// The relay's signing key and prices.
#[derive(Debug)]
pub struct Billing {
    /// Signs every ledger entry.
    pub key: WalletKey,
    /// Prices of new jobs and shares of their payments.
    pub pricing: Pricing,
}

/// A job's bill: who pays and at what price per GFLOP (fixed when it was submitted).
#[derive(Debug, Clone, Copy)]
struct JobBill {
    submitter: AccountId,
    price_per_gflop: MicroCredits,
}

async fn job_bill(tx: &mut Tx<'_>, job: &str) -> Result<Option<JobBill>, StorageError> {
    let row = sqlx::query("SELECT submitter, price_per_gflop FROM jobs WHERE id = ?")
        .bind(job)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let submitter: Option<String> = row.try_get("submitter")?;
    let price: i64 = row.try_get("price_per_gflop")?;
    Ok(match submitter {
        Some(s) if price > 0 => Some(JobBill {
            submitter: s
                .parse()
                .map_err(|_| StorageError::Corrupt(format!("submitter {s:?}")))?,
            price_per_gflop: MicroCredits(u64::try_from(price).unwrap_or(0)),
        }),
        _ => None,
    })
}

/// Fails an open job with `reason` inside `tx`: its units are withdrawn and what is left
/// of its escrow goes back to the submitter.
async fn fail_in(
    tx: &mut Tx<'_>,
    billing: Option<&Billing>,
    job: JobId,
    reason: &str,
) -> Result<(), StorageError> {
    sqlx::query(
        "UPDATE jobs SET state = 'failed', error = ?, updated_ms = ?
         WHERE id = ? AND state IN ('queued', 'running')",
    )
    .bind(reason)
    .bind(now_ms())
    .bind(job.to_string())
    .execute(&mut **tx)
    .await?;
    withdraw_units(tx, job).await?;
    refund(tx, billing, job).await
}

/// Returns what is left of a finished, failed or cancelled job's escrow to its submitter.
async fn refund(
    tx: &mut Tx<'_>,
    billing: Option<&Billing>,
    job: JobId,
) -> Result<(), StorageError> {
    let Some(billing) = billing else {
        return Ok(());
    };
    if let Some(bill) = job_bill(tx, &job.to_string()).await? {
        ledger::refund_job(tx, &billing.key, job, bill.submitter)
            .await
            .map_err(StorageError::ledger)?;
    }
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

    /// The billing settings, where jobs are paid for.
    pub fn billing(&self) -> Option<&Billing> {
        self.billing.as_deref()
    }

    /// Opens (creating if needed) `DIR/starling.sqlite3` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StorageError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let options = SqliteConnectOptions::new()
            .filename(data_dir.join("starling.sqlite3"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode survives process crashes (kill -9); only an OS crash or
            // power loss can drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // One connection writes, so our own transactions queue in the pool (fairly, without
        // sleeping) instead of meeting in SQLite's lock, whose busy handler sleeps up to
        // 100 ms at a time; readers use the others, and WAL lets them read during writes.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            writer,
            feed: tokio::sync::broadcast::channel(1024).0,
            billing: None,
        })
    }

    /// Stores a new job and all its units in one transaction, and (where jobs are billed
    /// and the job names its submitter) moves its price into escrow in the same one: a
    /// submitter who cannot cover it gets [`LedgerError::Overdraft`] and nothing is stored.
    pub async fn insert_job(&self, job: &NewJob) -> Result<(), StorageError> {
        let bill = match (self.billing(), job.submitter) {
            (Some(billing), Some(submitter)) => Some((billing, submitter)),
            _ => None,
        };
        let price = bill.map_or(MicroCredits(0), |(b, _)| b.pricing.price_per_gflop);
        let now = now_ms();
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO jobs (id, kernel, params, input, state, units_total, flops, quorum,
                               submitter, price_per_gflop, created_ms, updated_ms)
             VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(job.id.to_string())
        .bind(&job.kernel)
        .bind(job.params.to_string())
        .bind(&job.input)
        .bind(job.units.len() as i64)
        .bind(job.flops as i64)
        .bind(i64::from(job.quorum.clamp(1, 5)))
        .bind(bill.map(|(_, submitter)| submitter.to_string()))
        .bind(i64::try_from(price.0).unwrap_or(i64::MAX))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (idx, params) in job.units.iter().enumerate() {
            let flops = job.unit_flops.get(idx).copied().unwrap_or(0);
            sqlx::query(
                "INSERT INTO units (id, job_id, idx, params, state, flops) VALUES (?, ?, ?, ?, 'queued', ?)",
            )
            .bind(UnitId::from_uuid(uuid::Uuid::new_v4()).to_string())
            .bind(job.id.to_string())
            .bind(idx as i64)
            .bind(params)
            .bind(i64::try_from(flops).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        }
        if let Some((billing, submitter)) = bill {
            // A unit's price does not depend on how it is shared, so the job's budget is
            // exactly what its units will pay out.
            let mut budget = MicroCredits(0);
            for (idx, _) in job.units.iter().enumerate() {
                let flops = job.unit_flops.get(idx).copied().unwrap_or(0);
                let unit = split_unit_price(flops, price, 0, 0, 1, false)
                    .map_err(|e| StorageError::Corrupt(format!("unit price: {e}")))?;
                budget = budget
                    .checked_add(unit.price)
                    .map_err(|e| StorageError::ledger(e.into()))?;
            }
            if !budget.is_zero() {
                ledger::escrow_job(&mut tx, &billing.key, submitter, job.id, budget)
                    .await
                    .map_err(StorageError::ledger)?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A job's public record (without input or result bytes).
    pub async fn job(&self, id: JobId) -> Result<Option<JobRecord>, StorageError> {
        let row = sqlx::query(&format!("SELECT {RECORD_COLUMNS} FROM jobs WHERE id = ?"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| JobRecord::from_row(&r)).transpose()
    }

    /// A job's state, kernel and (once done) result bytes; `None` when it does not exist.
    pub async fn job_result(&self, id: JobId) -> Result<Option<JobOutput>, StorageError> {
        let row = sqlx::query("SELECT state, kernel, result FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(JobOutput {
                state: JobState::parse(r.try_get("state")?)?,
                kernel: r.try_get("kernel")?,
                result: r.try_get("result")?,
            })
        })
        .transpose()
    }

    /// A job's packed input blob.
    pub async fn job_input(&self, id: JobId) -> Result<Vec<u8>, StorageError> {
        Ok(sqlx::query_scalar("SELECT input FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?)
    }

    /// Every unit output of a job whose units are all done, in unit order.
    pub async fn unit_outputs(&self, job: JobId) -> Result<Vec<Vec<u8>>, StorageError> {
        let outputs: Vec<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT output FROM units WHERE job_id = ? ORDER BY idx")
                .bind(job.to_string())
                .fetch_all(&self.pool)
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

    /// Stores the merged result and marks the job done (once; later calls change nothing).
    pub async fn finish_job(&self, job: JobId, result: &[u8]) -> Result<bool, StorageError> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'done', result = ?, updated_ms = ?
             WHERE id = ? AND state = 'running' AND units_done = units_total",
        )
        .bind(result)
        .bind(now_ms())
        .bind(job.to_string())
        .execute(&mut *tx)
        .await?;
        let finished = updated.rows_affected() == 1;
        if finished {
            refund(&mut tx, self.billing(), job).await?;
        }
        tx.commit().await?;
        Ok(finished)
    }

    /// Marks a job failed with a reason and withdraws its outstanding units.
    pub async fn fail_job(&self, job: JobId, reason: &str) -> Result<(), StorageError> {
        let mut tx = self.write().await?;
        fail_in(&mut tx, self.billing(), job, reason).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Jobs with every unit done but no merged result (the relay stopped between the two).
    pub async fn jobs_awaiting_merge(&self) -> Result<Vec<JobId>, StorageError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND units_done = units_total",
        )
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }

    /// A write transaction that takes SQLite's write lock at once, so two of them never
    /// read the same state and then collide on their first write.
    async fn write(&self) -> Result<Tx<'static>, StorageError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}
