//! What sealing a job's data at rest costs beside storing it.

use crate::{bench_dir, job};
use starling_protocol::JobId;
use starling_relay::storage::Storage;
use std::time::Instant;

/// What sealing a job's data at rest costs (issue 20) beside what storing it costs, for
/// an input of `mib` MiB: a job's input is sealed once when it is submitted and opened
/// once per relay process that leases its units (then cached), its result sealed once
/// when it is merged; nothing is sealed per unit, so the scenarios above do not see it.
pub(crate) async fn sealing(mib: usize) -> anyhow::Result<()> {
    use starling_relay::storage::job_keys::{JobKeys, Part};
    let dir = bench_dir();
    let storage = Storage::open(&dir).await?;
    let keys = JobKeys::open(&dir.join("sealing-alone"))?;
    let input: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
    let mut sealed_ms = Vec::new();
    let mut stored_ms = Vec::new();
    let mut opened_ms = Vec::new();
    for _ in 0..5 {
        let id = JobId::from_uuid(uuid::Uuid::new_v4());
        let started = Instant::now();
        let (key, _) = keys.create(id)?;
        let sealed = key.seal(id, Part::Input, &input)?;
        sealed_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        std::hint::black_box(key.open(id, Part::Input, &sealed)?);
        opened_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let mut stored = job(1, 1, None);
        stored.input = input.clone();
        let started = Instant::now();
        storage.insert_job(&stored).await?;
        stored_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (seal, open, store) = (
        median(&mut sealed_ms),
        median(&mut opened_ms),
        median(&mut stored_ms),
    );
    println!(
        "job data at rest, {mib} MiB input: sealing {seal:.1} ms ({:.2} GB/s), opening {open:.1} ms; \
         submitting the job (sealing included) {store:.1} ms, so sealing is {:.0}% of it",
        (mib << 20) as f64 / seal / 1e6,
        100.0 * seal / store
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
