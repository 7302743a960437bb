//! `cargo bench -p relay-server`: durable unit round trips per second through the relay's
//! storage (lease + result + validation + commit, each one SQLite transaction in WAL mode
//! on a real file), lease latency percentiles, and the verification overhead (results
//! computed beyond one per unit, over useful results), in the same run for:
//!
//! - quorum 1 without billing (the floor: two transactions per unit);
//! - quorum 1 with billing (each settled unit also appends signed ledger entries);
//! - quorum 2 with billing (every unit computed twice by distinct wallets and judged).
//!
//! The WebRTC sessions, signature checks and kernel spot checks sit on top of this and are
//! not measured here; see docs/ARCHITECTURE.md for what limits the figures.

use relay_server::ledger::MicroCredits;
use relay_server::storage::{
    Billing, LeaseRequest, LeaseTerms, NewJob, PeerId, Pricing, Recorded, ReturnedResult, Storage,
};
use starling_protocol::{JobId, LeaseId, WalletKey};
use std::time::{Duration, Instant};

/// Units per run.
const UNITS: usize = 5_000;
/// Concurrent volunteers (each its own wallet and connection).
const WORKERS: usize = 4;

struct Figures {
    units_per_s: f64,
    results_per_s: f64,
    overhead: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(quorum: u32, billed: bool) -> anyhow::Result<Figures> {
    let dir = std::env::temp_dir().join(format!(
        "starling-bench-{}-{quorum}-{billed}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut storage = Storage::open(&dir).await?;
    let mut submitter = None;
    if billed {
        let key = WalletKey::from_seed(rand::random());
        storage = storage.with_billing(Billing {
            key: key.clone(),
            pricing: Pricing {
                price_per_gflop: MicroCredits(1_000),
                site_share_ppm: 100_000,
                platform_fee_ppm: 50_000,
            },
        });
        let (account, _) = storage
            .create_account(&key, MicroCredits::from_credits(1_000_000)?, None)
            .await?;
        submitter = Some(account);
    }
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
            quorum,
            submitter,
        })
        .await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let storage = storage.clone();
        tasks.push(tokio::spawn(async move {
            let peer = PeerId::new();
            let wallet = WalletKey::from_seed(rand::random()).address();
            let output = vec![7u8; 64];
            let mut latencies = Vec::new();
            let mut settled = 0usize;
            loop {
                let lease = LeaseId::from_uuid(uuid::Uuid::new_v4());
                let request = LeaseRequest {
                    peer,
                    wallet,
                    site: None,
                    lease,
                    terms: LeaseTerms::until(i64::MAX / 2),
                };
                let t = Instant::now();
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
                    Recorded::Valid { .. } => settled += 1,
                    Recorded::Pending { .. } => {}
                    other => anyhow::bail!("an honest result was {other:?}"),
                }
            }
            anyhow::Ok((latencies, settled))
        }));
    }
    let mut latencies = Vec::new();
    let mut settled = 0;
    for task in tasks {
        let (l, s) = task.await??;
        latencies.extend(l);
        settled += s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(settled == UNITS, "{settled} of {UNITS} units settled");
    let results = latencies.len();
    latencies.sort();
    Ok(Figures {
        units_per_s: UNITS as f64 / elapsed,
        results_per_s: results as f64 / elapsed,
        overhead: (results - UNITS) as f64 / UNITS as f64,
        p50: latencies[results / 2],
        p99: latencies[results * 99 / 100],
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    println!("{UNITS} units per run, {WORKERS} volunteers (wallets); one round trip = lease + result (+ judge, + ledger)");
    println!(
        "{:<24} {:>9} {:>11} {:>10} {:>10} {:>10} {:>8}",
        "scenario", "units/s", "results/s", "lease p50", "lease p99", "overhead", "vs floor"
    );
    let mut floor = None;
    for (name, quorum, billed) in [
        ("quorum 1, no billing", 1, false),
        ("quorum 1, billed", 1, true),
        ("quorum 2, billed", 2, true),
    ] {
        let f = run(quorum, billed).await?;
        let base = *floor.get_or_insert(f.units_per_s);
        println!(
            "{name:<24} {:>9.0} {:>11.0} {:>8.2}ms {:>8.2}ms {:>9.0}% {:>7.2}x",
            f.units_per_s,
            f.results_per_s,
            f.p50.as_secs_f64() * 1e3,
            f.p99.as_secs_f64() * 1e3,
            f.overhead * 100.0,
            f.units_per_s / base
        );
    }
    Ok(())
}
