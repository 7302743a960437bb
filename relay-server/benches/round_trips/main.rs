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
//! - the relay's own path through the scheduler (see [`scheduler::through_scheduler`]):
//!   each session's hello proof, Freivalds' check, wallet reads, canaries and payouts
//!   included;
//! - the same over real WebRTC (see [`webrtc::over_transport`]): the relay's HTTP router
//!   answers each volunteer's offer and its sessions serve the data channels, every
//!   message crossing DTLS and SCTP both ways;
//! - the same over the WebSocket fallback (`/api/v1/ws`): one TCP connection a volunteer;
//! - scaling efficiency (see [`scaling::curve`]): one job's time with 1, 10, 50 and 100
//!   volunteers over WebRTC whose units take a fixed simulated compute time;
//! - connected volunteers (see [`connected`]), only when `STARLING_BENCH_ONLY` names it:
//!   500 to 5 000 WebRTC volunteers held by one relay, their memory and CPU.
//!
//! Each volunteer is a task with its own wallet and connection id that leases, answers
//! at once and leases again, so the figures are what the relay sustains, not what
//! volunteers compute. All but the last three scenarios drive storage directly: kernel
//! spot checks and the scheduler's own reads sit on top of them, and the last three add
//! them. Only the last two have a network transport; see docs/ARCHITECTURE.md for what
//! limits the figures.
//!
//! "writer µs/unit" is the CPU time of the storage's writer thread over the run, per unit
//! (Linux only: read from /proc), which says how close the writer is to being the limit;
//! "on CPU" is that time as a share of the run, and "queued" the share the writer was
//! ready to run but waited for a core (the other threads had them);
//! "KB/unit" is what the process wrote per unit (WAL frames and their checkpoints into
//! the database file).
//!
//! In the last three scenarios the volunteers' own work (running the unit on the CPU,
//! and over WebRTC or the WebSocket their whole side of the connection) runs on threads of its own, as it
//! would on their machines, and the bench prints the relay's CPU time per unit (the
//! whole process's, less those threads') beside the volunteers'. On a 2-core machine the
//! two share the cores; to measure the relay on two cores of its own, run the bench
//! under `taskset -c 0,1` on a larger machine with `STARLING_BENCH_VOLUNTEER_CPUS=2-7`
//! (a Linux CPU list), which moves those threads off them.
//!
//! `STARLING_BENCH_UNITS` sets the units per run (default 20 000); `STARLING_BENCH_ONLY`
//! runs only the scenarios whose name contains it (for profiling one);
//! `STARLING_BENCH_VOLUNTEERS` sets how many volunteers the last three scenarios have
//! (default 64); `STARLING_BENCH_OUTPUT_BYTES` the size of each output in the storage
//! scenarios (64); `STARLING_BENCH_VOLUNTEER_CPUS` the CPUs of the last three scenarios'
//! volunteer threads; `STARLING_BENCH_SCALING_UNITS` the units of the scaling job (2 000)
//! and `STARLING_BENCH_UNIT_MS` their simulated compute time (50);
//! `STARLING_BENCH_POSTGRES_QUORUM` the quorum of the PostgreSQL scenarios and their SQLite
//! baseline (1), and `STARLING_BENCH_POSTGRES_VOLUNTEERS` their volunteers (64 and 1 024,
//! one round each). `changes across relays`
//! (PostgreSQL) times how soon one relay hears of a job another stored, with and without
//! LISTEN/NOTIFY.

mod connected;
mod following;
mod meter;
#[path = "../../tests/common/postgres.rs"]
mod postgres;
mod scaling;
mod scheduler;
mod sealing;
mod storage_only;
mod webrtc;

use meter::ThreadTime;
use starling_protocol::{JobId, WalletKey};
use starling_relay::ledger::MicroCredits;
use starling_relay::storage::{Billing, NewJob, Pricing, Storage};
use std::time::Duration;

/// Concurrent volunteers (each its own wallet and connection).
const WORKERS: usize = 64;

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
    /// CPU time of the PostgreSQL server's processes over the window, where it ran on one.
    database: Option<Duration>,
    /// The same by what the processes do (connections, walwriter, autovacuum), costliest
    /// first.
    database_by_role: Vec<(String, Duration)>,
    /// The writers' round trips to PostgreSQL over the window (0 on SQLite).
    round_trips: u64,
    /// How long the writers held PostgreSQL's write turn over the window, all relays
    /// together (zero on SQLite): alone, and shared (judging results and drawing leases,
    /// which relays do at once).
    in_turn: (Duration, Duration),
    /// How long storing the job took (its units with it), before the measured window.
    job_stored_in: Duration,
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
        idempotency: None,
    }
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

/// Billing at `price_per_gflop` under `key`, with the relay's default shares.
fn billing(key: &WalletKey, price_per_gflop: MicroCredits) -> Billing {
    Billing {
        key: key.clone(),
        pricing: Pricing {
            price_per_gflop,
            site_share_ppm: 100_000,
            platform_fee_ppm: 50_000,
        },
    }
}

/// `storage` billing jobs at `price_per_gflop` under a relay key of its own, and a
/// submitter's account holding a million credits.
async fn billed(
    storage: Storage,
    price_per_gflop: MicroCredits,
) -> anyhow::Result<(Storage, starling_relay::ledger::AccountId)> {
    let key = WalletKey::from_seed(rand::random());
    let storage = storage.with_billing(billing(&key, price_per_gflop));
    let (account, _) = storage
        .create_account(&key, MicroCredits::from_credits(1_000_000)?, None)
        .await?;
    Ok((storage, account))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // The `connected volunteers` scenario runs its volunteers in copies of this binary.
    if let Ok(spec) = std::env::var(connected::SWARM) {
        return connected::swarm(&spec).await;
    }
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
        let f = storage_only::run(scenario, units, &storage_only::Engine::Sqlite).await?;
        let base = *floor.get_or_insert(f.units_per_s);
        let name = format!("{}, {} vol.", scenario.name, scenario.workers);
        print_row(&name, &f, units, base);
    }
    for workers in postgres_volunteers()? {
        postgres_scenarios(units, &only, floor, workers).await?;
    }
    let volunteers = env_count("STARLING_BENCH_VOLUNTEERS", WORKERS)?;
    let name = format!("through the scheduler, {volunteers} vol.");
    if name.contains(only.as_str()) {
        let f = scheduler::through_scheduler(units, volunteers).await?;
        print_row(&name, &f, units, floor.unwrap_or(f.units_per_s));
        print_cpu(&f, units, "volunteers' simulated work");
    }
    // Each transport twice: a result that asks for the next unit (two messages a unit),
    // then a `Ready` apart as in protocol v5 (four), the baseline in the same run.
    for (transport, websocket) in [("WebRTC", false), ("the WebSocket", true)] {
        for (how, ready_apart) in [("", false), (", Ready apart", true)] {
            let name = format!("over {transport}, {volunteers} vol.{how}");
            if name.contains(only.as_str()) {
                let f = webrtc::over_transport(units, volunteers, websocket, ready_apart).await?;
                print_row(&name, &f, units, floor.unwrap_or(f.units_per_s));
                print_cpu(&f, units, &format!("volunteers ({transport} included)"));
            }
        }
    }
    if "scaling efficiency".contains(only.as_str()) {
        let units = env_count("STARLING_BENCH_SCALING_UNITS", 2_000)?;
        let compute_time = Duration::from_millis(env_count("STARLING_BENCH_UNIT_MS", 50)? as u64);
        for ask_ahead in [false, true] {
            let points = scaling::curve(units, compute_time, ask_ahead).await?;
            scaling::print(&points, units, compute_time, ask_ahead);
        }
    }
    // Only when asked for by name: thousands of peers need descriptors and memory.
    if !only.is_empty() && "connected volunteers".contains(only.as_str()) {
        connected::run().await?;
    }
    if "changes across relays".contains(only.as_str()) {
        following::changes_across_relays().await?;
    }
    if "job data at rest".contains(only.as_str()) {
        for mib in [1, 16, 64] {
            sealing::sealing(mib).await?;
        }
    }
    Ok(())
}

/// The volunteers of each round of the PostgreSQL scenarios:
/// `STARLING_BENCH_POSTGRES_VOLUNTEERS`, a comma-separated list, else 64 and 1 024. Both by
/// default: a relay's writes bound anything only when many volunteers are connected,
/// whose requests queue while a group is written (more of them make larger groups), and
/// few volunteers make small groups, each paying a group's statements.
fn postgres_volunteers() -> anyhow::Result<Vec<usize>> {
    let Ok(list) = std::env::var("STARLING_BENCH_POSTGRES_VOLUNTEERS") else {
        return Ok(vec![WORKERS, 1_024]);
    };
    list.split(',')
        .map(|n| {
            n.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("STARLING_BENCH_POSTGRES_VOLUNTEERS={list:?}: {e}"))
        })
        .collect()
}

/// The billed quorum-1 scenario on SQLite, then on a PostgreSQL server of the bench's
/// own (Debian's package, as the tests start it) with one relay and with two relays
/// sharing it, with each side's CPU per unit and what they project for relays on
/// machines of their own. Skipped where no PostgreSQL is installed.
async fn postgres_scenarios(
    units: usize,
    only: &str,
    floor: Option<f64>,
    workers: usize,
) -> anyhow::Result<()> {
    // Quorum 1 by default: the billed case a network of trusted wallets mostly runs.
    let quorum = u32::try_from(env_count("STARLING_BENCH_POSTGRES_QUORUM", 1)?)?;
    let scenario = Scenario {
        name: "billed",
        quorum,
        billed: true,
        workers,
        adaptive: None,
    };
    let names = [
        "SQLite",
        "PostgreSQL, 1 relay, each write waited for",
        "PostgreSQL, 1 relay",
        "PostgreSQL, 2 relays",
    ]
    .map(|engine| format!("quorum {quorum}, billed, {engine}"));
    let names = names.each_ref().map(String::as_str);
    if !names.iter().any(|n| n.contains(only)) {
        return Ok(());
    }
    let server = match postgres::Postgres::shared() {
        Ok(server) => server,
        Err(e) => {
            println!("PostgreSQL scenarios skipped: {e:#}");
            return Ok(());
        }
    };
    let sqlite = storage_only::run(scenario, units, &storage_only::Engine::Sqlite).await?;
    let base = floor.unwrap_or(sqlite.units_per_s);
    print_row(
        &format!("{}, {} vol.", names[0], workers),
        &sqlite,
        units,
        base,
    );
    print_relay_cpu(&sqlite, units, None);
    print_job_stored(&sqlite, units, None);
    // Pipelining off first: the baseline for the writes sent with the next read.
    for (name, relays, pipelined) in [
        (names[1], 1, false),
        (names[2], 1, true),
        (names[3], 2, true),
    ] {
        if !name.contains(only) {
            continue;
        }
        let url = server.database()?;
        let engine = storage_only::Engine::Postgres {
            url: url.clone(),
            relays,
            pipelined,
        };
        postgres::reset_statements(server)?;
        let f = storage_only::run(scenario, units, &engine).await?;
        let database = f.database;
        print_row(&format!("{name}, {workers} vol."), &f, units, base);
        println!(
            "  {:.2}x SQLite's units/s (same run)",
            f.units_per_s / sqlite.units_per_s
        );
        print_relay_cpu(&f, units, database);
        print_job_stored(&f, units, Some(&sqlite));
        println!(
            "  writers' round trips to the server: {:.2} a unit",
            f.round_trips as f64 / units as f64
        );
        println!(
            "  where the server's time went (ms executing, ms planning, calls, statement; all statements: {}):",
            postgres::statements_total(server)?.trim()
        );
        for line in postgres::top_statements(server, 10)?.lines() {
            println!("    {line}");
        }
        let per_unit = |t: &Duration| t.as_secs_f64() * 1e6 / units as f64;
        println!(
            "  the server's CPU per unit by process: {}",
            f.database_by_role
                .iter()
                .map(|(role, t)| format!("{role} {:.0} µs", per_unit(t)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  rows changed (table | inserted | updated | of them HOT | deleted | autovacuums):"
        );
        for line in postgres::table_churn(&url)?.lines() {
            println!("    {line}");
        }
        println!(
            "  deadlocks the server broke: {}",
            postgres::deadlocks(&url)?.trim()
        );
    }
    Ok(())
}

/// The relay process's and (where measured) the database server's CPU per unit, and
/// what they project: relays of 2 cores each, one database server of 16, and the groups
/// that hold the write turn alone (`storage/writer.rs`): however many relays and cores,
/// those run one after another, so their time per unit bounds them all together. Groups
/// that share the turn (results and leases) run at once, bounded by the database's CPU
/// and the rows they lock.
fn print_relay_cpu(f: &Figures, units: usize, database: Option<Duration>) {
    let per_unit = |t: Duration| t.as_secs_f64() * 1e6 / units as f64;
    let Some((process, _)) = f.cpu else {
        return;
    };
    let relay = per_unit(process);
    match database {
        None => println!("  CPU per unit: relay process {relay:.0} µs"),
        Some(db) => {
            let db = per_unit(db);
            let (alone, shared) = (per_unit(f.in_turn.0), per_unit(f.in_turn.1));
            println!(
                "  CPU per unit: relay process(es) {relay:.0} µs, PostgreSQL {db:.0} µs; \
                 the write turn held alone {alone:.1} µs a unit, shared {shared:.0} µs"
            );
            for relays in [1, 2, 4, 8] {
                let by_relays = f64::from(relays) * 2e6 / relay;
                let by_database = 16e6 / db;
                let by_turn = 1e6 / alone.max(f64::MIN_POSITIVE);
                println!(
                    "    {relays} relays of 2 cores on a 16-core database: {:.0} units/s \
                     (relays alone {by_relays:.0}, database's CPU alone {by_database:.0}, \
                     the turn held alone {by_turn:.0})",
                    by_relays.min(by_database).min(by_turn)
                );
            }
        }
    }
}

/// How long the job took to store, against `base`'s (SQLite's, in the same run).
fn print_job_stored(f: &Figures, units: usize, base: Option<&Figures>) {
    let seconds = f.job_stored_in.as_secs_f64();
    let against = base.map_or(String::new(), |base| {
        let ratio = seconds / base.job_stored_in.as_secs_f64().max(f64::MIN_POSITIVE);
        format!(", {ratio:.1}x SQLite's")
    });
    println!(
        "  the job of {units} units stored in {:.1} ms ({:.1} µs a unit{against})",
        seconds * 1e3,
        seconds * 1e6 / units as f64
    );
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
