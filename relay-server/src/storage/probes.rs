//! Probes: jobs the relay makes itself for known-answer units (migration 0018). A probe
//! is stored already settled (its units `done` with the relay's own outputs) and belongs
//! to nobody, so it is never leased as work, listed, billed or counted; its units are
//! handed out by `leases::lease_canary_in`, each to one wallet only.

use super::sql::params;
use super::{now_ms, Storage, StorageError};
use starling_protocol::{JobId, UnitId};

/// A probe job, planned and partly computed by the relay.
#[derive(Debug, Clone)]
pub struct NewProbe {
    /// The job's id.
    pub id: JobId,
    /// Its kernel.
    pub kernel: String,
    /// Its parameters, as a submitter's would be.
    pub params: serde_json::Value,
    /// Its packed input.
    pub input: Vec<u8>,
    /// The units the relay computed (not all of the job's).
    pub units: Vec<ProbeUnit>,
}

/// One unit of a probe and its known answer.
#[derive(Debug, Clone)]
pub struct ProbeUnit {
    /// Its place in the job's split, so it looks like that unit of a real job.
    pub idx: usize,
    /// Its parameters as JSON text.
    pub params: String,
    /// Its FLOPs.
    pub flops: u64,
    /// The CPU reference's output.
    pub output: Vec<u8>,
}

impl Storage {
    /// Stores `probe`, settled: its input sealed as any job's, its units done.
    pub async fn insert_probe(&self, probe: NewProbe) -> Result<(), StorageError> {
        let (key, wrapped_key) = self.keys.create(probe.id)?;
        let sealed_input = key.seal(probe.id, super::job_keys::Part::Input, &probe.input)?;
        let id = probe.id;
        let inserted = self
            .writer
            .exec(move |db| {
                let now = now_ms();
                let job = probe.id.to_string();
                let flops: u64 = probe.units.iter().map(|u| u.flops).sum();
                let units = probe.units.len() as i64;
                db.write(
                    "INSERT INTO jobs (id, kernel, params, state, units_total, units_done, flops,
                                       quorum, created_ms, updated_ms, sealed, probe, wrapped_key)
                     VALUES (?1, ?2, ?3, 'done', ?4, ?4, ?5, 1, ?6, ?6, 1, 1, ?7)",
                    params![
                        job,
                        probe.kernel,
                        probe.params.to_string(),
                        units,
                        i64::try_from(flops).unwrap_or(i64::MAX),
                        now,
                        wrapped_key,
                    ],
                )?;
                db.write(
                    "INSERT INTO job_inputs (job_id, input) VALUES (?1, ?2)",
                    params![job, sealed_input],
                )?;
                let insert_unit =
                    "INSERT INTO units (id, job_id, idx, params, state, flops, quorum, output)
                     VALUES (?1, ?2, ?3, ?4, 'done', ?5, 1, ?6)";
                for unit in &probe.units {
                    db.write(
                        insert_unit,
                        params![
                            UnitId::from_uuid(uuid::Uuid::now_v7()).to_string(),
                            job,
                            unit.idx as i64,
                            unit.params,
                            i64::try_from(unit.flops).unwrap_or(i64::MAX),
                            unit.output,
                        ],
                    )?;
                }
                Ok(())
            })
            .await;
        if inserted.is_err() {
            if let Err(e) = self.keys.destroy(id) {
                tracing::warn!(job = %id, "cannot remove the key of a probe not stored: {e}");
            }
        }
        inserted
    }

    /// Kernels with real work queued or running, and how many probe units of each no
    /// wallet has leased yet (with their data still kept).
    pub async fn probe_stock(&self) -> Result<Vec<(String, i64)>, StorageError> {
        self.reads
            .read(|db| {
                db.query_all(
                    "SELECT demand.kernel,
                            (SELECT COUNT(*) FROM jobs JOIN units ON units.job_id = jobs.id
                             WHERE jobs.probe = 1 AND jobs.kernel = demand.kernel
                               AND EXISTS (SELECT 1 FROM job_inputs WHERE job_inputs.job_id = jobs.id)
                               AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.unit_id = units.id))
                     FROM (SELECT DISTINCT kernel FROM jobs
                           WHERE probe = 0 AND state IN ('queued', 'running')) AS demand",
                    params![],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
            })
            .await
    }
}
