//! The relay's own runs of kernels' CPU references, for quorums of wallets without a
//! record (a network's first minutes, or wallets made by the thousand): the only
//! verification that needs no honest volunteer. It costs the relay a unit's computation
//! each, so it runs one at a time under a budget, a share of one core: wallets made by
//! the thousand can make the relay wait, not compute their work for them.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, SemaphorePermit};
// Tokio's clock, which tests can pause.
use tokio::time::Instant;

/// Seconds of CPU the budget may bank, per unit of share: a burst of reference runs (a
/// network's first units) goes through at once, as long as it is short.
const BURST_SECS_PER_SHARE: f64 = 20.0;

/// CPU time for reference runs: `share` of one core on average, banked up to a short
/// burst; runs go one at a time, so the relay never spends more than one core on them.
#[derive(Debug)]
pub struct ReferenceBudget {
    share: f64,
    bank: Mutex<Bank>,
    one_at_a_time: Semaphore,
}

#[derive(Debug)]
struct Bank {
    /// Seconds of CPU available (negative after a run longer than what was banked).
    secs: f64,
    at: Instant,
}

/// Leave to run one reference: report what it took with [`ReferenceBudget::spent`].
pub struct Turn<'a>(#[allow(dead_code)] SemaphorePermit<'a>);

impl ReferenceBudget {
    /// A budget of `share` of one core (0 turns reference runs off).
    pub fn new(share: f64) -> Self {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Self {
            share,
            bank: Mutex::new(Bank {
                secs: share * BURST_SECS_PER_SHARE,
                at: Instant::now(),
            }),
            one_at_a_time: Semaphore::new(1),
        }
    }

    fn bank(&self) -> std::sync::MutexGuard<'_, Bank> {
        self.bank.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// CPU seconds available now, after what accrued since last asked.
    fn available(&self) -> f64 {
        let mut bank = self.bank();
        let now = Instant::now();
        let accrued = now.duration_since(bank.at).as_secs_f64() * self.share;
        bank.secs = (bank.secs + accrued).min(self.share * BURST_SECS_PER_SHARE);
        bank.at = now;
        bank.secs
    }

    /// Waits up to `patience` for the budget to allow a run; `None` if it did not.
    pub async fn turn(&self, patience: Duration) -> Option<Turn<'_>> {
        if self.share <= 0.0 {
            return None;
        }
        let deadline = tokio::time::Instant::now() + patience;
        let permit = tokio::time::timeout_at(deadline, self.one_at_a_time.acquire())
            .await
            .ok()?
            .ok()?;
        loop {
            let available = self.available();
            if available > 0.0 {
                return Some(Turn(permit));
            }
            let refill = Duration::from_secs_f64((-available / self.share).min(60.0) + 0.001);
            let wake = tokio::time::Instant::now() + refill.min(Duration::from_millis(250));
            if wake > deadline {
                return None;
            }
            tokio::time::sleep_until(wake).await;
        }
    }

    /// A run took `took` of CPU.
    pub fn spent(&self, took: Duration) {
        self.available();
        self.bank().secs -= took.as_secs_f64();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn runs_wait_for_their_share_and_give_up_past_their_patience() {
        let budget = ReferenceBudget::new(0.25);
        // The bank holds a burst of 5 s: a 6 s run goes at once, and leaves a debt of 1 s
        // that 0.25 s of CPU per second repays in 4 s.
        let started = tokio::time::Instant::now();
        let turn = budget.turn(Duration::ZERO).await;
        assert!(turn.is_some());
        budget.spent(Duration::from_secs(6));
        drop(turn);
        assert!(budget.turn(Duration::from_secs(1)).await.is_none());
        assert!(budget.turn(Duration::from_secs(30)).await.is_some());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(4) && waited <= Duration::from_millis(4_300),
            "{waited:?}"
        );
        assert!(ReferenceBudget::new(0.0)
            .turn(Duration::from_secs(60))
            .await
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn one_run_at_a_time() {
        let budget = ReferenceBudget::new(1.0);
        let first = budget.turn(Duration::ZERO).await;
        assert!(first.is_some());
        assert!(budget.turn(Duration::from_millis(100)).await.is_none());
        drop(first);
        assert!(budget.turn(Duration::ZERO).await.is_some());
    }
}
