//! The scenarios that drive storage directly (quorum 1 or 2, billed or not, adaptive
//! replication): each volunteer a task that leases, answers at once and leases again.

use crate::meter::Meter;
use crate::{bench_dir, billed, billing, env_count, job, Figures, Scenario};
use starling_protocol::{LeaseId, WalletAddress, WalletKey};
use starling_relay::ledger::MicroCredits;
use starling_relay::storage::{
    Judging, LeaseRequest, LeaseTerms, PeerId, Recorded, ReturnedResult, Storage,
};
use starling_relay::validation::Reference;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The scheduler's defaults (`SchedulerConfig`).
const AUDIT_RATE: f64 = 0.1;
const CANARY_RATE: f64 = 0.02;

/// How often the bench pays out accruals while volunteers work.
const PAYOUT_INTERVAL: Duration = Duration::from_secs(1);

/// Judging as the relay does by default.
const JUDGING: Judging = Judging {
    max_results: 6,
    vet_newcomers: true,
};

/// Records an honest `result` as the scheduler does: where only newcomers agree, again
/// with the reference run's output (an honest result's own bytes; the run's CPU is not
/// the relay's round trip, which this bench measures).
async fn record(storage: &Storage, result: ReturnedResult<'_>) -> anyhow::Result<Recorded> {
    let same = Arc::new(|a: &[u8], b: &[u8]| a == b);
    let recorded = storage
        .record_result(result, JUDGING, same.clone(), Reference::NotRun)
        .await?;
    if recorded != Recorded::NeedsReference {
        return Ok(recorded);
    }
    Ok(storage
        .record_result(
            result,
            JUDGING,
            same,
            Reference::Output(result.output.to_vec()),
        )
        .await?)
}

fn request(peer: PeerId, wallet: WalletAddress) -> LeaseRequest {
    LeaseRequest {
        custom_ok: true,
        peer,
        wallet,
        site: None,
        // As the scheduler makes them.
        lease: LeaseId::from_uuid(uuid::Uuid::now_v7()),
        terms: LeaseTerms::until(i64::MAX / 2),
        network: None,
        draw: rand::random(),
    }
}

/// Gives each wallet `results` valid results, one wallet at a time, so all are trusted;
/// returns the probability that each one's unit is audited.
async fn warm_up(
    storage: &Storage,
    wallets: &[(PeerId, WalletAddress)],
    results: usize,
    output_len: usize,
) -> anyhow::Result<Vec<f64>> {
    storage
        .insert_job(&job(wallets.len() * results, 1, None))
        .await?;
    let mut audit = Vec::new();
    let output = vec![7u8; output_len];
    for &(peer, wallet) in wallets {
        for _ in 0..results {
            let request = request(peer, wallet);
            anyhow::ensure!(
                storage.lease_work(&request, |_, q| q).await?.is_some(),
                "the warm-up job ran out"
            );
            let result = ReturnedResult {
                lease: request.lease,
                wallet,
                output: &output,
                spot_check: None,
            };
            record(storage, result).await?;
        }
        let reliability = storage
            .wallet(&wallet)
            .await?
            .map(|w| w.reliability)
            .filter(|r| r.trusted())
            .ok_or_else(|| anyhow::anyhow!("{wallet} is not trusted after warming up"))?;
        // As the scheduler decides per lease (here once per wallet: the record grows a
        // little during the run, so this slightly overstates the audits).
        audit.push(reliability.audit_probability(AUDIT_RATE));
    }
    Ok(audit)
}

/// Bytes of each output in the storage scenarios: `STARLING_BENCH_OUTPUT_BYTES`, else 64
/// (real units return kilobytes; the default measures the relay's own cost per unit).
fn output_bytes() -> anyhow::Result<usize> {
    env_count("STARLING_BENCH_OUTPUT_BYTES", 64)
}

/// The database a scenario runs on.
pub(crate) enum Engine {
    /// A SQLite file of its own.
    Sqlite,
    /// A fresh PostgreSQL database, shared by `relays` storages (relays) in this process;
    /// `pipelined`: whether their writers pipeline writes (see `storage/pipeline.rs`).
    Postgres {
        url: String,
        relays: usize,
        pipelined: bool,
    },
}

pub(crate) async fn run(
    scenario: Scenario,
    units: usize,
    engine: &Engine,
) -> anyhow::Result<Figures> {
    let output_len = output_bytes()?;
    let dir = bench_dir();
    let mut relays = match engine {
        Engine::Sqlite => vec![Storage::open(&dir).await?],
        Engine::Postgres {
            url,
            relays,
            pipelined,
        } => {
            let mut opened = Vec::new();
            for _ in 0..*relays {
                let storage = Storage::open_postgres(url, &dir).await?;
                storage.pipeline_writes(*pipelined);
                opened.push(storage);
            }
            opened
        }
    };
    let mut submitter = None;
    if scenario.billed {
        let (billed, account) = billed(relays.remove(0), MicroCredits(1_000)).await?;
        let key = billed.billing().map(|b| b.key.clone());
        relays = relays
            .into_iter()
            .map(|s| match &key {
                Some(key) => s.with_billing(billing(key, MicroCredits(1_000))),
                None => s,
            })
            .collect();
        relays.insert(0, billed);
        submitter = Some(account);
    }
    let storage = relays[0].clone();
    let wallets: Vec<(PeerId, WalletAddress)> = (0..scenario.workers)
        .map(|_| {
            (
                PeerId::new(),
                WalletKey::from_seed(rand::random()).address(),
            )
        })
        .collect();
    let audit_probability = match scenario.adaptive {
        Some(results) => warm_up(&storage, &wallets, results, output_len).await?,
        None => vec![1.0; wallets.len()],
    };
    let storing = Instant::now();
    storage
        .insert_job(&job(units, scenario.quorum, submitter))
        .await?;
    let stored_in = storing.elapsed();
    let database_before = crate::postgres::server_cpu();
    let round_trips =
        |relays: &[Storage]| relays.iter().map(Storage::writer_round_trips).sum::<u64>();
    let round_trips_before = round_trips(&relays);
    let in_turn = |relays: &[Storage]| {
        relays.iter().map(Storage::writer_time_in_turn).fold(
            (Duration::ZERO, Duration::ZERO),
            |(a, s), (alone, shared)| (a + alone, s + shared),
        )
    };
    let in_turn_before = in_turn(&relays);
    let meter = Meter::start();
    // Payouts run beside the volunteers as the relay's housekeeping runs them, but every
    // second rather than every five, and once more when the work is done.
    let payouts: Vec<_> = relays
        .iter()
        .filter(|_| scenario.billed)
        .map(|storage| {
            let storage = storage.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PAYOUT_INTERVAL).await;
                    if let Err(e) = storage.pay_out_all().await {
                        return anyhow::Result::<()>::Err(e.into());
                    }
                }
            })
        })
        .collect();
    let mut tasks = Vec::new();
    for (i, (&(peer, wallet), &audit_probability)) in
        wallets.iter().zip(&audit_probability).enumerate()
    {
        // Volunteers spread over the relays.
        let storage = relays[i % relays.len()].clone();
        tasks.push(tokio::spawn(async move {
            let output = vec![7u8; output_len];
            let mut latencies = Vec::new();
            let mut settled = 0usize;
            loop {
                let request = request(peer, wallet);
                let t = Instant::now();
                let mut leased = None;
                let (roll, pick, audit): (f64, f64, f64) = rand::random();
                let adaptive = scenario.adaptive.is_some();
                if adaptive && roll < CANARY_RATE {
                    leased = storage.lease_canary(&request, pick).await?;
                }
                if leased.is_none() {
                    // As the scheduler decides for a trusted wallet and a kernel without a
                    // spot check: one result, except for audits.
                    let quorum_for = move |_: &str, q: u32| {
                        if adaptive && audit >= audit_probability {
                            1
                        } else {
                            q
                        }
                    };
                    leased = storage.lease_work(&request, quorum_for).await?;
                }
                if leased.is_none() {
                    break;
                }
                latencies.push(t.elapsed());
                let result = ReturnedResult {
                    lease: request.lease,
                    wallet,
                    output: &output,
                    spot_check: None,
                };
                match record(&storage, result).await? {
                    Recorded::Valid { .. } => settled += 1,
                    Recorded::Pending { .. } | Recorded::Canary { passed: true } => {}
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
    for payouts in payouts {
        if payouts.is_finished() {
            payouts.await??;
        } else {
            payouts.abort();
        }
    }
    if scenario.billed {
        storage.pay_out_all().await?;
        anyhow::ensure!(storage.accruals().await?.is_empty(), "accruals left unpaid");
    }
    let mut figures = meter.figures(units, latencies);
    figures.round_trips = round_trips(&relays) - round_trips_before;
    let (alone, shared) = in_turn(&relays);
    figures.in_turn = (
        alone.saturating_sub(in_turn_before.0),
        shared.saturating_sub(in_turn_before.1),
    );
    figures.job_stored_in = stored_in;
    // Read before the relays close their connections: a server process that ended is
    // no longer counted.
    if matches!(engine, Engine::Postgres { .. }) {
        if let Some((after, before)) = crate::postgres::server_cpu().zip(database_before) {
            figures.database = Some(crate::postgres::server_cpu_since(&before, &after));
            figures.database_by_role = crate::postgres::server_cpu_by_role(&before, &after);
        }
    }
    drop(storage);
    drop(relays);
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(settled == units, "{settled} of {units} units settled");
    Ok(figures)
}
