//! The `connected volunteers` scenario (issue 26, goal 2): how many WebRTC volunteers one
//! relay holds, and what each costs it. The relay (its HTTP router, sessions and
//! scheduler on SQLite, as in the `over WebRTC` scenario) runs in this process; the
//! volunteers run in child processes of this same bench binary (a "swarm", started with
//! `STARLING_BENCH_SWARM`), several thousand native WebRTC peers each, so that this
//! process's memory and CPU are the relay's alone. Each volunteer posts its offer from a
//! loopback address of its own (127.1.x.y), as volunteers behind their own addresses do,
//! so the relay's per-address caps see one volunteer each; at most 64 offers are in
//! flight at once, under the relay's cap of 256 pending peers.
//!
//! For each step of N connected volunteers (500, 1 000, 2 000, 5 000, reached by adding
//! a swarm per step): the time to connect the step's new volunteers (offer to welcome),
//! the relay's RSS over its RSS before any volunteer connected, per volunteer; the
//! relay's CPU over 10 s idle (every volunteer connected and asking for work, no job);
//! then a job of 5 N one-row units under an explicit quorum of 1, each taking its
//! volunteer 2 s (a timer), so the volunteers ask for N / 2 units a second: the units/s
//! the relay settled and its CPU meanwhile.

use crate::scheduler::{submit_matmul, TrustedNetwork};
use crate::webrtc::{serve, volunteer, Behaviour};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Volunteers connected at each step, unless `STARLING_BENCH_CONNECTED` lists others
/// ("500,1000").
const STEPS: [usize; 4] = [500, 1_000, 2_000, 5_000];

/// Environment variable that makes this binary a swarm: `URL COUNT FIRST`.
pub(crate) const SWARM: &str = "STARLING_BENCH_SWARM";

/// Offers a swarm has in flight at once.
const CONNECTING_AT_ONCE: usize = 64;

/// Each volunteer's simulated compute time per unit.
const COMPUTE_TIME: Duration = Duration::from_secs(2);

/// How long the idle CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(10);

/// Units per volunteer in the working phase.
const UNITS_EACH: usize = 5;

/// The loopback address volunteer `index` signals from: 127.1.x.y, y never 0.
fn source(index: usize) -> IpAddr {
    let x = (index / 250) as u8;
    let y = (index % 250) as u8 + 1;
    IpAddr::V4(Ipv4Addr::new(127, 1, x, y))
}

/// Runs as a swarm when `STARLING_BENCH_SWARM` says so: `COUNT` volunteers numbered from
/// `FIRST`, against the relay at `URL`, until killed. Prints one line once all are
/// welcomed (`welcomed COUNT in MS ms`).
pub(crate) async fn swarm(spec: &str) -> anyhow::Result<()> {
    let mut parts = spec.split_whitespace();
    let (Some(url), Some(count), Some(first)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("{SWARM}={spec:?}: expected URL COUNT FIRST");
    };
    let (count, first): (usize, usize) = (count.parse()?, first.parse()?);
    // The volunteers' signaling clients are reqwest on rustls without a provider of its
    // own: the process's default must be set first (ring, as the relay's).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let (welcomed_tx, mut welcomed) = tokio::sync::mpsc::channel(count.max(1));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut arrived = 0;
    for index in first..first + count {
        // Throttled by welcomes: a new offer only while fewer than the cap are pending.
        while tasks.len() - arrived >= CONNECTING_AT_ONCE {
            match welcomed.recv().await {
                Some(()) => arrived += 1,
                None => anyhow::bail!("every volunteer ended"),
            }
        }
        let wallet = starling_protocol::WalletKey::from_seed(rand::random());
        let (url, welcomed, stopped) = (url.to_owned(), welcomed_tx.clone(), stopped.clone());
        tasks.spawn(async move {
            volunteer(
                &url,
                false,
                &wallet,
                Behaviour {
                    simulated: Some(COMPUTE_TIME),
                    ask_ahead: false,
                    source: Some(source(index)),
                    ready_apart: false,
                },
                welcomed,
                stopped,
            )
            .await
        });
    }
    drop(welcomed_tx);
    while arrived < count {
        if welcomed.recv().await.is_none() {
            break;
        }
        arrived += 1;
    }
    println!("welcomed {arrived} in {} ms", started.elapsed().as_millis());
    // Volunteers that end (a refused result, a lost channel) are reported, not fatal:
    // the parent sees the relay's side of it.
    while let Some(ended) = tasks.join_next().await {
        match ended {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("swarm volunteer ended: {e:#}"),
            Err(e) => eprintln!("swarm volunteer panicked: {e}"),
        }
    }
    Ok(())
}

/// One step's figures.
struct Step {
    volunteers: usize,
    connect: Duration,
    added: usize,
    rss_each_kb: f64,
    idle_cpu: f64,
    units_per_s: f64,
    asked_per_s: f64,
    busy_cpu: f64,
}

/// The relay's resident memory now, in KiB (Linux: /proc/self/status).
fn rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/self/status"))
}

/// Share of one core this process used over `window` measured from `before`.
fn cpu_share(before: Duration, window: Duration) -> anyhow::Result<f64> {
    let (now, _) = crate::meter::cpu_time().ok_or_else(|| anyhow::anyhow!("no /proc"))?;
    Ok(now.saturating_sub(before).as_secs_f64() / window.as_secs_f64())
}

/// Runs the steps and prints them.
pub(crate) async fn run() -> anyhow::Result<()> {
    let network = TrustedNetwork::start(0).await?;
    let (base_url, server) = serve(&network).await?;
    let exe = std::env::current_exe()?;
    let mut swarms = Vec::new();
    let mut all_jobs = Vec::new();
    let base_rss = rss_kb()?;
    println!(
        "connected volunteers: relay RSS {:.0} MB before any; each volunteer computes a unit \
         every {} s when there is work",
        base_rss as f64 / 1024.0,
        COMPUTE_TIME.as_secs()
    );
    let steps = match std::env::var("STARLING_BENCH_CONNECTED") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("STARLING_BENCH_CONNECTED={list:?}: {e}"))?,
        Err(_) => STEPS.to_vec(),
    };
    anyhow::ensure!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "the steps must grow: {steps:?}"
    );
    let measured = async {
        let mut connected = 0;
        for volunteers in steps {
            let added = volunteers - connected;
            let mut swarm = tokio::process::Command::new(&exe)
                .env(SWARM, format!("{base_url} {added} {connected}"))
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdout = swarm
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("no swarm stdout"))?;
            swarms.push(swarm);
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let started = Instant::now();
            let line = tokio::time::timeout(Duration::from_secs(600), lines.next_line())
                .await
                .map_err(|_| anyhow::anyhow!("{added} volunteers took over 10 minutes"))??
                .ok_or_else(|| {
                    anyhow::anyhow!("the swarm ended before its volunteers connected")
                })?;
            let connect = started.elapsed();
            anyhow::ensure!(
                line.starts_with(&format!("welcomed {added} in ")),
                "the swarm said {line:?}"
            );
            connected = volunteers;
            // Idle: every volunteer connected and asking, no work.
            let (before, _) =
                crate::meter::cpu_time().ok_or_else(|| anyhow::anyhow!("no /proc"))?;
            tokio::time::sleep(IDLE_WINDOW).await;
            let idle_cpu = cpu_share(before, IDLE_WINDOW)?;
            let rss = rss_kb()?;
            // Working: each volunteer asks for a unit every 2 s.
            let units = volunteers * UNITS_EACH;
            let (before, _) =
                crate::meter::cpu_time().ok_or_else(|| anyhow::anyhow!("no /proc"))?;
            let started = Instant::now();
            let jobs = submit_matmul(&network.scheduler, units, network.account, Some(1)).await?;
            let deadline = started + Duration::from_secs(600);
            while network.all_done(&jobs).await?.is_err() {
                anyhow::ensure!(Instant::now() < deadline, "the job took over 10 minutes");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let window = started.elapsed();
            let busy_cpu = cpu_share(before, window)?;
            all_jobs.extend(jobs);
            let step = Step {
                volunteers,
                connect,
                added,
                rss_each_kb: rss.saturating_sub(base_rss) as f64 / volunteers as f64,
                idle_cpu,
                units_per_s: units as f64 / window.as_secs_f64(),
                asked_per_s: volunteers as f64 / COMPUTE_TIME.as_secs_f64(),
                busy_cpu,
            };
            print_step(&step, rss);
        }
        anyhow::Ok(())
    }
    .await;
    for mut swarm in swarms {
        let _ = swarm.kill().await;
    }
    server.abort();
    measured?;
    network.finish(&all_jobs).await?;
    Ok(())
}

fn print_step(s: &Step, rss_kb: u64) {
    println!(
        "  {:>6} connected: +{} in {:.1} s ({:.0}/s); relay RSS {:.0} MB, {:.0} KB a volunteer; \
         CPU idle {:.1}% of a core; working: {:.0} units/s of {:.0} asked ({:.0}%), CPU {:.0}%",
        s.volunteers,
        s.added,
        s.connect.as_secs_f64(),
        s.added as f64 / s.connect.as_secs_f64(),
        rss_kb as f64 / 1024.0,
        s.rss_each_kb,
        s.idle_cpu * 100.0,
        s.units_per_s,
        s.asked_per_s,
        s.units_per_s / s.asked_per_s * 100.0,
        s.busy_cpu * 100.0,
    );
}
