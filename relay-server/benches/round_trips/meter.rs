//! The CPU meter: what a scenario's measured window costs (time, the storage writer's
//! CPU and run-queue wait, the process's CPU less the simulated volunteers', bytes
//! written), read from /proc on Linux; and the pinning of the volunteers' threads.

use crate::Figures;
use std::time::{Duration, Instant};

/// A thread's time so far: on a CPU, and runnable but waiting for one.
#[derive(Clone, Copy)]
pub(crate) struct ThreadTime {
    pub(crate) cpu: Duration,
    pub(crate) queued: Duration,
}

impl ThreadTime {
    fn since(self, before: Self) -> Self {
        Self {
            cpu: self.cpu.saturating_sub(before.cpu),
            queued: self.queued.saturating_sub(before.queued),
        }
    }
}

/// What a scenario's measured window costs: time, the writer thread's CPU, bytes written.
pub(crate) struct Meter {
    started: Instant,
    writer: Option<ThreadTime>,
    cpu: Option<(Duration, Duration)>,
    written: Option<u64>,
}

impl Meter {
    pub(crate) fn start() -> Self {
        Self {
            writer: writer_time(),
            cpu: cpu_time(),
            written: written_bytes(),
            started: Instant::now(),
        }
    }

    /// The figures of `units` settled with one lease per entry of `latencies`.
    pub(crate) fn figures(self, units: usize, latencies: Vec<Duration>) -> Figures {
        self.end().figures(units, latencies)
    }

    /// Ends the window now, for figures whose latencies are gathered after it.
    pub(crate) fn end(self) -> Window {
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
pub(crate) struct Window {
    elapsed: Duration,
    writer: Option<ThreadTime>,
    cpu: Option<(Duration, Duration)>,
    written: Option<u64>,
}

impl Window {
    /// The figures of `units` settled with one lease per entry of `latencies`.
    pub(crate) fn figures(self, units: usize, mut latencies: Vec<Duration>) -> Figures {
        let elapsed = self.elapsed.as_secs_f64();
        let results = latencies.len();
        latencies.sort();
        Figures {
            database: None,
            database_by_role: Vec::new(),
            round_trips: 0,
            in_turn: (Duration::ZERO, Duration::ZERO),
            job_stored_in: Duration::ZERO,
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

/// Bytes this process has written so far (WAL frames, checkpoints into the database
/// file, and a little output), from /proc/self/io.
fn written_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar: ")?.trim().parse().ok())
}

/// Name of the thread that does the simulated volunteers' own work.
pub(crate) const VOLUNTEER_THREAD: &str = "bench-volunteer";

/// CPU time so far of the whole process (threads that ended included) and of the
/// volunteer thread (Linux only, from /proc).
pub(crate) fn cpu_time() -> Option<(Duration, Duration)> {
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

/// Pins the calling thread to the CPUs of a Linux CPU list ("2-7", "2,4,6").
pub(crate) fn pin_this_thread(cpus: &str) -> anyhow::Result<()> {
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
