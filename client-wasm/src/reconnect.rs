//! When to try the relay again after a connection is lost or a try fails: the policy the
//! page's and the native volunteer's reconnect loops share, whatever the transport.
//!
//! The adversary is an outage seen by 10,000 volunteers at once: they all lose their
//! connection within the same second, and whatever they do next lands on a relay that is
//! coming back. So waits double from [`FIRST_WAIT_MS`] to [`MAX_WAIT_MS`], each drawn at
//! random between half and all of the step ("equal jitter"): never a tight loop, the
//! crowd spread over the step instead of arriving in waves, and at most one try per
//! 15 s per volunteer during a long outage. A session that did work starts the count
//! again, so the next drop is retried within a second; a relay that takes the hello and
//! dies at once does not.

/// The first wait's step: the first retry comes 0.25 to 0.5 s after a loss.
pub const FIRST_WAIT_MS: f64 = 500.0;
/// The longest step: during a long outage, one try every 15 to 30 s.
pub const MAX_WAIT_MS: f64 = 30_000.0;
/// How long one try to connect may take before it counts as failed (a relay that takes
/// the request but never answers, a network that swallows packets).
pub const CONNECT_TIMEOUT_MS: u32 = 30_000;
/// A session welcomed this long ago was steady even if no work came (an idle network).
pub const STEADY_AFTER_MS: f64 = 30_000.0;

/// Counts failed tries since the last steady session and says how long to wait.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// No failure yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Which try comes next since the last steady session (1 for the first retry).
    pub fn attempt(&self) -> u32 {
        self.failures
    }

    /// Counts one more failure and returns how long to wait before the next try, given
    /// `unit`, a uniform random number in [0, 1) (from the platform's generator).
    pub fn next_wait_ms(&mut self, unit: f64) -> u32 {
        let doublings = self.failures.min(16) as i32;
        self.failures = self.failures.saturating_add(1);
        let step = (FIRST_WAIT_MS * 2f64.powi(doublings)).min(MAX_WAIT_MS);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        (step * (0.5 + 0.5 * unit)).round() as u32
    }

    /// A session ended: if it was steady (see [`steady`]), the count starts again.
    pub fn session_ended(&mut self, was_steady: bool) {
        if was_steady {
            self.failures = 0;
        }
    }
}

/// Whether a session counts as having worked: it computed a unit, or it stayed welcomed
/// for [`STEADY_AFTER_MS`]. `welcomed_for_ms` is `None` when the relay never welcomed it.
pub fn steady(welcomed_for_ms: Option<f64>, units_computed: u64) -> bool {
    units_computed > 0 || welcomed_for_ms.is_some_and(|ms| ms >= STEADY_AFTER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn waits_double_from_half_a_second_to_thirty() {
        let mut slowest = Backoff::new();
        let waits: Vec<u32> = (0..10).map(|_| slowest.next_wait_ms(1.0)).collect();
        assert_eq!(
            waits,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]
        );
        let mut fastest = Backoff::new();
        assert_eq!(fastest.next_wait_ms(0.0), 250);
        assert_eq!(fastest.attempt(), 1);
    }

    #[test]
    fn a_steady_session_starts_the_count_again_and_a_brief_one_does_not() {
        let mut backoff = Backoff::new();
        for _ in 0..6 {
            backoff.next_wait_ms(0.5);
        }
        // A relay that welcomes and drops at once is still backed off from.
        backoff.session_ended(steady(Some(200.0), 0));
        assert!(backoff.next_wait_ms(0.0) >= 15_000);
        backoff.session_ended(steady(Some(200.0), 1));
        assert_eq!(backoff.attempt(), 0);
        assert!(backoff.next_wait_ms(1.0) <= 500);
        backoff.session_ended(steady(Some(STEADY_AFTER_MS), 0));
        assert_eq!(backoff.attempt(), 0);
        assert!(!steady(None, 0));
    }

    proptest! {
        /// However many failures and whatever the random draws (even out of range or NaN
        /// from a broken generator), a wait is at least half its step and never beyond
        /// the cap: no tight loop, no wait past 30 s.
        #[test]
        fn every_wait_is_bounded(draws in proptest::collection::vec(prop_oneof![
            any::<f64>(), 0.0f64..1.0
        ], 1..80)) {
            let mut backoff = Backoff::new();
            for (failures, unit) in draws.into_iter().enumerate() {
                let step = (FIRST_WAIT_MS * 2f64.powi(failures.min(16) as i32)).min(MAX_WAIT_MS);
                let wait = f64::from(backoff.next_wait_ms(unit));
                prop_assert!(wait >= (step / 2.0).floor() && wait <= step, "{wait} for step {step}");
            }
        }

        /// 10,000 volunteers losing the relay at the same instant: their tries spread
        /// over each step instead of landing together. No 25 ms window of the first retry
        /// (a tenth of its spread) holds more than 13% of them.
        #[test]
        fn a_crowd_spreads_its_first_retries(seed in any::<u64>()) {
            let mut state = seed | 1;
            let mut windows = [0u32; 11];
            for _ in 0..10_000 {
                // xorshift: a deterministic stand-in for each page's Math.random().
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
                let wait = Backoff::new().next_wait_ms(unit);
                windows[((wait - 250) / 25).min(10) as usize] += 1;
            }
            prop_assert!(windows.iter().all(|&n| n <= 1_300), "{windows:?}");
        }
    }
}
