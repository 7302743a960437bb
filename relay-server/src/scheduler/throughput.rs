//! The network's recent pace: results returned, units settled and FLOPs computed per
//! second over a sliding window, for the network page and `/metrics`; and the same
//! minute by minute over the last hour, for the network page's chart.
//!
//! Kept in memory, not in the database: it describes the last minute of this process,
//! and a restart rightly starts it from zero.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seconds the rates average over.
pub const WINDOW_SECS: u64 = 60;

/// Minutes the history keeps: one counter per minute, so its cost is fixed whatever the
/// load.
pub const HISTORY_MINUTES: u64 = 60;

/// What happened in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct MinuteBucket {
    /// Minutes since the meter started.
    minute: u64,
    units: u64,
    flops: u64,
}

/// One minute of the history, as [`Throughput::history`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinuteRates {
    /// Whole minutes since the minute began: 0 for the current one.
    pub minutes_ago: u32,
    /// Seconds of the minute that have passed.
    pub seconds: f64,
    /// Units settled in it.
    pub units: u64,
    /// Units settled per second over `seconds`.
    pub units_per_s: f64,
    /// GFLOP of results per second over `seconds`.
    pub gflops: f64,
}

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
    minutes: Mutex<VecDeque<MinuteBucket>>,
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
            minutes: Mutex::new(VecDeque::new()),
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
        drop(buckets);
        let minute = second / 60;
        let mut minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        if minutes.back().is_none_or(|m| m.minute != minute) {
            minutes.push_back(MinuteBucket {
                minute,
                ..MinuteBucket::default()
            });
        }
        if let Some(m) = minutes.back_mut() {
            m.units += u64::from(settled);
            m.flops = m.flops.saturating_add(flops);
        }
        while minutes
            .front()
            .is_some_and(|m| m.minute + HISTORY_MINUTES <= minute)
        {
            minutes.pop_front();
        }
    }

    /// The last [`HISTORY_MINUTES`] minutes (fewer while the meter is younger), oldest
    /// first, the current partial minute last; minutes without work read as zeros.
    pub fn history(&self) -> Vec<MinuteRates> {
        self.history_at(self.started.elapsed())
    }

    fn history_at(&self, now: Duration) -> Vec<MinuteRates> {
        let current = now.as_secs() / 60;
        let first = current.saturating_sub(HISTORY_MINUTES - 1);
        let minutes = self.minutes.lock().unwrap_or_else(|p| p.into_inner());
        (first..=current)
            .map(|minute| {
                let bucket = minutes.iter().find(|m| m.minute == minute);
                let (units, flops) = bucket.map_or((0, 0), |m| (m.units, m.flops));
                // The current minute averages over its elapsed part (at least a second),
                // so it does not read as a fraction of its pace.
                let seconds = if minute == current {
                    (now.as_secs_f64() - (minute * 60) as f64).clamp(1.0, 60.0)
                } else {
                    60.0
                };
                MinuteRates {
                    minutes_ago: u32::try_from(current - minute).unwrap_or(u32::MAX),
                    seconds,
                    units,
                    units_per_s: units as f64 / seconds,
                    gflops: flops as f64 / 1e9 / seconds,
                }
            })
            .collect()
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
    fn history_is_one_entry_per_minute_for_the_last_hour_at_most() {
        let t = Throughput::default();
        // Two hours of one settled 6 GFLOP unit every 10 s.
        for s in (0..7_200).step_by(10) {
            t.record_at(secs(s as f64), 6_000_000_000, true);
        }
        let h = t.history_at(secs(7_230.0));
        assert_eq!(h.len(), HISTORY_MINUTES as usize);
        assert_eq!(h.first().map(|m| m.minutes_ago), Some(59));
        assert_eq!(h.last().map(|m| m.minutes_ago), Some(0));
        // A full minute of that pace: 6 units, 0.1 units/s, 0.6 GFLOP/s.
        let full = &h[HISTORY_MINUTES as usize - 2];
        assert_eq!((full.seconds, full.units), (60.0, 6));
        assert!((full.units_per_s - 0.1).abs() < 1e-9, "{full:?}");
        assert!((full.gflops - 0.6).abs() < 1e-9, "{full:?}");
        // The last minute's work stopped at 7,200 s; 30 s of the minute passed.
        let now = h[HISTORY_MINUTES as usize - 1];
        assert_eq!((now.seconds, now.units), (30.0, 0));
        // The buckets kept stay bounded however long the meter runs.
        assert!(t.minutes.lock().map(|m| m.len()).unwrap_or(0) <= HISTORY_MINUTES as usize);
    }

    #[test]
    fn a_young_history_has_its_minutes_and_idle_ones_read_zero() {
        let t = Throughput::default();
        t.record_at(secs(5.0), 3_000_000_000, true);
        let h = t.history_at(secs(150.0));
        assert_eq!(
            h.iter().map(|m| m.minutes_ago).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        assert_eq!(h[0].units, 1);
        assert!((h[0].gflops - 0.05).abs() < 1e-9, "{:?}", h[0]);
        assert_eq!((h[1].units, h[1].gflops), (0, 0.0));
        assert_eq!(h[2].seconds, 30.0);
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
