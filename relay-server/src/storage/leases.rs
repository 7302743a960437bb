//! Leases: handing units out, taking them back when volunteers vanish or time out, and
//! known-answer (canary) leases of settled units.

use super::{
    now_ms, parse_id, refresh_unit, LeaseContext, LeaseTerms, LeasedUnit, PeerId, Storage,
    StorageError, Tx, REFRESH_UNITS,
};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use starling_protocol::{JobId, LeaseId, WalletAddress};

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
}

impl LeaseTerms {
    /// The deadline for a unit of `flops`.
    pub fn deadline(&self, flops: u64) -> i64 {
        let wanted = self.slack_ms as f64 + flops as f64 * self.ms_per_flop;
        let span = (wanted as i64).max(self.min_ms).min(self.max_ms);
        self.start_ms.saturating_add(span)
    }
}

/// Columns of a unit and its job that an assignment needs.
const UNIT_COLUMNS: &str = "units.id, units.job_id, units.params, units.flops, units.quorum,
    jobs.kernel, jobs.params AS job_params, jobs.quorum AS job_quorum";

fn leased_unit(
    row: &SqliteRow,
    lease: LeaseId,
    deadline_ms: i64,
    canary: bool,
) -> Result<LeasedUnit, StorageError> {
    Ok(LeasedUnit {
        lease,
        unit: parse_id(row.try_get::<&str, _>("id")?)?,
        job: parse_id(row.try_get::<&str, _>("job_id")?)?,
        kernel: row.try_get("kernel")?,
        job_params: serde_json::from_str(row.try_get::<&str, _>("job_params")?)
            .map_err(|e| StorageError::Corrupt(e.to_string()))?,
        unit_params: row.try_get("params")?,
        flops: u64::try_from(row.try_get::<i64, _>("flops")?).unwrap_or(0),
        deadline_ms,
        canary,
    })
}

async fn insert_lease(
    tx: &mut Tx<'_>,
    request: &LeaseRequest,
    unit: &str,
    kind: &str,
    deadline_ms: i64,
) -> Result<(), StorageError> {
    sqlx::query(
        "INSERT INTO leases (id, unit_id, peer, wallet, site, kind, state, issued_ms, deadline_ms)
         VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)",
    )
    .bind(request.lease.to_string())
    .bind(unit)
    .bind(request.peer.to_string())
    .bind(request.wallet.to_string())
    .bind(request.site.map(|s| s.to_string()))
    .bind(kind)
    .bind(request.terms.start_ms)
    .bind(deadline_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks `state` every active lease matched by `filter` (SQL over `leases`, one `?`),
/// counts the loss against each unit, and puts the units back in the queue.
async fn lose_leases(
    tx: &mut Tx<'_>,
    state: &str,
    filter: &str,
    bind: &str,
) -> Result<Vec<(String, JobId, i64)>, StorageError> {
    let units: Vec<String> = sqlx::query_scalar(&format!(
        "UPDATE leases SET state = '{state}' WHERE state = 'active' AND {filter} RETURNING unit_id"
    ))
    .bind(bind)
    .fetch_all(&mut **tx)
    .await?;
    let mut lost = Vec::with_capacity(units.len());
    for unit in units {
        // Canary leases point at settled units: losing one costs the unit nothing.
        let row = sqlx::query(
            "UPDATE units SET attempts = attempts + 1 WHERE id = ? AND state IN ('queued', 'leased')
             RETURNING job_id, attempts",
        )
        .bind(&unit)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            refresh_unit(tx, &unit).await?;
            lost.push((
                unit,
                parse_id(row.try_get::<&str, _>("job_id")?)?,
                row.try_get("attempts")?,
            ));
        }
    }
    Ok(lost)
}

impl Storage {
    /// Leases the oldest unit that needs another result to `request`'s volunteer, never
    /// one this wallet or connection already holds or answered. A unit's first lease fixes
    /// its quorum: `quorum_for(kernel, job_quorum)` decides (it sees the job's setting and
    /// may lower it for a trusted wallet).
    pub async fn lease_work(
        &self,
        request: &LeaseRequest,
        quorum_for: impl Fn(&str, u32) -> u32,
    ) -> Result<Option<LeasedUnit>, StorageError> {
        let mut tx = self.write().await?;
        let wallet = request.wallet.to_string();
        let row = sqlx::query(&format!(
            "SELECT {UNIT_COLUMNS} FROM units JOIN jobs ON jobs.id = units.job_id
             WHERE units.state = 'queued' AND jobs.state IN ('queued', 'running')
               AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.unit_id = units.id
                               AND leases.state = 'active' AND (leases.wallet = ?1 OR leases.peer = ?2))
               AND NOT EXISTS (SELECT 1 FROM results WHERE results.unit_id = units.id
                               AND results.wallet = ?1)
             ORDER BY units.rowid LIMIT 1"
        ))
        .bind(&wallet)
        .bind(request.peer.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let unit: String = row.try_get("id")?;
        if row.try_get::<i64, _>("quorum")? == 0 {
            let job_quorum = u32::try_from(row.try_get::<i64, _>("job_quorum")?).unwrap_or(2);
            let quorum = quorum_for(row.try_get("kernel")?, job_quorum).clamp(1, 5);
            sqlx::query("UPDATE units SET quorum = ?, wanted = ? WHERE id = ?")
                .bind(i64::from(quorum))
                .bind(i64::from(quorum))
                .bind(&unit)
                .execute(&mut *tx)
                .await?;
        }
        let flops = u64::try_from(row.try_get::<i64, _>("flops")?).unwrap_or(0);
        let deadline_ms = request.terms.deadline(flops);
        insert_lease(&mut tx, request, &unit, "work", deadline_ms).await?;
        refresh_unit(&mut tx, &unit).await?;
        sqlx::query(
            "UPDATE jobs SET state = 'running', updated_ms = ? WHERE id = ? AND state = 'queued'",
        )
        .bind(now_ms())
        .bind(row.try_get::<&str, _>("job_id")?)
        .execute(&mut *tx)
        .await?;
        let leased = leased_unit(&row, request.lease, deadline_ms, false)?;
        tx.commit().await?;
        Ok(Some(leased))
    }

    /// Leases a settled unit this wallet never saw, as a known-answer test. Which unit is
    /// drawn from `pick` (0 to 1), so canaries come from all over the history.
    pub async fn lease_canary(
        &self,
        request: &LeaseRequest,
        pick: f64,
    ) -> Result<Option<LeasedUnit>, StorageError> {
        let mut tx = self.write().await?;
        let max_rowid: Option<i64> = sqlx::query_scalar("SELECT MAX(rowid) FROM units")
            .fetch_one(&mut *tx)
            .await?;
        let from = (max_rowid.unwrap_or(0) as f64 * pick.clamp(0.0, 1.0)) as i64;
        let mut found = None;
        // From the drawn point on, then from the start if nothing was after it.
        for start in [from, 0] {
            found = sqlx::query(&format!(
                "SELECT {UNIT_COLUMNS} FROM units JOIN jobs ON jobs.id = units.job_id
                 WHERE units.state = 'done' AND units.rowid >= ?
                   AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.unit_id = units.id
                                   AND leases.wallet = ?)
                 ORDER BY units.rowid LIMIT 1"
            ))
            .bind(start)
            .bind(request.wallet.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_some() {
                break;
            }
        }
        let Some(row) = found else {
            return Ok(None);
        };
        let unit: String = row.try_get("id")?;
        let flops = u64::try_from(row.try_get::<i64, _>("flops")?).unwrap_or(0);
        let deadline_ms = request.terms.deadline(flops);
        insert_lease(&mut tx, request, &unit, "canary", deadline_ms).await?;
        let leased = leased_unit(&row, request.lease, deadline_ms, true)?;
        tx.commit().await?;
        Ok(Some(leased))
    }

    /// What `lease` was for, whatever its state now; `None` if it never existed.
    pub async fn lease_context(
        &self,
        lease: LeaseId,
    ) -> Result<Option<LeaseContext>, StorageError> {
        let row = sqlx::query(
            "SELECT jobs.id, jobs.kernel, jobs.params AS job_params, units.params, leases.wallet
             FROM leases JOIN units ON units.id = leases.unit_id JOIN jobs ON jobs.id = units.job_id
             WHERE leases.id = ?",
        )
        .bind(lease.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(LeaseContext {
                job: parse_id(r.try_get::<&str, _>("id")?)?,
                kernel: r.try_get("kernel")?,
                job_params: serde_json::from_str(r.try_get::<&str, _>("job_params")?)
                    .map_err(|e| StorageError::Corrupt(e.to_string()))?,
                unit_params: r.try_get("params")?,
                wallet: r.try_get("wallet")?,
            })
        })
        .transpose()
    }

    /// The volunteer gave up on `lease` (it held it on `peer`): the unit goes back to the
    /// queue. Returns the unit's job and its lost-lease count when the lease was active.
    pub async fn release_lease(
        &self,
        lease: LeaseId,
        peer: PeerId,
    ) -> Result<Option<(JobId, i64)>, StorageError> {
        let mut tx = self.write().await?;
        // Only the connection holding the lease may give it back.
        let owner: Option<String> =
            sqlx::query_scalar("SELECT peer FROM leases WHERE id = ? AND state = 'active'")
                .bind(lease.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        if owner.as_deref() != Some(peer.to_string().as_str()) {
            return Ok(None);
        }
        let lost = lose_leases(&mut tx, "released", "id = ?", &lease.to_string()).await?;
        tx.commit().await?;
        Ok(lost
            .into_iter()
            .next()
            .map(|(_, job, attempts)| (job, attempts)))
    }

    /// Requeues every unit leased to a connection that went away; returns how many.
    pub async fn release_peer(&self, peer: PeerId) -> Result<u64, StorageError> {
        let mut tx = self.write().await?;
        let lost = lose_leases(&mut tx, "released", "peer = ?", &peer.to_string()).await?;
        tx.commit().await?;
        Ok(lost.len() as u64)
    }

    /// Requeues units whose lease deadline passed; returns how many leases expired.
    pub async fn expire_leases(&self, now: i64) -> Result<u64, StorageError> {
        let mut tx = self.write().await?;
        let lost = lose_leases(&mut tx, "expired", "deadline_ms < ?", &now.to_string()).await?;
        tx.commit().await?;
        Ok(lost.len() as u64)
    }

    /// Jobs with a unit that lost too many leases or results: they fail instead of looping.
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

    /// After a restart no connection from before exists: every active lease is void and
    /// its unit goes back to the queue. Returns how many leases were voided.
    pub async fn recover_leases(&self) -> Result<u64, StorageError> {
        let mut tx = self.write().await?;
        let voided = sqlx::query("UPDATE leases SET state = 'void' WHERE state = 'active'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(REFRESH_UNITS).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(voided)
    }
}
