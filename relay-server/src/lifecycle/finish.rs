//! Closing a job: `done` once every unit settled and the merged result is stored, or
//! `failed` (a unit no quorum could settle, too many lost leases or wrong results, a
//! merge that failed). Either way its escrow closes: what its settled units accrued is
//! paid out, then what is left goes back to the submitter
//! ([`refund_due`](super::billing::refund_due)). Payments are announced to the paid
//! volunteers only once the closing transaction committed.
//!
//! Cancelling (`storage/job_queries.rs`) closes the escrow the same way.

/// A job as closing it reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosingJob {
    /// Its state: queued, running, done, failed or cancelled.
    pub state: String,
    /// Its settled units.
    pub units_done: i64,
    /// Its units.
    pub units_total: i64,
}

impl ClosingJob {
    /// Whether it has not ended yet.
    fn open(&self) -> bool {
        matches!(self.state.as_str(), "queued" | "running")
    }
}

/// What closing a job writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// Whether the job takes its new state (with its result or error).
    pub ends: bool,
    /// Whether its open units fail and their leases are voided.
    pub withdraws_units: bool,
    /// Whether its escrow is paid out and refunded.
    pub closes_escrow: bool,
}

/// Finishing `job` with its merged result: only a running job whose units all settled
/// finishes, once; anything else (an unknown job, one finished or failed meanwhile)
/// changes nothing.
pub fn decide_finish(job: Option<&ClosingJob>) -> Close {
    let finishes =
        job.is_some_and(|job| job.state == "running" && job.units_done == job.units_total);
    Close {
        ends: finishes,
        withdraws_units: false,
        closes_escrow: finishes,
    }
}

/// Failing `job`: an open job fails; its open units are withdrawn and its escrow closed
/// whatever its state (both change nothing the second time), so a failure racing the
/// job's end still leaves nothing open and nothing owed.
pub fn decide_fail(job: Option<&ClosingJob>) -> Close {
    Close {
        ends: job.is_some_and(ClosingJob::open),
        withdraws_units: true,
        closes_escrow: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    prop_compose! {
        fn job()(
            state in proptest::sample::select(&["queued", "running", "done", "failed", "cancelled"][..]),
            units_total in 1i64..5,
            missing in 0i64..3,
        ) -> ClosingJob {
            ClosingJob { state: state.to_owned(), units_done: (units_total - missing).max(0), units_total }
        }
    }

    proptest! {
        /// A job ends once: finishing needs every unit settled and a running job; an
        /// ended job neither finishes nor fails again, and its escrow closes only with
        /// the ending (or, for a failure, again to no effect).
        #[test]
        fn a_job_ends_once(job in job()) {
            let finish = decide_finish(Some(&job));
            prop_assert_eq!(finish.ends, job.state == "running" && job.units_done == job.units_total);
            prop_assert_eq!(finish.closes_escrow, finish.ends);
            prop_assert!(!finish.withdraws_units);
            let fail = decide_fail(Some(&job));
            prop_assert_eq!(fail.ends, matches!(job.state.as_str(), "queued" | "running"));
            let ended = ClosingJob { state: if finish.ends { "done".into() } else { job.state.clone() }, ..job };
            prop_assert!(!decide_finish(Some(&ended)).ends || !finish.ends);
        }
    }

    #[test]
    fn an_unknown_job_neither_finishes_nor_fails() {
        assert!(!decide_finish(None).ends);
        assert!(!decide_finish(None).closes_escrow);
        assert!(!decide_fail(None).ends);
    }
}
