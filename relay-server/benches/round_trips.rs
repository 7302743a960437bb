//! `cargo bench -p starling-relay`: durable unit round trips per second through the relay's
//! storage (lease + result + validation + commit, each acknowledged only once its group
//! of transactions is committed in WAL mode on a real file), lease latency percentiles,
//! and the verification overhead (results computed beyond one per unit, over useful
//! results), in the same run for:
//!
//! - quorum 1 without billing (the floor);
//! - quorum 1 with billing (each settled unit's price accrues to its payees, and payouts
//!   every second append the signed ledger entries);
//! - quorum 2 with billing (every unit computed twice by distinct wallets and judged);
//! - adaptive replication: a quorum-2 billed job whose volunteers' wallets are trusted,
//!   leased as the scheduler does for a kernel without a spot check (one result per unit,
//!   except audits, plus known-answer canaries at `canary_rate`), once with wallets just
//!   trusted (16 valid results: audited at nearly `audit_rate`) and once with a long clean
//!   record (200: audited at a tenth of it);
//! - the floor again with only 4 volunteers, as this bench measured before group commit;
//! - the relay's own path through the scheduler (see [`through_scheduler`]): each
//!   session's hello proof, Freivalds' check, wallet reads, canaries and payouts included;
//! - the same over real WebRTC (see [`over_webrtc`]): the relay's HTTP router answers
//!   each volunteer's offer and its sessions serve the data channels, every message
//!   crossing DTLS and SCTP both ways.
//!
//! Each volunteer is a task with its own wallet and connection id that leases, answers
//! at once and leases again, so the figures are what the relay sustains, not what
//! volunteers compute. All but the last two scenarios drive storage directly: kernel spot
//! checks and the scheduler's own reads sit on top of them, and the last two add them.
//! Only the last has WebRTC; see docs/ARCHITECTURE.md for what limits the figures.
//!
//! "writer µs/unit" is the CPU time of the storage's writer thread over the run, per unit
//! (Linux only: read from /proc), which says how close the writer is to being the limit;
//! "on CPU" is that time as a share of the run, and "queued" the share the writer was
//! ready to run but waited for a core (the other threads had them);
//! "KB/unit" is what the process wrote per unit (WAL frames and their checkpoints into
//! the database file).
//!
//! In the last two scenarios the volunteers' own work (running the unit on the CPU, and
//! over WebRTC their whole side of the connection) runs on threads of its own, as it
//! would on their machines, and the bench prints the relay's CPU time per unit (the
//! whole process's, less those threads') beside the volunteers'. On a 2-core machine the
//! two share the cores; to measure the relay on two cores of its own, run the bench
//! under `taskset -c 0,1` on a larger machine with `STARLING_BENCH_VOLUNTEER_CPUS=2-7`
//! (a Linux CPU list), which moves those threads off them.
//!
//! `STARLING_BENCH_UNITS` sets the units per run (default 20 000); `STARLING_BENCH_ONLY`
//! runs only the scenarios whose name contains it (for profiling one);
//! `STARLING_BENCH_VOLUNTEERS` sets how many volunteers the last two scenarios have
//! (default 64); `STARLING_BENCH_OUTPUT_BYTES` the size of each output in the storage
//! scenarios (64); `STARLING_BENCH_VOLUNTEER_CPUS` the CPUs of the last two scenarios'
//! volunteer threads.

use starling_kernels::{Catalog, NamedInputs};
use starling_protocol::{Assignment, ChannelBinding, JobId, LeaseId, WalletAddress, WalletKey};
use starling_relay::app::{self, AppState, Limits, StaticDirs};
use starling_relay::ledger::MicroCredits;
use starling_relay::scheduler::{Scheduler, SchedulerConfig, Speed, Verdict};
use starling_relay::storage::{
    Billing, JobState, Judging, LeaseRequest, LeaseTerms, NewJob, PeerId, Pricing, Recorded,
    ReturnedResult, Storage,
};
use starling_relay::validation::Reference;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent volunteers (each its own wallet and connection).
const WORKERS: usize = 64;
/// The scheduler's defaults (`SchedulerConfig`).
const AUDIT_RATE: f64 = 0.1;
const CANARY_RATE: f64 = 0.02;
/// How often the bench pays out accruals while volunteers work.
const PAYOUT_INTERVAL: Duration = Duration::from_secs(1);
/// Valid results that make a new wallet trusted (see `validation::trust`), with margin.
const JUST_TRUSTED: usize = 16;
/// Valid results of a wallet with a long clean record (audited at the floor rate).
const LONG_RECORD: usize = 200;

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    quorum: u32,
    billed: bool,
    workers: usize,
    /// Trusted wallets under the scheduler's adaptive replication, each warmed up with
    /// this many valid results first.
    adaptive: Option<usize>,
}

/// A thread's time so far: on a CPU, and runnable but waiting for one.
#[derive(Clone, Copy)]
struct ThreadTime {
    cpu: Duration,
    queued: Duration,
}

impl ThreadTime {
    fn since(self, before: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_sub(before.cpu),
            queued: self.queued.saturating_sub(before.queued),
        }
    }
}

struct Figures {
    writer: Option<ThreadTime>,
    /// CPU time of the whole process over the window, and of the volunteer thread in it.
    cpu: Option<(Duration, Duration)>,
    /// The measured window.
    elapsed: Duration,
    written: Option<u64>,
    units_per_s: f64,
    results_per_s: f64,
    overhead: f64,
    p50: Duration,
    p99: Duration,
}

/// What a scenario's measured window costs: time, the writer thread's CPU, bytes written.
struct Meter {
    started: Instant,
    writer: Option<ThreadTime>,
    cpu: Option<(Duration, Duration)>,
    written: Option<u64>,
}

impl Meter {
    fn start() -> Self {
        Self {
            writer: writer_time(),
            cpu: cpu_time(),
            written: written_bytes(),
            started: Instant::now(),
        }
    }

    /// The figures of `units` settled with one lease per entry of `latencies`.
    fn figures(self, units: usize, latencies: Vec<Duration>) -> Figures {
        self.end().figures(units, latencies)
    }

    /// Ends the window now, for figures whose latencies are gathered after it.
    fn end(self) -> Window {
        Window {
            elapsed: self.started.elapsed(),
            writer: self
                .writer
                .zip(writer_time())
                .map(|(before, after)| after.since(before)),
            cpu: self.cpu.zip(cpu_time()).map(|(before, after)| {
                (
                    after.0.saturating_sub(before.0),
                    after.1.saturating_sub(before.1),
                )
            }),
            written: self
                .written
                .zip(written_bytes())
                .map(|(before, after)| after.saturating_sub(before)),
        }
    }
}

/// A measured window's costs, once it ended.
struct Window {
    elapsed: Duration,
    writer: Option<ThreadTime>,
    cpu: Option<(Duration, Duration)>,
    written: Option<u64>,
}

impl Window {
    /// The figures of `units` settled with one lease per entry of `latencies`.
    fn figures(self, units: usize, mut latencies: Vec<Duration>) -> Figures {
        let elapsed = self.elapsed.as_secs_f64();
        let results = latencies.len();
        latencies.sort();
        Figures {
            writer: self.writer,
            cpu: self.cpu,
            elapsed: self.elapsed,
            written: self.written,
            units_per_s: units as f64 / elapsed,
            results_per_s: results as f64 / elapsed,
            overhead: results.saturating_sub(units) as f64 / units as f64,
            p50: latencies[results / 2],
            p99: latencies[results * 99 / 100],
        }
    }
}

/// A fresh directory for one scenario's database.
fn bench_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "starling-bench-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn job(units: usize, quorum: u32, submitter: Option<starling_relay::ledger::AccountId>) -> NewJob {
    NewJob {
        id: JobId::from_uuid(uuid::Uuid::new_v4()),
        kernel: "matmul".into(),
        params: serde_json::json!({"m": 1, "k": 1, "n": 1}),
        input: vec![0; 8],
        units: (0..units)
            .map(|i| format!("{{\"row_start\":{i},\"rows\":1,\"k\":1,\"n\":1}}"))
            .collect(),
        unit_flops: vec![64_000_000; units],
        flops: 64_000_000 * units as u64,
        quorum,
        quorum_explicit: false,
        submitter,
        max_active: None,
    }
}

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

/// The count in environment variable `name`, else `default`; a value that is not a count
/// is an error rather than silently the default.
fn env_count(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(n) => n
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={n:?} is not a count: {e}")),
        Err(_) => Ok(default),
    }
}

/// Bytes of each output in the storage scenarios: `STARLING_BENCH_OUTPUT_BYTES`, else 64
/// (real units return kilobytes; the default measures the relay's own cost per unit).
fn output_bytes() -> anyhow::Result<usize> {
    env_count("STARLING_BENCH_OUTPUT_BYTES", 64)
}

/// Bytes this process has written so far (WAL frames, checkpoints into the database
/// file, and a little output), from /proc/self/io.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok())
}

/// Name of the thread that does the simulated volunteers' own work.
const VOLUNTEER_THREAD: &str = "bench-volunteer";

/// CPU time so far of the whole process (threads that ended included) and of the
/// volunteer thread (Linux only, from /proc).
fn cpu_time() -> Option<(Duration, Duration)> {
    // utime and stime, in the clock ticks of 10 ms Linux counts them in for /proc, of
    // every thread the process has had.
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    let process = Duration::from_millis((user + system) * 10);
    Some((process, threads_cpu(VOLUNTEER_THREAD)))
}

/// CPU time so far of every live thread called `name`. A thread that ends inside a
/// window takes its time out of the sum, which can only overstate the rest's share.
fn threads_cpu(name: &str) -> Duration {
    threads_named(name).map(|(_, time)| time.cpu).sum()
}

/// Time so far of the newest writer thread (the storage opened last), from
/// /proc/self/task/*/schedstat (on-CPU and run-queue nanoseconds).
fn writer_time() -> Option<ThreadTime> {
    thread_time("starling-writer")
}

/// Time so far of the newest thread called `name`.
fn thread_time(name: &str) -> Option<ThreadTime> {
    threads_named(name)
        .max_by_key(|&(tid, _)| tid)
        .map(|(_, time)| time)
}

/// Each live thread called `name`, with its id and its time so far, from
/// /proc/self/task/*/schedstat (on-CPU and run-queue nanoseconds).
fn threads_named(name: &str) -> impl Iterator<Item = (u64, ThreadTime)> + '_ {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |task| {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim() != name {
                return None;
            }
            let tid = task.file_name().to_str()?.parse::<u64>().ok()?;
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let mut fields = stat
                .split_whitespace()
                .map(|n| n.parse().ok().map(Duration::from_nanos));
            let (Some(Some(cpu)), Some(Some(queued))) = (fields.next(), fields.next()) else {
                return None;
            };
            Some((tid, ThreadTime { cpu, queued }))
        })
}

/// `storage` billing jobs at `price_per_gflop` under a relay key of its own, and a
/// submitter's account holding a million credits.
async fn billed(
    storage: Storage,
    price_per_gflop: MicroCredits,
) -> anyhow::Result<(Storage, starling_relay::ledger::AccountId)> {
    let key = WalletKey::from_seed(rand::random());
    let storage = storage.with_billing(Billing {
        key: key.clone(),
        pricing: Pricing {
            price_per_gflop,
            site_share_ppm: 100_000,
            platform_fee_ppm: 50_000,
        },
    });
    let (account, _) = storage
        .create_account(&key, MicroCredits::from_credits(1_000_000)?, None)
        .await?;
    Ok((storage, account))
}

async fn run(scenario: Scenario, units: usize) -> anyhow::Result<Figures> {
    let output_len = output_bytes()?;
    let dir = bench_dir();
    let mut storage = Storage::open(&dir).await?;
    let mut submitter = None;
    if scenario.billed {
        let (billed, account) = billed(storage, MicroCredits(1_000)).await?;
        storage = billed;
        submitter = Some(account);
    }
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
    storage
        .insert_job(&job(units, scenario.quorum, submitter))
        .await?;
    let meter = Meter::start();
    // Payouts run beside the volunteers as the relay's housekeeping runs them, but every
    // second rather than every five, and once more when the work is done.
    let payouts = scenario.billed.then(|| {
        let storage = storage.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PAYOUT_INTERVAL).await;
                if let Err(e) = storage.pay_out_all().await {
                    return anyhow::Result::<()>::Err(e.into());
                }
            }
        })
    });
    let mut tasks = Vec::new();
    for (&(peer, wallet), &audit_probability) in wallets.iter().zip(&audit_probability) {
        let storage = storage.clone();
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
    if let Some(payouts) = payouts {
        if payouts.is_finished() {
            payouts.await??;
        } else {
            payouts.abort();
        }
        storage.pay_out_all().await?;
        anyhow::ensure!(storage.accruals().await?.is_empty(), "accruals left unpaid");
    }
    let figures = meter.figures(units, latencies);
    drop(storage);
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(settled == units, "{settled} of {units} units settled");
    Ok(figures)
}

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
async fn through_scheduler(units: usize, volunteers: usize) -> anyhow::Result<Figures> {
    let network = TrustedNetwork::start(volunteers).await?;
    let jobs = submit_matmul(&network.scheduler, units, network.account).await?;
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
struct TrustedNetwork {
    dir: std::path::PathBuf,
    storage: Storage,
    scheduler: Scheduler,
    account: starling_relay::ledger::AccountId,
    wallets: Vec<(PeerId, Arc<WalletKey>)>,
    device: VolunteerThread,
    housekeeping: tokio::task::JoinHandle<()>,
}

impl TrustedNetwork {
    async fn start(volunteers: usize) -> anyhow::Result<Self> {
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
            let warm = submit_matmul(&scheduler, volunteers * 12, account).await?;
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
    async fn all_done(&self, jobs: &[JobId]) -> anyhow::Result<Result<(), (JobId, JobState)>> {
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
    async fn finish(self, jobs: &[JobId]) -> anyhow::Result<()> {
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

/// Submits billed m x 8 x 8 matmuls of random inputs, `units` rows in all.
async fn submit_matmul(
    scheduler: &Scheduler,
    units: usize,
    account: starling_relay::ledger::AccountId,
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
                    None,
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

/// The relay's whole path over real WebRTC: the relay's HTTP router answers each
/// volunteer's offer (`/api/v1/rtc/offer`) and serves its data channel as `relay-server`
/// does, and each volunteer speaks the protocol as the browser's loop does (hello with
/// its proof, `Ready`, then for each `Assign` the CPU reference's output as `Result` and
/// `Ready` again). The network is [`TrustedNetwork`]'s. The volunteers, WebRTC stacks
/// included, run on a runtime of their own whose threads are named like the volunteer
/// thread, so their CPU is counted apart from the relay's; both ends' DTLS and SCTP share
/// the machine's cores, as the simulated work does in the scenario before. A lease's
/// latency here is what a volunteer sees: from sending `Ready` to the `Assign` arriving.
async fn over_webrtc(units: usize, volunteers: usize) -> anyhow::Result<Figures> {
    let network = TrustedNetwork::start(volunteers).await?;
    let state = AppState::new(
        network.scheduler.clone(),
        starling_webrtc_native::AnswerConfig {
            bind_ip: [127, 0, 0, 1].into(),
            open_timeout: Duration::from_secs(30),
        },
        Limits::default(),
    );
    let dirs = StaticDirs {
        app: network.dir.join("dist"),
        public: network.dir.join("public"),
    };
    let router = app::router(state, &dirs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let offer_url = format!("http://{}/api/v1/rtc/offer", listener.local_addr()?);
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let cpus = std::env::var("STARLING_BENCH_VOLUNTEER_CPUS").ok();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(VOLUNTEER_THREAD)
        .on_thread_start(move || {
            if let Some(cpus) = &cpus {
                if let Err(e) = pin_this_thread(cpus) {
                    eprintln!("volunteer runtime not pinned to {cpus}: {e}");
                }
            }
        })
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // Every volunteer connects and says hello before the jobs exist, so connecting is
    // not in the measured window.
    let (welcomed_tx, mut welcomed) = tokio::sync::mpsc::channel(volunteers);
    let mut tasks = Vec::new();
    for (_, wallet) in &network.wallets {
        let wallet = wallet.clone();
        let offer_url = offer_url.clone();
        let welcomed = welcomed_tx.clone();
        let stopped = stopped.clone();
        tasks.push(
            runtime
                .spawn(async move { rtc_volunteer(&offer_url, &wallet, welcomed, stopped).await }),
        );
    }
    drop(welcomed_tx);
    for _ in 0..volunteers {
        tokio::time::timeout(Duration::from_secs(60), welcomed.recv())
            .await
            .map_err(|_| anyhow::anyhow!("volunteers took over a minute to connect"))?
            .ok_or_else(|| anyhow::anyhow!("a volunteer failed to connect"))?;
    }
    let jobs = submit_matmul(&network.scheduler, units, network.account).await?;
    let meter = Meter::start();
    while network.all_done(&jobs).await?.is_err() {
        if let Some(ended) = tasks.iter().position(|t| t.is_finished()) {
            let task = tasks.swap_remove(ended);
            task.await??;
            anyhow::bail!("a volunteer stopped before the jobs were done");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let window = meter.end();
    let _ = stop.send(true);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let figures = window.figures(units, latencies);
    server.abort();
    runtime.shutdown_background();
    network.finish(&jobs).await?;
    Ok(figures)
}

/// One volunteer over WebRTC until `stopped` turns true: returns its leases' latencies
/// (`Ready` sent to `Assign` received).
async fn rtc_volunteer(
    offer_url: &str,
    wallet: &WalletKey,
    welcomed: tokio::sync::mpsc::Sender<()>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<Duration>> {
    use starling_protocol::{
        encode_frames, DeviceInfo, Reassembler, ToRelay, ToVolunteer, PROTOCOL_VERSION,
    };
    let mut link = starling_webrtc_native::connect(offer_url).await?;
    let sender = link.sender();
    let send = |message: ToRelay| {
        let sender = &sender;
        async move {
            for frame in encode_frames(&message) {
                sender.send(frame).await?;
            }
            anyhow::Ok(())
        }
    };
    let descriptions = link.descriptions();
    let binding = ChannelBinding::from_descriptions(&descriptions.offer, &descriptions.answer)?;
    let hello = ToRelay::Hello {
        version: PROTOCOL_VERSION,
        client: "bench/0".into(),
        device: DeviceInfo {
            adapter: "CPU".into(),
            backend: "cpu".into(),
            fallback: true,
        },
        wallet: wallet.address(),
        site: None,
        proof: wallet.sign_channel(&binding),
    };
    send(hello).await?;
    let catalog = Catalog::builtin();
    let mut reassembler = Reassembler::new(1 << 20);
    let mut latencies = Vec::new();
    let mut ready_sent = Instant::now();
    loop {
        let frame = tokio::select! {
            frame = link.recv() => frame,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let frame = frame.ok_or_else(|| anyhow::anyhow!("the relay closed the channel"))?;
        let Some(message) = reassembler.push_message(&frame)? else {
            continue;
        };
        match message {
            ToVolunteer::Welcome { .. } => {
                let _ = welcomed.send(()).await;
                ready_sent = Instant::now();
                send(ToRelay::Ready { slots: 1 }).await?;
            }
            ToVolunteer::Assign(assignment) => {
                latencies.push(ready_sent.elapsed());
                let output = catalog
                    .get(&assignment.kernel)?
                    .run_cpu(&assignment.params_json, &assignment.input)?;
                send(ToRelay::Result {
                    lease: assignment.lease,
                    output,
                    elapsed_ms: 0,
                })
                .await?;
                ready_sent = Instant::now();
                send(ToRelay::Ready { slots: 1 }).await?;
            }
            ToVolunteer::Ack {
                accepted, detail, ..
            } => {
                // A replica that came back after its unit settled without it: wasted,
                // not wrong.
                anyhow::ensure!(
                    accepted || detail.contains("already settled"),
                    "an honest result was refused: {detail}"
                );
            }
            ToVolunteer::Receipt(_) => {}
            ToVolunteer::Refused { reason } => anyhow::bail!("refused: {reason}"),
        }
    }
    link.close().await;
    Ok(latencies)
}

/// Pins the calling thread to the CPUs of a Linux CPU list ("2-7", "2,4,6").
fn pin_this_thread(cpus: &str) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let mut set = rustix::thread::CpuSet::new();
        for part in cpus.split(',') {
            let (first, last) = part.split_once('-').unwrap_or((part, part));
            for cpu in first.trim().parse::<usize>()?..=last.trim().parse::<usize>()? {
                anyhow::ensure!(cpu < rustix::thread::CpuSet::MAX_CPU, "no CPU {cpu}");
                set.set(cpu);
            }
        }
        rustix::thread::sched_setaffinity(None, &set)?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    anyhow::bail!("pinning threads is only done on Linux: {cpus}")
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let units = env_count("STARLING_BENCH_UNITS", 20_000)?;
    println!("{units} units per run; one round trip = lease + result (+ judge, + ledger)");
    println!(
        "{:<40} {:>9} {:>11} {:>10} {:>10} {:>9} {:>8} {:>15} {:>8} {:>8} {:>11}",
        "scenario",
        "units/s",
        "results/s",
        "lease p50",
        "lease p99",
        "overhead",
        "vs floor",
        "writer µs/unit",
        "on CPU",
        "queued",
        "KB/unit"
    );
    let only = std::env::var("STARLING_BENCH_ONLY").unwrap_or_default();
    let mut floor = None;
    for scenario in [
        Scenario {
            name: "quorum 1, no billing",
            quorum: 1,
            billed: false,
            workers: WORKERS,
            adaptive: None,
        },
        Scenario {
            name: "quorum 1, billed",
            quorum: 1,
            billed: true,
            workers: WORKERS,
            adaptive: None,
        },
        Scenario {
            name: "quorum 2, billed",
            quorum: 2,
            billed: true,
            workers: WORKERS,
            adaptive: None,
        },
        Scenario {
            name: "adaptive, just trusted, billed",
            quorum: 2,
            billed: true,
            workers: WORKERS,
            adaptive: Some(JUST_TRUSTED),
        },
        Scenario {
            name: "adaptive, long record, billed",
            quorum: 2,
            billed: true,
            workers: WORKERS,
            adaptive: Some(LONG_RECORD),
        },
        Scenario {
            name: "quorum 1, no billing",
            quorum: 1,
            billed: false,
            workers: 4,
            adaptive: None,
        },
    ] {
        if !scenario.name.contains(only.as_str()) {
            continue;
        }
        let f = run(scenario, units).await?;
        let base = *floor.get_or_insert(f.units_per_s);
        let name = format!("{}, {} vol.", scenario.name, scenario.workers);
        print_row(&name, &f, units, base);
    }
    let volunteers = env_count("STARLING_BENCH_VOLUNTEERS", WORKERS)?;
    let name = format!("through the scheduler, {volunteers} vol.");
    if name.contains(only.as_str()) {
        let f = through_scheduler(units, volunteers).await?;
        print_row(&name, &f, units, floor.unwrap_or(f.units_per_s));
        print_cpu(&f, units, "volunteers' simulated work");
    }
    let name = format!("over WebRTC, {volunteers} vol.");
    if name.contains(only.as_str()) {
        let f = over_webrtc(units, volunteers).await?;
        print_row(&name, &f, units, floor.unwrap_or(f.units_per_s));
        print_cpu(&f, units, "volunteers (WebRTC included)");
    }
    if "job data at rest".contains(only.as_str()) {
        for mib in [1, 16, 64] {
            sealing(mib).await?;
        }
    }
    Ok(())
}

/// What sealing a job's data at rest costs (issue 20) beside what storing it costs, for
/// an input of `mib` MiB: a job's input is sealed once when it is submitted and opened
/// once per relay process that leases its units (then cached), its result sealed once
/// when it is merged; nothing is sealed per unit, so the scenarios above do not see it.
async fn sealing(mib: usize) -> anyhow::Result<()> {
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
        let key = keys.create(id)?;
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

/// The relay's CPU per unit beside the volunteers' (`whose` says what theirs covers).
fn print_cpu(f: &Figures, units: usize, whose: &str) {
    if let Some((process, volunteers)) = f.cpu {
        let per_unit = |t: Duration| t.as_secs_f64() * 1e6 / units as f64;
        let relay = per_unit(process.saturating_sub(volunteers));
        println!(
            "  CPU per unit: relay {relay:.0} µs, {whose} {:.0} µs \
             (two cores' worth of the relay's time alone: {:.0} units/s, an estimate)",
            per_unit(volunteers),
            2e6 / relay
        );
    }
}

/// One scenario's line of the table; `floor` is the first scenario's units/s.
fn print_row(name: &str, f: &Figures, units: usize, floor: f64) {
    let window = f.elapsed.as_secs_f64();
    let (writer, busy, queued) = f.writer.map_or(("-".into(), "-".into(), "-".into()), |w| {
        (
            format!("{:.0}", w.cpu.as_secs_f64() * 1e6 / units as f64),
            format!("{:.0}%", w.cpu.as_secs_f64() * 100.0 / window),
            format!("{:.0}%", w.queued.as_secs_f64() * 100.0 / window),
        )
    });
    let written = f.written.map_or("-".to_string(), |bytes| {
        format!("{:.1}", bytes as f64 / 1e3 / units as f64)
    });
    println!(
        "{name:<40} {:>9.0} {:>11.0} {:>8.2}ms {:>8.2}ms {:>8.1}% {:>7.2}x {writer:>15} {busy:>8} {queued:>8} {written:>11}",
        f.units_per_s,
        f.results_per_s,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.overhead * 100.0,
        f.units_per_s / floor
    );
}
