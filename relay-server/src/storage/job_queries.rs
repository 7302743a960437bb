//! Queries behind the submitter's API beyond submit and fetch: listing, cancelling,
//! idempotency keys, readiness and the counts `/metrics` exposes.

use super::{now_ms, parse_id, JobRecord, JobState, Storage, StorageError, RECORD_COLUMNS};
use crate::ledger::AccountId;
use rusqlite::OptionalExtension;
use sqlx::Row;
use starling_protocol::JobId;

/// One page of a job listing, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// The jobs on this page.
    pub jobs: Vec<JobRecord>,
    /// Position to pass as `before` for the next page; `None` on the last page.
    pub next: Option<i64>,
}

/// What a cancellation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancelled {
    /// The job is now cancelled; this many of its units were withdrawn.
    Now {
        /// Units withdrawn (queued or out on lease).
        withdrawn: u64,
    },
    /// The job had already ended in this state; nothing changed.
    AlreadyEnded(JobState),
    /// No such job.
    Missing,
}

/// A stored idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    /// Digest of the request the key was first used with.
    pub request_sha256: String,
    /// The job that request created.
    pub job: JobId,
}

/// Row counts for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Jobs per state.
    pub jobs: Vec<(String, i64)>,
    /// Units per (kernel, state).
    pub units: Vec<(String, String, i64)>,
}

impl Storage {
    /// Whether `owner` submitted job `id` (`None`: an anonymous job, on a relay that bills
    /// none). False for a job that does not exist, so callers answer both alike.
    pub async fn owns(&self, owner: Option<AccountId>, id: JobId) -> Result<bool, StorageError> {
        // `IS` compares NULL with NULL as equal, `=` would not.
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ? AND submitter IS ?")
                .bind(id.to_string())
                .bind(owner.map(|o| o.to_string()))
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    /// Up to `limit` of `owner`'s jobs, newest first, optionally only those in `state`,
    /// starting after position `before` (a previous page's `next`).
    pub async fn list_jobs(
        &self,
        owner: Option<AccountId>,
        state: Option<JobState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<JobPage, StorageError> {
        // One row more than asked tells whether a next page exists.
        let rows = sqlx::query(&format!(
            "SELECT rowid, {RECORD_COLUMNS} FROM jobs
             WHERE submitter IS ?4 AND (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR rowid < ?2)
             ORDER BY rowid DESC LIMIT ?3"
        ))
        .bind(state.map(JobState::as_str))
        .bind(before)
        .bind(i64::from(limit) + 1)
        .bind(owner.map(|o| o.to_string()))
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        let mut jobs = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for row in rows.iter().take(limit as usize) {
            last = Some(row.try_get::<i64, _>("rowid")?);
            jobs.push(JobRecord::from_row(row)?);
        }
        Ok(JobPage {
            jobs,
            next: if more { last } else { None },
        })
    }

    /// Cancels a queued or running job and withdraws its queued and leased units in the
    /// same transaction, so no volunteer gets them afterwards and results for their
    /// leases arrive stale.
    pub async fn cancel_job(&self, id: JobId) -> Result<Cancelled, StorageError> {
        let billing = self.billing.clone();
        let (cancelled, paid) = self
            .writer
            .exec(move |db| {
                let job = id.to_string();
                let updated = db
                    .prepare_cached(
                        "UPDATE jobs SET state = 'cancelled', updated_ms = ?1
                         WHERE id = ?2 AND state IN ('queued', 'running')",
                    )?
                    .execute(rusqlite::params![now_ms(), job])?;
                if updated == 0 {
                    let state: Option<String> = db
                        .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
                        .query_row([&job], |r| r.get(0))
                        .optional()?;
                    return match state {
                        Some(state) => Ok::<_, StorageError>((
                            Cancelled::AlreadyEnded(JobState::parse(&state)?),
                            Vec::new(),
                        )),
                        None => Ok((Cancelled::Missing, Vec::new())),
                    };
                }
                let withdrawn = super::withdraw_units(db, id)?;
                // Units settled before the cancel were verified work: they are paid.
                let paid = super::settle_escrow(db, billing.as_deref(), id)?;
                Ok::<_, StorageError>((Cancelled::Now { withdrawn }, paid))
            })
            .await?;
        self.announce(&paid);
        Ok(cancelled)
    }

    /// The request an idempotency key was first used with, if any.
    pub async fn idempotent_request(
        &self,
        key: &str,
    ) -> Result<Option<IdempotentRequest>, StorageError> {
        let row = sqlx::query("SELECT request_sha256, job_id FROM idempotency_keys WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(IdempotentRequest {
                request_sha256: r.try_get("request_sha256")?,
                job: parse_id(r.try_get::<&str, _>("job_id")?)?,
            })
        })
        .transpose()
    }

    /// Remembers that `key` with a request of digest `request_sha256` created `job`.
    /// Returns false (and changes nothing) when the key is already taken.
    pub async fn remember_idempotency_key(
        &self,
        key: &str,
        request_sha256: &str,
        job: JobId,
    ) -> Result<bool, StorageError> {
        let (key, request_sha256) = (key.to_owned(), request_sha256.to_owned());
        self.writer
            .exec(move |db| {
                let done = db
                    .prepare_cached(
                        "INSERT INTO idempotency_keys (key, request_sha256, job_id, created_ms)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key) DO NOTHING",
                    )?
                    .execute(rusqlite::params![
                        key,
                        request_sha256,
                        job.to_string(),
                        now_ms()
                    ])?;
                Ok(done == 1)
            })
            .await
    }

    /// Jobs of `account` still queued or running.
    pub async fn active_jobs(
        &self,
        account: crate::ledger::AccountId,
    ) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE submitter = ? AND state IN ('queued', 'running')",
        )
        .bind(account.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Jobs per state and units per kernel and state.
    pub async fn counts(&self) -> Result<Counts, StorageError> {
        let jobs = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect::<Result<_, StorageError>>()?;
        let units = sqlx::query(
            "SELECT jobs.kernel AS kernel, units.state AS state, COUNT(*) AS n
             FROM units JOIN jobs ON jobs.id = units.job_id
             GROUP BY jobs.kernel, units.state ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("kernel")?, r.try_get("state")?, r.try_get("n")?)))
        .collect::<Result<_, StorageError>>()?;
        Ok(Counts { jobs, units })
    }
}
