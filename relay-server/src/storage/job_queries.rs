//! Queries behind the submitter's API beyond submit and fetch: listing, cancelling,
//! purging and retention, idempotency keys, readiness and the counts `/metrics` exposes.

use super::sql::{params, Db, Dialect, Param};
use super::{now_ms, parse_id, JobRecord, JobState, Storage, StorageError, RECORD_COLUMNS};
use crate::ledger::AccountId;

/// An empty output: what an erased output reads as (a done unit always has one).
const EMPTY: Param<'static> = Param::Blob(&[]);
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
        let found: Option<i64> = self
            .reads
            .read({
                let p0 = id.to_string();
                let p1 = owner.map(|o| o.to_string());
                move |db| {
                    db.query_opt(
                        "SELECT 1 FROM jobs WHERE id = ? AND submitter IS ? AND probe = 0",
                        params![p0, p1],
                        |r| r.get(0),
                    )
                }
            })
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
        let state = state.map(JobState::as_str);
        let owner = owner.map(|o| o.to_string());
        let rows = self
            .reads
            .read(move |db| {
                db.query_all(
                    &format!(
                        "SELECT rowid, {RECORD_COLUMNS} FROM jobs
                         WHERE submitter IS ?4 AND probe = 0 AND (state = ?1 OR ?1 IS NULL)
                           AND (rowid < ?2 OR ?2 IS NULL)
                         ORDER BY rowid DESC LIMIT ?3"
                    ),
                    params![state, before, i64::from(limit) + 1, owner],
                    |r| Ok((r.named::<i64>("rowid")?, JobRecord::from_row(r)?)),
                )
            })
            .await?;
        let more = rows.len() > limit as usize;
        let mut jobs = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for (rowid, job) in rows.into_iter().take(limit as usize) {
            last = Some(rowid);
            jobs.push(job);
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
                let updated = db.execute(
                    "UPDATE jobs SET state = 'cancelled', updated_ms = ?1
                         WHERE id = ?2 AND state IN ('queued', 'running')",
                    params![now_ms(), job],
                )?;
                if updated > 0 {
                    super::others::tell_other_relays(db)?;
                }
                if updated == 0 {
                    let state: Option<String> =
                        db.query_opt("SELECT state FROM jobs WHERE id = ?1", params![&job], |r| {
                            r.get(0)
                        })?;
                    return match state {
                        Some(state) => Ok::<_, StorageError>((
                            Cancelled::AlreadyEnded(super::model::parse_job_state(&state)?),
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
        let key = key.to_owned();
        self.reads
            .read(move |db| {
                db.query_opt(
                    "SELECT request_sha256, job_id FROM idempotency_keys WHERE key = ?1",
                    params![key],
                    |r| {
                        Ok(IdempotentRequest {
                            request_sha256: r.get(0)?,
                            job: parse_id(&r.get::<String>(1)?)?,
                        })
                    },
                )
            })
            .await
    }

    /// Returns once every write queued before it has committed (or failed): shutdown
    /// calls it last, so the process does not exit in the middle of a group.
    pub async fn flush(&self) -> Result<(), StorageError> {
        self.writer.flush().await
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.reads
            .read(|db| db.query_one("SELECT 1", params![], |_| Ok(())))
            .await
    }

    /// Jobs per state and units per kernel and state.
    pub async fn counts(&self) -> Result<Counts, StorageError> {
        self.reads
            .read(|db| {
                let jobs = db.query_all(
                    "SELECT state, COUNT(*) AS n FROM jobs WHERE probe = 0 GROUP BY state",
                    params![],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let units = db.query_all(
                    "SELECT jobs.kernel AS kernel, units.state AS state, COUNT(*) AS n
                     FROM units JOIN jobs ON jobs.id = units.job_id WHERE jobs.probe = 0
                     GROUP BY jobs.kernel, units.state ORDER BY 1, 2",
                    params![],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                Ok(Counts { jobs, units })
            })
            .await
    }
}

/// What a purge of a job's data did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purged {
    /// Its data is erased now.
    Now,
    /// Its data was erased before; nothing changed.
    Already,
    /// The job is still queued or running: its data is in use.
    NotEnded(JobState),
    /// No such job.
    Missing,
}

/// How much of a job's data a purge erases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erase {
    /// Its inputs only (their retention ran out; the result stays readable).
    Inputs,
    /// Everything: inputs, every unit's and replica's output, the merged result and the
    /// job's key.
    All,
}

/// Erases `erase` of an ended job's data inside the writer's transaction (see
/// [`Storage::purge_job_data`]).
fn purge_in(db: &dyn Db, id: JobId, erase: Erase) -> Result<Purged, StorageError> {
    let job = id.to_string();
    let row: Option<(String, Option<i64>, Option<i64>)> = db.query_opt(
        "SELECT state, inputs_purged_ms, purged_ms FROM jobs WHERE id = ?1",
        params![&job],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let Some((state, inputs_purged, purged)) = row else {
        return Ok(Purged::Missing);
    };
    let state = super::model::parse_job_state(&state)?;
    if matches!(state, JobState::Queued | JobState::Running) {
        return Ok(Purged::NotEnded(state));
    }
    let done_before = match erase {
        Erase::Inputs => inputs_purged.is_some(),
        Erase::All => purged.is_some(),
    };
    if done_before {
        return Ok(Purged::Already);
    }
    // Overwrites what is deleted with zeros instead of leaving it in free space, for
    // these statements only: the hot paths keep SQLite's cheaper default.
    secure_delete(db, true)?;
    let erased = (|| {
        let now = now_ms();
        db.write("DELETE FROM job_inputs WHERE job_id = ?1", params![&job])?;
        db.write(
            "UPDATE jobs SET inputs_purged_ms = COALESCE(inputs_purged_ms, ?2) WHERE id = ?1",
            params![job, now],
        )?;
        if erase == Erase::All {
            // Rows stay (who computed what, for the audit); their bytes go. An empty
            // blob, not NULL: a done unit and a judged result always have an output.
            db.write(
                "UPDATE leases SET output = ?2
                 WHERE output IS NOT NULL AND unit_id IN (SELECT id FROM units WHERE job_id = ?1)",
                params![&job, EMPTY],
            )?;
            db.write(
                "UPDATE units SET output = ?2 WHERE job_id = ?1 AND output IS NOT NULL",
                params![&job, EMPTY],
            )?;
            db.write(
                "UPDATE jobs SET result = NULL, wrapped_key = NULL, purged_ms = ?2 WHERE id = ?1",
                params![job, now],
            )?;
        }
        Ok::<_, StorageError>(())
    })();
    secure_delete(db, false)?;
    erased.map(|()| Purged::Now)
}

/// SQLite's `secure_delete` on or off. PostgreSQL has no such setting: a deleted row's
/// bytes stay in the table's file until `VACUUM` reuses the space.
fn secure_delete(db: &dyn Db, on: bool) -> Result<(), StorageError> {
    if db.dialect() == Dialect::Sqlite {
        let pragma = if on {
            "PRAGMA secure_delete = 1"
        } else {
            "PRAGMA secure_delete = 0"
        };
        db.for_each_row(pragma, params![], &mut |_| Ok(()))?;
    }
    Ok(())
}

impl Storage {
    /// Erases an ended job's data for good. [`Erase::All`]: its inputs, every output its
    /// volunteers returned, its merged result and its key; [`Erase::Inputs`]: its inputs.
    /// The job's record, its units' and leases' rows (who computed what) and its ledger
    /// entries stay. Erased content is overwritten in the database file, the WAL is
    /// checkpointed and truncated, and (for `All`) the job's key is destroyed, so a copy
    /// made earlier holds only data sealed under a key that no longer exists.
    pub async fn purge_job_data(&self, id: JobId, erase: Erase) -> Result<Purged, StorageError> {
        let purged = self.purge_quietly(id, erase).await?;
        if purged == Purged::Now {
            self.truncate_wal().await;
        }
        Ok(purged)
    }

    /// Purges what has outlived its retention: the inputs of jobs that ended before
    /// `inputs_before_ms`, and everything of jobs that ended before `results_before_ms`,
    /// up to `batch` jobs of each. Returns how many jobs it purged (inputs, all).
    pub async fn purge_expired(
        &self,
        inputs_before_ms: i64,
        results_before_ms: i64,
        batch: u32,
    ) -> Result<(usize, usize), StorageError> {
        let ended = "(state = 'done' OR state = 'failed' OR state = 'cancelled')";
        let due = |column: &'static str, before: i64| {
            let sql = format!(
                "SELECT id FROM jobs WHERE {ended} AND {column} IS NULL AND updated_ms < ?
                 ORDER BY updated_ms LIMIT ?"
            );
            async move {
                let ids: Vec<String> = self
                    .reads
                    .read({
                        let p0 = before;
                        let p1 = i64::from(batch);
                        move |db| db.query_all(&sql, params![p0, p1], |r| r.get(0))
                    })
                    .await?;
                ids.iter()
                    .map(|id| parse_id(id))
                    .collect::<Result<Vec<JobId>, StorageError>>()
            }
        };
        let mut counts = (0, 0);
        for id in due("purged_ms", results_before_ms).await? {
            if self.purge_quietly(id, Erase::All).await? == Purged::Now {
                counts.1 += 1;
            }
        }
        for id in due("inputs_purged_ms", inputs_before_ms).await? {
            if self.purge_quietly(id, Erase::Inputs).await? == Purged::Now {
                counts.0 += 1;
            }
        }
        if counts != (0, 0) {
            self.truncate_wal().await;
        }
        Ok(counts)
    }

    /// [`Self::purge_job_data`] without the WAL truncation, which a batch does once.
    async fn purge_quietly(&self, id: JobId, erase: Erase) -> Result<Purged, StorageError> {
        let purged = self.writer.exec(move |db| purge_in(db, id, erase)).await?;
        if purged == Purged::Now && erase == Erase::All {
            self.keys.destroy(id)?;
        }
        Ok(purged)
    }

    /// Copies the WAL into the database file and empties it, so erased pages' earlier
    /// versions leave the WAL. A reader inside the WAL can hold it up; then those versions
    /// stay in the WAL until the writer next starts it over.
    async fn truncate_wal(&self) {
        match self.writer.truncate_wal().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the WAL could not be emptied after a purge: a reader is in it")
            }
            Err(e) => tracing::warn!("checkpoint after a purge failed: {e}"),
        }
    }
}
