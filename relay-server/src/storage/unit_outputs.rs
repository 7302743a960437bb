//! Reading settled units' outputs while their job runs, so a submitter can see a render
//! grow tile by tile: bounded pages over the `(job_id, idx)` index, never the whole job.

use super::{Storage, StorageError};
use sqlx::Row;
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
        use futures::TryStreamExt as _;
        let mut rows = sqlx::query(
            "SELECT idx, output FROM units
             WHERE job_id = ?1 AND idx >= ?2 AND idx < ?3 AND state = 'done'
             ORDER BY idx",
        )
        .bind(job.to_string())
        .bind(from)
        .bind(to)
        .fetch(&self.pool);
        let mut outputs = Vec::new();
        let mut bytes = 0usize;
        while let Some(row) = rows.try_next().await? {
            let idx: i64 = row.try_get("idx")?;
            let output: Vec<u8> = row.try_get("output")?;
            let full = outputs.len() >= max_units as usize
                || (!outputs.is_empty() && bytes.saturating_add(output.len()) > max_bytes);
            if full {
                return Ok((outputs, Some(idx)));
            }
            bytes = bytes.saturating_add(output.len());
            outputs.push((idx, output));
        }
        Ok((outputs, None))
    }
}

impl Storage {
    /// When `job`'s data was erased for good (`None` while it is kept, or no such job).
    pub async fn purged_ms(&self, job: JobId) -> Result<Option<i64>, StorageError> {
        Ok(
            sqlx::query_scalar::<_, Option<i64>>("SELECT purged_ms FROM jobs WHERE id = ?1")
                .bind(job.to_string())
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }
}
