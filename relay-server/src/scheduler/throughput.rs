//! The network's recent pace: results returned, units settled and FLOPs computed per
//! second over a sliding window, for the network page and `/metrics`.
//!
//! Kept in memory, not in the database: it describes the last minute of this process,
//! and a restart rightly starts it from zero.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds the rates average over.
pub const WINDOW_SECS: u64 = 60;

/// What happened in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    /// Seconds since the meter started.
    second: u64,
    results: u64,
    units: u64,
    flops: u64,
}

/// Per-second counts of the last [`WINDOW_SECS`] seconds.
#[derive(Debug)]
pub struct Throughput {
    started: Instant,
    buckets: Mutex<VecDeque<Bucket>>,
}

/// Rates over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Seconds averaged over: the window, or the meter's age while it is younger.
    pub window_s: f64,
    /// Results judged (valid, invalid or awaiting replicas) per second.
    pub results_per_s: f64,
    /// Units settled (a quorum agreed) per second.
    pub units_per_s: f64,
    /// GFLOP of computed results per second: the network's aggregate speed.
    pub gflops: f64,
}

impl Default for Throughput {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            buckets: Mutex::new(VecDeque::new()),
        }
    }
}

impl Throughput {
    /// Counts one result of `flops`, and whether it settled its unit.
    pub fn record(&self, flops: u64, settled: bool) {
        self.record_at(self.started.elapsed(), flops, settled);
    }

    fn record_at(&self, at: Duration, flops: u64, settled: bool) {
        let second = at.as_secs();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.back().is_none_or(|b| b.second != second) {
            buckets.push_back(Bucket {
                second,
                ..Bucket::default()
            });
        }
        if let Some(b) = buckets.back_mut() {
            b.results += 1;
            b.units += u64::from(settled);
            b.flops = b.flops.saturating_add(flops);
        }
        while buckets
            .front()
            .is_some_and(|b| b.second + WINDOW_SECS <= second)
        {
            buckets.pop_front();
        }
    }

    /// The rates over the last [`WINDOW_SECS`] seconds.
    pub fn rates(&self) -> Rates {
        self.rates_at(self.started.elapsed())
    }

    fn rates_at(&self, now: Duration) -> Rates {
        let second = now.as_secs();
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (mut results, mut units, mut flops) = (0u64, 0u64, 0u64);
        for b in buckets.iter().filter(|b| b.second + WINDOW_SECS > second) {
            results += b.results;
            units += b.units;
            flops = flops.saturating_add(b.flops);
        }
        // A young relay averages over its age (at least a second), so its first results
        // do not read as a sixtieth of their pace.
        let window_s = now.as_secs_f64().clamp(1.0, WINDOW_SECS as f64);
        Rates {
            window_s,
            results_per_s: results as f64 / window_s,
            units_per_s: units as f64 / window_s,
            gflops: flops as f64 / 1e9 / window_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn rates_average_over_the_window_once_it_is_full() {
        let t = Throughput::default();
        for s in 0..120 {
            // Two results per second, one settling its unit, 1 GFLOP each.
            t.record_at(secs(s as f64 + 0.1), 1_000_000_000, true);
            t.record_at(secs(s as f64 + 0.2), 1_000_000_000, false);
        }
        let r = t.rates_at(secs(120.0));
        assert_eq!(r.window_s, 60.0);
        assert!((r.results_per_s - 2.0).abs() < 0.05, "{r:?}");
        assert!((r.units_per_s - 1.0).abs() < 0.05, "{r:?}");
        assert!((r.gflops - 2.0).abs() < 0.05, "{r:?}");
    }

    #[test]
    fn a_young_meter_averages_over_its_age() {
        let t = Throughput::default();
        for i in 0..10 {
            t.record_at(secs(i as f64 * 0.5), 0, true);
        }
        let r = t.rates_at(secs(5.0));
        assert_eq!(r.window_s, 5.0);
        assert!((r.units_per_s - 2.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn old_work_leaves_the_window() {
        let t = Throughput::default();
        t.record_at(secs(1.0), 5_000_000_000, true);
        assert!(t.rates_at(secs(30.0)).gflops > 0.0);
        let r = t.rates_at(secs(200.0));
        assert_eq!((r.results_per_s, r.units_per_s, r.gflops), (0.0, 0.0, 0.0));
    }
}
