//! The `through the scheduler` scenario, and the network of trusted volunteers it
//! shares with the WebRTC one.

use crate::meter::{pin_this_thread, Meter, VOLUNTEER_THREAD};
use crate::{bench_dir, billed, Figures};
use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::{Assignment, ChannelBinding, JobId, WalletKey};
use starling_relay::ledger::MicroCredits;
use starling_relay::scheduler::caps::LeaseLimits;
use starling_relay::scheduler::{Scheduler, SchedulerConfig, Speed, Verdict};
use starling_relay::storage::{JobState, PeerId, Storage};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Rows of the `through the scheduler` job's matrices (`k` and `n`): one row is a unit.
const THROUGH_K: u32 = 8;

/// The relay's own path, as its sessions drive it, for one scenario: each volunteer
/// leases with `Scheduler::next_assignment` (its wallet's standing read, canaries and
/// audits decided, the unit's input built), computes the unit with the CPU reference,
/// and hands it to `Scheduler::accept_result` (lease read, output shape and Freivalds'
/// check on matmul, then judged and stored). Each volunteer first proves its wallet as a
/// session's hello does, once. The job is
/// a billed `matmul` of one-row units under the default quorum of 2, and the wallets are
/// trusted first (by a warm-up job), so units are computed once and Freivalds' check
/// stands in for the replica, as on a network of known volunteers. Housekeeping (lease
/// expiry, payouts every 5 s) runs beside it, and the job's merge and final payout are
/// in the time. The volunteers' own work runs on a thread of its own (see the module's
/// doc).
pub(crate) async fn through_scheduler(units: usize, volunteers: usize) -> anyhow::Result<Figures> {
    let network = TrustedNetwork::start(volunteers).await?;
    let jobs = submit_matmul(&network.scheduler, units, network.account, None).await?;
    let meter = Meter::start();
    let latencies = volunteer_until_done(
        &network.scheduler,
        &network.storage,
        &network.wallets,
        &network.device,
        &jobs,
    )
    .await?;
    let figures = meter.figures(units, latencies);
    network.finish(&jobs).await?;
    Ok(figures)
}

/// A billed relay whose volunteers' wallets are all trusted, as in a network of known
/// volunteers: the setting of the last two scenarios.
pub(crate) struct TrustedNetwork {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) storage: Storage,
    pub(crate) scheduler: Scheduler,
    pub(crate) account: starling_relay::ledger::AccountId,
    pub(crate) wallets: Vec<(PeerId, Arc<WalletKey>)>,
    device: VolunteerThread,
    housekeeping: tokio::task::JoinHandle<()>,
}

impl TrustedNetwork {
    pub(crate) async fn start(volunteers: usize) -> anyhow::Result<Self> {
        let dir = bench_dir();
        let (storage, account) =
            billed(Storage::open(&dir).await?, MicroCredits(1_000_000_000)).await?;
        let k = THROUGH_K;
        let scheduler = Scheduler::new(
            storage.clone(),
            Arc::new(Catalog::builtin()),
            SchedulerConfig {
                // One row of an m x 8 x 8 product per unit.
                unit_flops: u64::from(2 * k * k),
                // No lease rate per wallet: each bench volunteer stands for many
                // machines' worth of leases (its units take microseconds), and 64 of
                // them at the default 50 a second would cap the relay at 3 200 units/s
                // whatever it can do. The rate cap's own test is `tests/lease_caps.rs`.
                caps: LeaseLimits {
                    per_second: 0.0,
                    ..LeaseLimits::default()
                },
                ..SchedulerConfig::default()
            },
        );
        let housekeeping = scheduler.spawn_housekeeping();
        let wallets: Vec<(PeerId, Arc<WalletKey>)> = (0..volunteers)
            .map(|_| {
                (
                    PeerId::new(),
                    Arc::new(WalletKey::from_seed(rand::random())),
                )
            })
            .collect();
        let device = VolunteerThread::start()?;
        for (_, wallet) in &wallets {
            storage.touch_wallet(&wallet.address()).await?;
        }
        // Warm-up: every unit computed twice by distinct wallets until all are trusted.
        // How the units spread over the wallets depends on timing, so a round can leave a
        // wallet short of the record it needs: another round follows then, a few at most.
        let mut rounds = 0;
        loop {
            let warm = submit_matmul(&scheduler, volunteers * 12, account, None).await?;
            volunteer_until_done(&scheduler, &storage, &wallets, &device, &warm).await?;
            rounds += 1;
            let mut untrusted = Vec::new();
            for (_, wallet) in &wallets {
                let trusted = storage
                    .wallet(&wallet.address())
                    .await?
                    .is_some_and(|w| w.reliability.trusted());
                if !trusted {
                    untrusted.push(wallet.address());
                }
            }
            match untrusted.first() {
                None => break,
                Some(wallet) if rounds >= 4 => {
                    anyhow::bail!("{wallet} is not trusted after {rounds} warm-up rounds")
                }
                Some(_) => {}
            }
        }
        Ok(Self {
            dir,
            storage,
            scheduler,
            account,
            wallets,
            device,
            housekeeping,
        })
    }

    /// Whether every one of `jobs` has ended done, or which did not.
    pub(crate) async fn all_done(
        &self,
        jobs: &[JobId],
    ) -> anyhow::Result<Result<(), (JobId, JobState)>> {
        for &job in jobs {
            let record = self
                .storage
                .job(job)
                .await?
                .ok_or_else(|| anyhow::anyhow!("job {job} vanished"))?;
            if record.state != JobState::Done {
                return Ok(Err((job, record.state)));
            }
        }
        Ok(Ok(()))
    }

    /// Checks that every one of `jobs` is done, then removes the database.
    pub(crate) async fn finish(self, jobs: &[JobId]) -> anyhow::Result<()> {
        self.housekeeping.abort();
        if let Err((job, state)) = self.all_done(jobs).await? {
            anyhow::bail!("job {job} ended {state:?}");
        }
        drop(self.scheduler);
        drop(self.storage);
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// Rows one matmul job may have (the kernel's limit on `m`).
const MAX_ROWS: usize = 4096;

/// Submits billed m x 8 x 8 matmuls of random inputs, `units` rows in all, under the
/// submitter's `quorum` if named (else the relay's default and adaptive replication).
pub(crate) async fn submit_matmul(
    scheduler: &Scheduler,
    units: usize,
    account: starling_relay::ledger::AccountId,
    quorum: Option<u32>,
) -> anyhow::Result<Vec<JobId>> {
    let k = THROUGH_K as usize;
    let random = |count: usize| -> Vec<u8> {
        (0..count)
            .flat_map(|_| (rand::random::<f32>() * 2.0 - 1.0).to_le_bytes())
            .collect()
    };
    let mut jobs = Vec::new();
    let mut left = units;
    while left > 0 {
        let m = left.min(MAX_ROWS);
        left -= m;
        let mut inputs = NamedInputs::new();
        inputs.insert("a".into(), random(m * k));
        inputs.insert("b".into(), random(k * k));
        jobs.push(
            scheduler
                .submit(
                    "matmul",
                    serde_json::json!({"m": m, "k": k, "n": k}),
                    &inputs,
                    quorum,
                    Some(account),
                    None,
                )
                .await?,
        );
    }
    Ok(jobs)
}

/// A unit for the volunteers' thread to run.
struct Computation {
    assignment: Assignment,
    done: tokio::sync::oneshot::Sender<anyhow::Result<Vec<u8>>>,
}

/// The simulated volunteers' own work, on a thread of its own (see the module's doc):
/// running each unit with the CPU reference. Ends when the last
/// handle is dropped.
#[derive(Clone)]
struct VolunteerThread {
    queue: std::sync::mpsc::Sender<Computation>,
}

impl VolunteerThread {
    fn start() -> anyhow::Result<Self> {
        let cpus = std::env::var("STARLING_BENCH_VOLUNTEER_CPUS").ok();
        let (queue, units) = std::sync::mpsc::channel::<Computation>();
        std::thread::Builder::new()
            .name(VOLUNTEER_THREAD.into())
            .spawn(move || {
                if let Some(cpus) = cpus {
                    if let Err(e) = pin_this_thread(&cpus) {
                        eprintln!("volunteer thread not pinned to {cpus}: {e}");
                    }
                }
                let catalog = Catalog::builtin();
                while let Ok(unit) = units.recv() {
                    let a = &unit.assignment;
                    let computed = catalog
                        .get(&a.kernel)
                        .and_then(|k| k.run_cpu(&a.params_json, &a.input))
                        .map_err(anyhow::Error::from);
                    let _ = unit.done.send(computed);
                }
            })?;
        Ok(Self { queue })
    }

    async fn compute(&self, assignment: Assignment) -> anyhow::Result<Vec<u8>> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.queue
            .send(Computation { assignment, done })
            .map_err(|_| anyhow::anyhow!("the volunteer thread is gone"))?;
        answer.await?
    }
}

/// A connection's binding as a volunteer's offer and the relay's answer would name it:
/// certificates made up from `seed`, one pair per simulated connection.
fn bench_binding(seed: &str) -> anyhow::Result<ChannelBinding> {
    use sha2::Digest;
    let certificate = |side: &str| {
        let digest = sha2::Sha256::digest(format!("{side} {seed}"));
        let hex: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("v=0\r\na=fingerprint:sha-256 {}\r\n", hex.join(":"))
    };
    Ok(ChannelBinding::from_descriptions(
        &certificate("volunteer"),
        &certificate("relay"),
    )?)
}

/// Runs every volunteer until `jobs` are done; returns each lease's latency.
async fn volunteer_until_done(
    scheduler: &Scheduler,
    storage: &Storage,
    wallets: &[(PeerId, Arc<WalletKey>)],
    device: &VolunteerThread,
    jobs: &[JobId],
) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = Vec::new();
    for (peer, wallet) in wallets.iter().cloned() {
        let (scheduler, storage, device) = (scheduler.clone(), storage.clone(), device.clone());
        let jobs = jobs.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            // The session's one signature, signed and checked as a hello's proof is.
            let binding = bench_binding(&peer.to_string())?;
            let proof = wallet.sign_channel(&binding);
            wallet.address().verify_channel(&binding, &proof)?;
            loop {
                let t = Instant::now();
                let assigned = scheduler
                    .next_assignment(peer, wallet.address(), None, Speed::NEWCOMER, None)
                    .await?;
                let Some((assignment, _)) = assigned else {
                    // Nothing to lease: the jobs are done, or their last units are out.
                    let mut done = true;
                    for &job in &jobs {
                        let ended = storage.job(job).await?.is_some_and(|j| {
                            !matches!(j.state, JobState::Queued | JobState::Running)
                        });
                        done &= ended;
                    }
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                latencies.push(t.elapsed());
                let lease = assignment.lease;
                let output = device.compute(assignment).await?;
                match scheduler
                    .accept_result(peer, wallet.address(), lease, &output)
                    .await?
                {
                    Verdict::Accepted => {}
                    // A replica that came back after its unit settled without it (the
                    // relay voids leases it no longer needs): wasted, not wrong.
                    Verdict::Rejected(why) if why.contains("already settled") => {}
                    Verdict::Rejected(why) => anyhow::bail!("an honest result was refused: {why}"),
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(latencies)
}
