//! `cargo bench -p relay-server`: durable unit round trips per second through the relay's
//! storage (lease + result commit, each one SQLite transaction in WAL mode, on a real file),
//! and lease latency percentiles, with 1 worker and with many in the same run (ratio).
//!
//! This is the floor under the relay's throughput: the WebRTC sessions, kernel checks and
//! (later) replication sit on top. It does not merge jobs; the last unit's completion is
//! counted like any other.

use relay_server::storage::{
    LeaseRequest, LeaseTerms, NewJob, PeerId, Recorded, ReturnedResult, Storage,
};
use starling_protocol::{JobId, LeaseId, WalletKey};
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
            quorum: 1,
        })
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            let peer = PeerId::new();
            let wallet = WalletKey::from_seed(rand_seed()).address();
            let output = vec![7u8; 64];
            let mut latencies = Vec::new();
            loop {
                let lease = LeaseId::from_uuid(uuid::Uuid::new_v4());
                let t = Instant::now();
                let request = LeaseRequest {
                    peer,
                    wallet,
                    lease,
                    terms: LeaseTerms::until(i64::MAX),
                };
                let Some(_unit) = storage.lease_work(&request, |_, q| q).await? else {
                    break;
                };
                latencies.push(t.elapsed());
                let result = ReturnedResult {
                    lease,
                    wallet,
                    output: &output,
                    spot_check: None,
                };
                match storage.record_result(result, 6, &|a, b| a == b).await? {
                    Recorded::Valid { .. } => {}
                    other => anyhow::bail!("a fresh result was {other:?}"),
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

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    seed
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!(
        "{UNITS} units per run; each round trip = lease_work + record_result (quorum 1), two transactions"
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
