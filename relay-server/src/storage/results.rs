//! Returned results: stored, judged against their replicas and settled in one
//! transaction.

use super::{job_bill, ledger, now_ms, parse_id, refresh_unit, wallets, Storage, StorageError, Tx};
use crate::ledger::split_unit_price;
use crate::validation::quorum::{judge, Candidate, Outcome, Policy};
use sqlx::Row;
use starling_protocol::{JobId, LeaseId, WalletAddress};

/// A result as it arrived, signature already verified.
#[derive(Debug, Clone, Copy)]
pub struct ReturnedResult<'a> {
    /// The lease it answers.
    pub lease: LeaseId,
    /// The wallet that signed it.
    pub wallet: WalletAddress,
    /// The output bytes.
    pub output: &'a [u8],
    /// The kernel's spot check of it, where the kernel has one.
    pub spot_check: Option<bool>,
}

/// What storing a result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Nothing changed: the lease is unknown, another wallet's, already answered, or its
    /// unit is settled.
    Stale(&'static str),
    /// Stored; the unit waits for more replicas.
    Pending {
        /// The unit's job.
        job: JobId,
    },
    /// The unit settled with this result among the agreeing ones.
    Valid {
        /// The unit's job.
        job: JobId,
        /// Whether that was the job's last unit (it is ready to merge).
        job_complete: bool,
    },
    /// This result was judged wrong.
    Invalid {
        /// The unit's job.
        job: JobId,
        /// Why, for the volunteer.
        reason: &'static str,
    },
    /// Too many results without a quorum: the unit and its job failed.
    JobFailed {
        /// The job.
        job: JobId,
        /// Why.
        reason: String,
    },
    /// A known-answer test, passed or not.
    Canary {
        /// Whether the result matched the known answer.
        passed: bool,
    },
}

/// One unit as an auditor sees it: its state and everything returned for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitAudit {
    /// The unit's id (what its ledger payments reference).
    pub id: String,
    /// Position in the job.
    pub idx: i64,
    /// Life-cycle state: queued, leased, done or failed.
    pub state: String,
    /// Whether the unit settled.
    pub done: bool,
    /// The settled output.
    pub output: Option<Vec<u8>>,
    /// Outputs of the results judged valid.
    pub valid_outputs: Vec<Vec<u8>>,
    /// Wallets of the results judged valid.
    pub valid_wallets: Vec<String>,
    /// The wallet of every result returned, judged or not.
    pub result_wallets: Vec<String>,
    /// Leases out now.
    pub active_leases: i64,
}

struct Stored {
    lease: String,
    wallet: String,
    output: Vec<u8>,
    spot_check: Option<bool>,
    trusted: bool,
}

async fn mark(tx: &mut Tx<'_>, lease: &str, state: &str) -> Result<(), StorageError> {
    sqlx::query("UPDATE results SET state = ? WHERE lease_id = ?")
        .bind(state)
        .bind(lease)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Storage {
    /// Pays a settled unit's price out of its job's escrow to the wallets whose results
    /// agreed (equal shares), the site the canonical result's volunteer came through, and
    /// the platform, inside the settling transaction: a unit is paid exactly when it
    /// settles, once.
    async fn pay(
        &self,
        tx: &mut Tx<'_>,
        job: JobId,
        unit: &str,
        wallets: &[&str],
        canonical_lease: &str,
    ) -> Result<Vec<crate::ledger::Entry>, StorageError> {
        let Some(billing) = self.billing() else {
            return Ok(Vec::new());
        };
        let Some(bill) = job_bill(tx, &job.to_string()).await? else {
            return Ok(Vec::new());
        };
        let flops: i64 = sqlx::query_scalar("SELECT flops FROM units WHERE id = ?")
            .bind(unit)
            .fetch_one(&mut **tx)
            .await?;
        let site: Option<String> = sqlx::query_scalar("SELECT site FROM leases WHERE id = ?")
            .bind(canonical_lease)
            .fetch_one(&mut **tx)
            .await?;
        let parse = |s: &str| {
            s.parse::<WalletAddress>()
                .map_err(|_| StorageError::Corrupt(format!("wallet {s:?}")))
        };
        let site = site.as_deref().map(parse).transpose()?;
        let wallets: Vec<WalletAddress> =
            wallets.iter().map(|w| parse(w)).collect::<Result<_, _>>()?;
        let split = split_unit_price(
            u64::try_from(flops).unwrap_or(0),
            bill.price_per_gflop,
            billing.pricing.site_share_ppm,
            billing.pricing.platform_fee_ppm,
            wallets.len(),
            site.is_some(),
        )
        .map_err(|e| StorageError::Corrupt(format!("unit price: {e}")))?;
        if split.price.is_zero() {
            return Ok(Vec::new());
        }
        ledger::pay_unit(tx, &billing.key, job, unit, &split, &wallets, site.as_ref())
            .await
            .map_err(StorageError::ledger)
    }

    /// Every unit of `job` with its results, in unit order.
    pub async fn audit_units(&self, job: JobId) -> Result<Vec<UnitAudit>, StorageError> {
        let units = sqlx::query(
            "SELECT id, idx, state, output,
                    (SELECT COUNT(*) FROM leases WHERE unit_id = units.id AND state = 'active') AS active
             FROM units WHERE job_id = ? ORDER BY idx",
        )
        .bind(job.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut audit = Vec::with_capacity(units.len());
        for unit in units {
            let results =
                sqlx::query("SELECT wallet, output, state FROM results WHERE unit_id = ?")
                    .bind(unit.try_get::<&str, _>("id")?)
                    .fetch_all(&self.pool)
                    .await?;
            let mut valid_outputs = Vec::new();
            let mut valid_wallets = Vec::new();
            let mut result_wallets = Vec::new();
            for r in results {
                let wallet: String = r.try_get("wallet")?;
                if r.try_get::<&str, _>("state")? == "valid" {
                    valid_outputs.push(r.try_get("output")?);
                    valid_wallets.push(wallet.clone());
                }
                result_wallets.push(wallet);
            }
            let state: String = unit.try_get("state")?;
            audit.push(UnitAudit {
                id: unit.try_get("id")?,
                idx: unit.try_get("idx")?,
                done: state == "done",
                state,
                valid_wallets,
                output: unit.try_get("output")?,
                valid_outputs,
                result_wallets,
                active_leases: unit.try_get("active")?,
            });
        }
        Ok(audit)
    }

    /// Stores `result` and judges its unit under `max_results` and the unit's quorum, with
    /// `agree` as the kernel's comparison. Idempotent: a result for a lease already
    /// answered, or for a unit already settled, changes nothing.
    pub async fn record_result(
        &self,
        result: ReturnedResult<'_>,
        max_results: u32,
        agree: &(dyn Fn(&[u8], &[u8]) -> bool + Sync),
    ) -> Result<Recorded, StorageError> {
        let mut tx = self.write().await?;
        let lease = result.lease.to_string();
        let wallet = result.wallet.to_string();
        let row = sqlx::query(
            "SELECT leases.unit_id, leases.wallet, leases.kind, leases.state AS lease_state,
                    units.state AS unit_state, units.quorum, units.output AS known, units.job_id,
                    jobs.state AS job_state, jobs.quorum AS job_quorum,
                    EXISTS (SELECT 1 FROM results WHERE results.unit_id = leases.unit_id
                            AND results.wallet = leases.wallet) AS answered
             FROM leases JOIN units ON units.id = leases.unit_id JOIN jobs ON jobs.id = units.job_id
             WHERE leases.id = ?",
        )
        .bind(&lease)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Recorded::Stale("no such lease"));
        };
        if row.try_get::<&str, _>("wallet")? != wallet {
            return Ok(Recorded::Stale("the lease was issued to another wallet"));
        }
        if row.try_get::<bool, _>("answered")? {
            return Ok(Recorded::Stale("this wallet already answered this unit"));
        }
        let unit: String = row.try_get("unit_id")?;
        let job: JobId = parse_id(row.try_get::<&str, _>("job_id")?)?;
        let trusted = wallets::reliability(&mut tx, &wallet).await?.trusted();
        let now = now_ms();
        let store = |state: &'static str| {
            sqlx::query(
                "INSERT INTO results (lease_id, unit_id, wallet, output, spot_check, trusted, state, received_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(lease.clone())
            .bind(unit.clone())
            .bind(wallet.clone())
            .bind(result.output)
            .bind(result.spot_check)
            .bind(trusted)
            .bind(state)
            .bind(now)
        };
        sqlx::query("UPDATE leases SET state = 'returned' WHERE id = ?")
            .bind(&lease)
            .execute(&mut *tx)
            .await?;

        if row.try_get::<&str, _>("kind")? == "canary" {
            let known: Option<Vec<u8>> = row.try_get("known")?;
            let passed = result.spot_check != Some(false)
                && known.is_some_and(|known| agree(&known, result.output));
            store(if passed { "valid" } else { "invalid" })
                .execute(&mut *tx)
                .await?;
            wallets::judge(&mut tx, &wallet, passed).await?;
            tx.commit().await?;
            return Ok(Recorded::Canary { passed });
        }

        let open = matches!(row.try_get::<&str, _>("unit_state")?, "queued" | "leased")
            && matches!(row.try_get::<&str, _>("job_state")?, "queued" | "running");
        if !open {
            // Settled or withdrawn: a late replica neither counts nor costs its wallet.
            tx.rollback().await?;
            return Ok(Recorded::Stale("the unit is already settled"));
        }
        store("pending").execute(&mut *tx).await?;

        let pending: Vec<Stored> = sqlx::query(
            "SELECT lease_id, wallet, output, spot_check, trusted FROM results
             WHERE unit_id = ? AND state = 'pending' ORDER BY received_ms, rowid",
        )
        .bind(&unit)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(Stored {
                lease: r.try_get("lease_id")?,
                wallet: r.try_get("wallet")?,
                output: r.try_get("output")?,
                spot_check: r.try_get("spot_check")?,
                trusted: r.try_get("trusted")?,
            })
        })
        .collect::<Result<_, StorageError>>()?;
        let judged_before: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM results WHERE unit_id = ? AND state = 'invalid'",
        )
        .bind(&unit)
        .fetch_one(&mut *tx)
        .await?;
        let candidates: Vec<Candidate<'_>> = pending
            .iter()
            .map(|s| Candidate {
                output: &s.output,
                spot_check: s.spot_check,
                trusted: s.trusted,
            })
            .collect();
        // The job's quorum binds every result but a trusted wallet's: the unit's own
        // quorum of 1 (fixed at its first lease, to a then-trusted wallet) only lets a
        // trusted result stand alone, never an untrusted one that got the unit after the
        // trusted lease was lost.
        let policy = Policy {
            quorum: u32::try_from(row.try_get::<i64, _>("job_quorum")?)
                .unwrap_or(2)
                .max(1),
            trusted_alone: row.try_get::<i64, _>("quorum")? == 1,
            // Results already judged invalid count towards the limit.
            max_results: max_results.saturating_sub(u32::try_from(judged_before).unwrap_or(0)),
        };
        let this = pending
            .iter()
            .position(|s| s.lease == lease)
            .ok_or_else(|| StorageError::Corrupt(format!("result {lease} vanished")))?;

        let mut payments = Vec::new();
        let recorded = match judge(policy, &candidates, agree) {
            Outcome::Valid {
                canonical,
                valid,
                invalid,
            } => {
                for &i in &valid {
                    mark(&mut tx, &pending[i].lease, "valid").await?;
                    wallets::judge(&mut tx, &pending[i].wallet, true).await?;
                }
                for &i in &invalid {
                    mark(&mut tx, &pending[i].lease, "invalid").await?;
                    wallets::judge(&mut tx, &pending[i].wallet, false).await?;
                }
                sqlx::query("UPDATE units SET state = 'done', output = ? WHERE id = ?")
                    .bind(&pending[canonical].output)
                    .bind(&unit)
                    .execute(&mut *tx)
                    .await?;
                let paid: Vec<&str> = valid.iter().map(|&i| pending[i].wallet.as_str()).collect();
                payments = self
                    .pay(&mut tx, job, &unit, &paid, &pending[canonical].lease)
                    .await?;
                // Replicas still out are no longer needed.
                sqlx::query(
                    "UPDATE leases SET state = 'void' WHERE unit_id = ? AND state = 'active'",
                )
                .bind(&unit)
                .execute(&mut *tx)
                .await?;
                let counts = sqlx::query(
                    "UPDATE jobs SET units_done = units_done + 1, updated_ms = ? WHERE id = ?
                     RETURNING units_done, units_total",
                )
                .bind(now)
                .bind(job.to_string())
                .fetch_one(&mut *tx)
                .await?;
                let job_complete = counts.try_get::<i64, _>("units_done")?
                    == counts.try_get::<i64, _>("units_total")?;
                if valid.contains(&this) {
                    Recorded::Valid { job, job_complete }
                } else {
                    Recorded::Invalid {
                        job,
                        reason: "the result disagreed with the other volunteers' results",
                    }
                }
            }
            Outcome::Pending { more, invalid } => {
                for &i in &invalid {
                    mark(&mut tx, &pending[i].lease, "invalid").await?;
                    wallets::judge(&mut tx, &pending[i].wallet, false).await?;
                }
                let eligible = (pending.len() - invalid.len()) as i64;
                sqlx::query("UPDATE units SET wanted = ?, attempts = attempts + ? WHERE id = ?")
                    .bind(eligible + i64::from(more))
                    .bind(invalid.len() as i64)
                    .bind(&unit)
                    .execute(&mut *tx)
                    .await?;
                refresh_unit(&mut tx, &unit).await?;
                if invalid.contains(&this) {
                    Recorded::Invalid {
                        job,
                        reason: "the result failed the kernel's spot check",
                    }
                } else {
                    Recorded::Pending { job }
                }
            }
            Outcome::Failed { reason } => {
                // Nobody can tell which results were right: none are paid, none punished.
                sqlx::query(
                    "UPDATE results SET state = 'invalid' WHERE unit_id = ? AND state = 'pending'",
                )
                .bind(&unit)
                .execute(&mut *tx)
                .await?;
                let reason = format!("a unit could not be verified: {reason}");
                super::fail_in(&mut tx, self.billing(), job, &reason).await?;
                Recorded::JobFailed { job, reason }
            }
        };
        tx.commit().await?;
        for entry in payments {
            // Nobody listening is fine: receipts are a courtesy, the ledger is the record.
            let _ = self.feed.send(entry);
        }
        Ok(recorded)
    }
}
