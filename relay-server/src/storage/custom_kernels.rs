//! Kernels submitters registered: source and manifest by content address, the owner, and
//! whether they were suspended.

use super::sql::{params, Row};
use super::{now_ms, parse_id, Storage, StorageError};
use crate::ledger::AccountId;
use starling_api::manifest::KernelManifest;
use starling_protocol::JobId;

/// A registered kernel as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKernel {
    /// Its content address.
    pub id: String,
    /// The account that registered it first.
    pub owner: Option<String>,
    /// The WGSL.
    pub source: String,
    /// What it declares.
    pub manifest: KernelManifest,
    /// When, Unix milliseconds.
    pub registered_ms: i64,
    /// Why it no longer runs.
    pub suspended: Option<String>,
}

const COLUMNS: &str = "id, owner, source, manifest, registered_ms, suspended";

fn stored(row: &dyn Row) -> Result<StoredKernel, StorageError> {
    let manifest: String = row.get(3)?;
    Ok(StoredKernel {
        id: row.get(0)?,
        owner: row.get(1)?,
        source: row.get(2)?,
        manifest: serde_json::from_str(&manifest)
            .map_err(|e| StorageError::Corrupt(format!("a custom kernel's manifest: {e}")))?,
        registered_ms: row.get(4)?,
        suspended: row.get(5)?,
    })
}

impl Storage {
    /// Stores a checked kernel under `id` unless it is there already (the same content,
    /// whoever sent it: the first owner keeps it). Returns the stored kernel and whether
    /// this call created it; `None` when `owner` already has `cap` kernels.
    pub async fn register_kernel(
        &self,
        id: String,
        owner: Option<AccountId>,
        source: String,
        manifest: &KernelManifest,
        cap: i64,
    ) -> Result<Option<(StoredKernel, bool)>, StorageError> {
        let manifest = serde_json::to_string(manifest).expect("a manifest always serialises");
        let owner = owner.map(|o| o.to_string());
        self.writer
            .exec(move |db| {
                let existing = db.query_opt(
                    &format!("SELECT {COLUMNS} FROM custom_kernels WHERE id = ?1"),
                    params![id],
                    stored,
                )?;
                if let Some(existing) = existing {
                    return Ok(Some((existing, false)));
                }
                if let Some(owner) = &owner {
                    let held: i64 = db.query_one(
                        "SELECT COUNT(*) FROM custom_kernels WHERE owner = ?1",
                        params![owner],
                        |r| r.get(0),
                    )?;
                    if held >= cap {
                        return Ok(None);
                    }
                }
                db.write(
                    "INSERT INTO custom_kernels (id, owner, source, manifest, registered_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![id, owner, source, manifest, now_ms()],
                )?;
                let created = db.query_one(
                    &format!("SELECT {COLUMNS} FROM custom_kernels WHERE id = ?1"),
                    params![id],
                    stored,
                )?;
                Ok(Some((created, true)))
            })
            .await
    }

    /// The kernel registered under `id`, if any.
    pub async fn custom_kernel(&self, id: &str) -> Result<Option<StoredKernel>, StorageError> {
        let id = id.to_owned();
        self.reads
            .read(move |db| {
                db.query_opt(
                    &format!("SELECT {COLUMNS} FROM custom_kernels WHERE id = ?"),
                    params![id],
                    stored,
                )
            })
            .await
    }

    /// The newest `limit` registered kernels, newest first.
    pub async fn custom_kernels(&self, limit: i64) -> Result<Vec<StoredKernel>, StorageError> {
        self.reads
            .read(move |db| {
                db.query_all(
                    &format!(
                        "SELECT {COLUMNS} FROM custom_kernels
                         ORDER BY registered_ms DESC, id LIMIT ?"
                    ),
                    params![limit],
                    stored,
                )
            })
            .await
    }
}

impl Storage {
    /// Accepted results of `kernel`'s units: how many, their summed time from lease to
    /// result in milliseconds, and their summed declared FLOPs.
    pub async fn kernel_runs(&self, kernel: &str) -> Result<(i64, i64, i64), StorageError> {
        let kernel = kernel.to_owned();
        self.reads
            .read(move |db| {
                db.query_one(
                    // PostgreSQL sums BIGINTs into NUMERIC: cast back.
                    "SELECT COUNT(*),
                            CAST(COALESCE(SUM(leases.received_ms - leases.issued_ms), 0) AS BIGINT),
                            CAST(COALESCE(SUM(units.flops), 0) AS BIGINT)
                     FROM jobs JOIN units ON units.job_id = jobs.id
                          JOIN leases ON leases.unit_id = units.id
                     WHERE jobs.kernel = ? AND leases.verdict = 'valid'",
                    params![kernel],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .await
    }

    /// Registered kernels with unfinished jobs whose units' leases expired in the hands
    /// of, or whose units failed on the devices of, at least `wallets` distinct wallets
    /// with a record: kernels that hang past their deadlines or lose the device on one
    /// volunteer after another, with how many.
    ///
    /// Only wallets with a record (a few valid results and an error rate under a new
    /// wallet's, [`Reliability::vetted`](crate::validation::trust::Reliability::vetted))
    /// count: three fresh wallets that take a kernel's units and sit on them until they
    /// expire cost nothing, and would suspend any kernel and fail its owner's jobs.
    pub async fn hung_custom_kernels(
        &self,
        wallets: i64,
    ) -> Result<Vec<(String, i64)>, StorageError> {
        let vetted_after = i64::from(crate::validation::trust::VETTED_AFTER);
        let new_error_rate = crate::validation::trust::INITIAL_ERROR_RATE;
        self.reads
            .read(move |db| {
                db.query_all(
                    "SELECT hung.kernel, COUNT(DISTINCT hung.wallet)
                     FROM (SELECT jobs.kernel AS kernel, leases.wallet AS wallet
                           FROM jobs JOIN units ON units.job_id = jobs.id
                                JOIN leases ON leases.unit_id = units.id
                           WHERE jobs.state IN ('queued', 'running')
                             AND LENGTH(jobs.kernel) = 64 AND leases.state = 'expired'
                           UNION
                           SELECT kernel_failures.kernel, kernel_failures.wallet
                           FROM kernel_failures
                           WHERE EXISTS (SELECT 1 FROM jobs
                                         WHERE jobs.kernel = kernel_failures.kernel
                                           AND jobs.state IN ('queued', 'running'))) AS hung
                          JOIN wallets ON wallets.address = hung.wallet
                     WHERE wallets.valid >= ?2 AND wallets.error_rate < ?3
                     GROUP BY hung.kernel
                     HAVING COUNT(DISTINCT hung.wallet) >= ?1",
                    params![wallets, vetted_after, new_error_rate],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
    }

    /// Suspends the registered kernel `id` for `reason` (a kernel suspended already
    /// keeps its first reason) and returns its unfinished jobs, which the caller fails.
    pub async fn suspend_kernel(&self, id: &str, reason: &str) -> Result<Vec<JobId>, StorageError> {
        let (id, reason) = (id.to_owned(), reason.to_owned());
        let jobs: Vec<String> = self
            .writer
            .exec(move |db| {
                db.write(
                    "UPDATE custom_kernels SET suspended = ?2 WHERE id = ?1 AND suspended IS NULL",
                    params![id, reason],
                )?;
                db.query_all(
                    "SELECT id FROM jobs WHERE kernel = ?1 AND state IN ('queued', 'running')",
                    params![id],
                    |r| r.get(0),
                )
            })
            .await?;
        jobs.iter().map(|job| parse_id(job)).collect()
    }
}
