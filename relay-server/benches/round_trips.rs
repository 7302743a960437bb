//! `cargo bench -p relay-server`: durable unit round trips per second through the relay's
//! storage (lease + result commit, each one SQLite transaction in WAL mode, on a real file),
//! and lease latency percentiles, with 1 worker and with many in the same run (ratio).
//!
//! This is the floor under the relay's throughput: the WebRTC sessions, kernel checks and
//! (later) replication sit on top. It does not merge jobs; the last unit's completion is
//! counted like any other.

use relay_server::storage::{Completion, LeaseTerms, NewJob, PeerId, Storage};
use starling_protocol::{JobId, LeaseId};
use std::time::{Duration, Instant};

/// Units per job in each run.
const UNITS: usize = 20_000;

struct Figures {
    units_per_s: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(workers: usize) -> anyhow::Result<Figures> {
    let dir = std::env::temp_dir().join(format!("starling-bench-{}-{workers}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Storage::open(&dir).await?;
    storage
        .insert_job(&NewJob {
            id: JobId::from_uuid(uuid::Uuid::new_v4()),
            kernel: "matmul".into(),
            params: serde_json::json!({"m": 1, "k": 1, "n": 1}),
            input: vec![0; 8],
            units: (0..UNITS)
                .map(|i| format!("{{\"row_start\":{i},\"rows\":1,\"k\":1,\"n\":1}}"))
                .collect(),
            unit_flops: vec![64_000_000; UNITS],
            flops: 64_000_000 * UNITS as u64,
        })
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            let peer = PeerId::new();
            let output = vec![7u8; 64];
            let mut latencies = Vec::new();
            loop {
                let lease = LeaseId::from_uuid(uuid::Uuid::new_v4());
                let t = Instant::now();
                let terms = LeaseTerms::until(i64::MAX);
                let Some(_unit) = storage.lease_next(peer, lease, terms).await? else {
                    break;
                };
                latencies.push(t.elapsed());
                match storage.complete_lease(lease, peer, &output).await? {
                    Completion::Stale => anyhow::bail!("a fresh lease was stale"),
                    Completion::Accepted { .. } | Completion::JobComplete { .. } => {}
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(latencies.len() == UNITS, "{} units leased", latencies.len());
    latencies.sort();
    Ok(Figures {
        units_per_s: UNITS as f64 / elapsed.as_secs_f64(),
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!(
        "{UNITS} units per run; each round trip = lease_next + complete_lease, two transactions"
    );
    println!(
        "{:>8} {:>14} {:>12} {:>12} {:>10}",
        "workers", "round trips/s", "lease p50", "lease p99", "vs 1"
    );
    let mut baseline = None;
    for workers in [1, 4, 16] {
        let f = run(workers).await?;
        let base = *baseline.get_or_insert(f.units_per_s);
        println!(
            "{workers:>8} {:>14.0} {:>10.2}ms {:>10.2}ms {:>9.2}x",
            f.units_per_s,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.units_per_s / base
        );
    }
    Ok(())
}
