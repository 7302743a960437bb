//! Reading settled units' outputs while their job runs, so a submitter can see a render
//! grow tile by tile: bounded pages over the `(job_id, idx)` index, never the whole job.

use super::sql::params;
use super::{Storage, StorageError};
use starling_protocol::JobId;

/// One page of settled outputs: `(unit index, output)` in unit order, and where the
/// page stopped short of the range asked (`None` when it covers it).
pub type OutputsPage = (Vec<(i64, Vec<u8>)>, Option<i64>);

impl Storage {
    /// The outputs of `job`'s settled units with an index in `from..to`, in unit order:
    /// at most `max_units` of them, and no more past the first than fit in `max_bytes`.
    /// Rows are streamed, so a page stops reading where it is full.
    pub async fn settled_outputs(
        &self,
        job: JobId,
        from: i64,
        to: i64,
        max_units: u32,
        max_bytes: usize,
    ) -> Result<OutputsPage, StorageError> {
        let job = job.to_string();
        self.reads
            .read(move |db| {
                // Sizes first, so a page reads only the outputs it sends.
                let sizes: Vec<(i64, i64)> = db.query_all(
                    "SELECT idx, length(output) FROM units
                     WHERE job_id = ?1 AND idx >= ?2 AND idx < ?3 AND state = 'done'
                     ORDER BY idx LIMIT ?4",
                    params![job, from, to, i64::from(max_units) + 1],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                let mut bytes = 0usize;
                let mut taken = 0usize;
                let mut next = None;
                for (idx, len) in &sizes {
                    let len = usize::try_from(*len).unwrap_or(usize::MAX);
                    let full = taken >= max_units as usize
                        || (taken > 0 && bytes.saturating_add(len) > max_bytes);
                    if full {
                        next = Some(*idx);
                        break;
                    }
                    bytes = bytes.saturating_add(len);
                    taken += 1;
                }
                let Some(&(last, _)) = sizes.get(taken.wrapping_sub(1)) else {
                    return Ok((Vec::new(), next));
                };
                let outputs = db.query_all(
                    "SELECT idx, output FROM units
                     WHERE job_id = ?1 AND idx >= ?2 AND idx <= ?3 AND state = 'done'
                     ORDER BY idx",
                    params![job, from, last],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Ok((outputs, next))
            })
            .await
    }
}

impl Storage {
    /// When `job`'s data was erased for good (`None` while it is kept, or no such job).
    pub async fn purged_ms(&self, job: JobId) -> Result<Option<i64>, StorageError> {
        let job = job.to_string();
        self.reads
            .read(move |db| {
                db.query_opt(
                    "SELECT purged_ms FROM jobs WHERE id = ?1",
                    params![job],
                    |r| r.get::<Option<i64>>(0),
                )
            })
            .await
            .map(Option::flatten)
    }
}
