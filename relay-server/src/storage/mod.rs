//! Durable state in SQLite: jobs, units and leases. Every state transition is one
//! transaction, so a crash at any point leaves either the old or the new state.
//!
//! The HTTP layer and the scheduler call these methods; nothing else touches SQL.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use starling_protocol::{JobId, LeaseId, UnitId};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub mod job_queries;
mod model;
pub use model::{CurrentLease, JobOutput, JobRecord, JobState, LeasedUnit, NewJob, PeerId};

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
}

/// What happened to a submitted result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// Recorded; the job has more units to go.
    Accepted { job: JobId },
    /// Recorded, and it was the job's last unit: the job is ready to merge.
    JobComplete { job: JobId },
    /// The lease is unknown, expired, reissued, or already answered: nothing changed.
    Stale,
}

/// Puts leased units back in the queue; callers narrow it with `AND …`. The table's CHECK
/// requires a queued unit to carry no lease, peer or deadline, hence all four columns.
const REQUEUE_LEASED: &str =
    "UPDATE units SET state = 'queued', lease_id = NULL, lease_peer = NULL, lease_deadline = NULL
     WHERE state = 'leased'";

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
    pool: SqlitePool,
}

impl Storage {
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
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Stores a new job and all its units in one transaction.
    pub async fn insert_job(&self, job: &NewJob) -> Result<(), StorageError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO jobs (id, kernel, params, input, state, units_total, flops, created_ms, updated_ms)
             VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
        )
        .bind(job.id.to_string())
        .bind(&job.kernel)
        .bind(job.params.to_string())
        .bind(&job.input)
        .bind(job.units.len() as i64)
        .bind(job.flops as i64)
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
        tx.commit().await?;
        Ok(())
    }

    /// A job's public record (without input or result bytes).
    pub async fn job(&self, id: JobId) -> Result<Option<JobRecord>, StorageError> {
        let row = sqlx::query(
            "SELECT id, kernel, params, state, units_total, units_done, flops, error, created_ms, updated_ms,
                    (SELECT COUNT(*) FROM units WHERE job_id = jobs.id AND state = 'leased') AS units_leased
             FROM jobs WHERE id = ?",
        )
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

    /// Leases the oldest queued unit to `peer`, or returns `None` when nothing is queued.
    /// The lease's deadline follows `terms` and the unit's FLOPs.
    pub async fn lease_next(
        &self,
        peer: PeerId,
        lease: LeaseId,
        terms: LeaseTerms,
    ) -> Result<Option<LeasedUnit>, StorageError> {
        let mut tx = self.pool.begin().await?;
        // SQLite's two-argument MIN/MAX are scalar: clamp(slack + flops * rate, min, max).
        let row = sqlx::query(
            "UPDATE units SET state = 'leased', lease_id = ?, lease_peer = ?,
                              lease_deadline = ? + MIN(?, MAX(?, CAST(? + flops * ? AS INTEGER))),
                              attempts = attempts + 1
             WHERE id = (SELECT units.id FROM units JOIN jobs ON jobs.id = units.job_id
                         WHERE units.state = 'queued' AND jobs.state IN ('queued', 'running')
                         ORDER BY units.rowid LIMIT 1)
             RETURNING id, job_id, params, flops, lease_deadline",
        )
        .bind(lease.to_string())
        .bind(peer.to_string())
        .bind(terms.start_ms)
        .bind(terms.max_ms)
        .bind(terms.min_ms)
        .bind(terms.slack_ms)
        .bind(terms.ms_per_flop)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job_id: String = row.try_get("job_id")?;
        let job = sqlx::query(
            "UPDATE jobs SET state = 'running', updated_ms = ? WHERE id = ?
             RETURNING kernel, params",
        )
        .bind(now_ms())
        .bind(&job_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(LeasedUnit {
            lease,
            unit: parse_id(row.try_get::<&str, _>("id")?)?,
            flops: u64::try_from(row.try_get::<i64, _>("flops")?).unwrap_or(0),
            deadline_ms: row.try_get("lease_deadline")?,
            job: parse_id(&job_id)?,
            kernel: job.try_get("kernel")?,
            job_params: serde_json::from_str(job.try_get::<&str, _>("params")?)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?,
            unit_params: row.try_get("params")?,
        }))
    }

    /// A job's packed input blob.
    pub async fn job_input(&self, id: JobId) -> Result<Vec<u8>, StorageError> {
        Ok(sqlx::query_scalar("SELECT input FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?)
    }

    /// The kernel and unit parameters behind a lease, if it is current and held by `peer`.
    pub async fn leased_unit(
        &self,
        lease: LeaseId,
        peer: PeerId,
    ) -> Result<Option<CurrentLease>, StorageError> {
        let row = sqlx::query(
            "SELECT jobs.id, jobs.kernel, jobs.params AS job_params, units.params
             FROM units JOIN jobs ON jobs.id = units.job_id
             WHERE units.lease_id = ? AND units.lease_peer = ? AND units.state = 'leased'",
        )
        .bind(lease.to_string())
        .bind(peer.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(CurrentLease {
                job: parse_id(r.try_get::<&str, _>("id")?)?,
                kernel: r.try_get("kernel")?,
                job_params: serde_json::from_str(r.try_get::<&str, _>("job_params")?)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?,
                unit_params: r.try_get("params")?,
            })
        })
        .transpose()
    }

    /// Records a unit's output if `lease` is still the unit's current lease, held by `peer`.
    pub async fn complete_lease(
        &self,
        lease: LeaseId,
        peer: PeerId,
        output: &[u8],
    ) -> Result<Completion, StorageError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE units SET state = 'done', output = ?, lease_id = NULL, lease_peer = NULL, lease_deadline = NULL
             WHERE lease_id = ? AND lease_peer = ? AND state = 'leased'
             RETURNING job_id",
        )
        .bind(output)
        .bind(lease.to_string())
        .bind(peer.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(done) = done else {
            return Ok(Completion::Stale);
        };
        let job_id: String = done.try_get("job_id")?;
        let counts = sqlx::query(
            "UPDATE jobs SET units_done = units_done + 1, updated_ms = ? WHERE id = ?
             RETURNING units_done, units_total",
        )
        .bind(now_ms())
        .bind(&job_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let job: JobId = parse_id(&job_id)?;
        let units_done: i64 = counts.try_get("units_done")?;
        let units_total: i64 = counts.try_get("units_total")?;
        Ok(if units_done == units_total {
            Completion::JobComplete { job }
        } else {
            Completion::Accepted { job }
        })
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
        let updated = sqlx::query(
            "UPDATE jobs SET state = 'done', result = ?, updated_ms = ?
             WHERE id = ? AND state = 'running' AND units_done = units_total",
        )
        .bind(result)
        .bind(now_ms())
        .bind(job.to_string())
        .execute(&self.pool)
        .await?;
        Ok(updated.rows_affected() == 1)
    }

    /// Marks a job failed with a reason and withdraws its outstanding units.
    pub async fn fail_job(&self, job: JobId, reason: &str) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = 'failed', error = ?, updated_ms = ?
             WHERE id = ? AND state IN ('queued', 'running')",
        )
        .bind(reason)
        .bind(now_ms())
        .bind(job.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE units SET state = 'failed', lease_id = NULL, lease_peer = NULL, lease_deadline = NULL
             WHERE job_id = ? AND state IN ('queued', 'leased')",
        )
        .bind(job.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts a lease's unit back in the queue (its volunteer gave up on it). Only the peer
    /// holding the lease can release it. Returns the unit's job and attempt count when the
    /// lease was current.
    pub async fn release_lease(
        &self,
        lease: LeaseId,
        peer: PeerId,
    ) -> Result<Option<(JobId, i64)>, StorageError> {
        let row = sqlx::query(&format!(
            "{REQUEUE_LEASED} AND lease_id = ? AND lease_peer = ? RETURNING job_id, attempts"
        ))
        .bind(lease.to_string())
        .bind(peer.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                parse_id(r.try_get::<&str, _>("job_id")?)?,
                r.try_get("attempts")?,
            ))
        })
        .transpose()
    }

    /// Requeues every unit leased to a peer that went away.
    pub async fn release_peer(&self, peer: PeerId) -> Result<u64, StorageError> {
        let done = sqlx::query(&format!("{REQUEUE_LEASED} AND lease_peer = ?"))
            .bind(peer.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Requeues units whose lease deadline passed; returns how many.
    pub async fn expire_leases(&self, now: i64) -> Result<u64, StorageError> {
        let done = sqlx::query(&format!("{REQUEUE_LEASED} AND lease_deadline < ?"))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Jobs whose units failed too often: they fail instead of looping forever.
    pub async fn jobs_over_attempts(&self, max_attempts: i64) -> Result<Vec<JobId>, StorageError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT units.job_id FROM units JOIN jobs ON jobs.id = units.job_id
             WHERE units.state = 'queued' AND units.attempts >= ? AND jobs.state IN ('queued', 'running')",
        )
        .bind(max_attempts)
        .fetch_all(&self.pool)
        .await?;
        ids.iter().map(|s| parse_id(s)).collect()
    }

    /// After a restart no peer from before is connected: every lease is void. Returns
    /// how many units went back to the queue.
    pub async fn recover_leases(&self) -> Result<u64, StorageError> {
        let done = sqlx::query(REQUEUE_LEASED).execute(&self.pool).await?;
        Ok(done.rows_affected())
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
}
