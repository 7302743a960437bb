//! The `scaling efficiency` scenario (issue 26, goal 3): does a job finish N times faster
//! with N volunteers? The same job, on the relay's whole path over real WebRTC, for
//! N = 1, 10, 50 and 100 volunteers whose every unit takes a fixed simulated compute
//! time; efficiency at N is T1 / (N x TN), so 100% is perfect and the issue asks for at
//! least 90% at 100.

use crate::meter::Meter;
use crate::scheduler::{submit_matmul, TrustedNetwork};
use crate::webrtc::{serve, volunteer, volunteer_runtime, Behaviour};
use std::time::{Duration, Instant};

/// The volunteer counts measured, smallest first (the first is the baseline).
pub(crate) const CURVE: [usize; 4] = [1, 10, 50, 100];

/// One point of the curve.
pub(crate) struct Point {
    pub(crate) volunteers: usize,
    /// Submit to the job's last unit settled (its merge included).
    pub(crate) elapsed: Duration,
    /// A lease's latency (asked for to received), each volunteer's first
    /// left out (it waited for the job to be submitted).
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    /// Mean time from submitting the job to a volunteer's first unit.
    pub(crate) first_unit: Duration,
    /// Mean time from a volunteer's last result to the job being done: its idle tail.
    pub(crate) tail: Duration,
    /// Fewest and most leases one volunteer took.
    pub(crate) leases: (usize, usize),
    /// Relay process CPU over the window, less the volunteers' runtime.
    pub(crate) relay_cpu: Option<Duration>,
}

/// Runs the curve: one job of `units` one-row matmul units under an explicit quorum of 1
/// (so that one volunteer can finish it alone, and every N computes the same units
/// once), each unit taking `compute_time` on the volunteer before its result goes.
/// Volunteers connect before the job is submitted, so connecting is not in the time.
/// With `ask_ahead`, each volunteer holds a unit in hand while it computes one.
pub(crate) async fn curve(
    units: usize,
    compute_time: Duration,
    ask_ahead: bool,
) -> anyhow::Result<Vec<Point>> {
    let most = CURVE.iter().copied().max().unwrap_or(1);
    let network = TrustedNetwork::start(most).await?;
    let (base_url, server) = serve(&network).await?;
    let runtime = volunteer_runtime()?;
    let mut points = Vec::new();
    let mut all_jobs = Vec::new();
    let measured = async {
        for volunteers in CURVE {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let (welcomed_tx, mut welcomed) = tokio::sync::mpsc::channel(volunteers);
            let mut tasks = Vec::new();
            for (_, wallet) in network.wallets.iter().take(volunteers) {
                let (wallet, base_url) = (wallet.clone(), base_url.clone());
                let (welcomed, stopped) = (welcomed_tx.clone(), stopped.clone());
                tasks.push(runtime.spawn(async move {
                    volunteer(
                        &base_url,
                        false,
                        &wallet,
                        Behaviour {
                            simulated: Some(compute_time),
                            ask_ahead,
                            source: None,
                            ready_apart: false,
                        },
                        welcomed,
                        stopped,
                    )
                    .await
                }));
            }
            drop(welcomed_tx);
            for _ in 0..volunteers {
                let arrived = tokio::time::timeout(Duration::from_secs(60), welcomed.recv())
                    .await
                    .map_err(|_| anyhow::anyhow!("volunteers took over a minute to connect"))?;
                anyhow::ensure!(arrived.is_some(), "a volunteer failed to connect");
            }
            let meter = Meter::start();
            let started = Instant::now();
            let jobs = submit_matmul(&network.scheduler, units, network.account, Some(1)).await?;
            // Polled finely: at 100 volunteers the whole job is about half a second.
            while network.all_done(&jobs).await?.is_err() {
                if let Some(ended) = tasks.iter().position(|t| t.is_finished()) {
                    let task = tasks.swap_remove(ended);
                    task.await??;
                    anyhow::bail!("a volunteer stopped before the job was done");
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let done = Instant::now();
            let elapsed = done - started;
            let window = meter.end();
            let _ = stop.send(true);
            let mut latencies = Vec::new();
            let (mut first_unit, mut tail) = (Duration::ZERO, Duration::ZERO);
            let mut leases = (usize::MAX, 0);
            for task in tasks {
                let served = task.await??;
                first_unit += served.first_assign.map_or(elapsed, |t| t - started);
                tail += served
                    .last_result
                    .map_or(elapsed, |t| done.saturating_duration_since(t));
                leases.0 = leases.0.min(served.latencies.len());
                leases.1 = leases.1.max(served.latencies.len());
                latencies.extend(served.latencies.into_iter().skip(1));
            }
            let figures = window.figures(units, latencies);
            let n = u32::try_from(volunteers)?;
            points.push(Point {
                volunteers,
                elapsed,
                p50: figures.p50,
                p99: figures.p99,
                first_unit: first_unit / n,
                tail: tail / n,
                leases,
                relay_cpu: figures
                    .cpu
                    .map(|(process, volunteers)| process.saturating_sub(volunteers)),
            });
            all_jobs.extend(jobs);
        }
        anyhow::Ok(())
    }
    .await;
    server.abort();
    runtime.shutdown_background();
    measured?;
    network.finish(&all_jobs).await?;
    Ok(points)
}

/// Prints the curve against its first point, measured in the same run, and each point
/// against the ideal (the units' compute time over N): one volunteer alone leaves the
/// machine idle between units, and on a VM each wake-up from idle costs time that busier
/// points do not pay, which flatters efficiency against it.
pub(crate) fn print(points: &[Point], units: usize, compute_time: Duration, ask_ahead: bool) {
    let Some(base) = points.first() else {
        return;
    };
    let t1 = base.elapsed.as_secs_f64() * base.volunteers as f64;
    println!(
        "scaling efficiency: one job of {units} units, {} ms of simulated compute a unit, \
         over WebRTC{}",
        compute_time.as_millis(),
        if ask_ahead {
            ", each volunteer asking for its next unit while it computes one"
        } else {
            ""
        }
    );
    println!(
        "  {:>5} {:>10} {:>10} {:>9} {:>11} {:>9} {:>10} {:>10} {:>11} {:>9} {:>9} {:>16}",
        "vol.",
        "time",
        "ideal",
        "units/s",
        "efficiency",
        "of ideal",
        "lease p50",
        "lease p99",
        "first unit",
        "tail",
        "leases",
        "relay CPU/unit"
    );
    for p in points {
        let n = p.volunteers as f64;
        let tn = p.elapsed.as_secs_f64();
        let ideal = units as f64 * compute_time.as_secs_f64() / n;
        let cpu = p.relay_cpu.map_or("-".to_string(), |cpu| {
            format!("{:.0} µs", cpu.as_secs_f64() * 1e6 / units as f64)
        });
        let leases = format!("{}-{}", p.leases.0, p.leases.1);
        println!(
            "  {:>5} {:>9.3}s {:>9.3}s {:>9.0} {:>10.1}% {:>8.1}% {:>8.2}ms {:>8.2}ms {:>9.1}ms {:>7.1}ms {leases:>9} {cpu:>16}",
            p.volunteers,
            tn,
            ideal,
            units as f64 / tn,
            t1 / (n * tn) * 100.0,
            ideal / tn * 100.0,
            p.p50.as_secs_f64() * 1e3,
            p.p99.as_secs_f64() * 1e3,
            p.first_unit.as_secs_f64() * 1e3,
            p.tail.as_secs_f64() * 1e3,
        );
    }
}
