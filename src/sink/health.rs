//! What a sink's runner has been doing, shared with the status snapshot
//! and the metrics endpoint.
//!
//! These figures describe this process, not the data: how often delivery
//! failed and was retried, and when it last made progress. They live in
//! memory (the journal holds what was delivered; a restart begins them
//! again, as Prometheus counters may).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::util::now_secs;

/// One sink runner's counters, updated by [`super::run`].
///
/// Times are Unix seconds stored as `f64` bits, so readers on other
/// threads never take a lock the runner could hold.
#[derive(Debug)]
pub struct SinkHealth {
    /// Delivery sessions that failed; each is followed by a recovery and a
    /// retry unless the runner gives up (`--once`).
    failures: AtomicU64,
    /// Failures since the last progress.
    consecutive: AtomicU64,
    /// Last time the sink acknowledged rows, finished a tick, or found
    /// itself caught up; at first, when the runner was created.
    last_progress: AtomicU64,
    /// Set when the runner has returned (drained, or gave up).
    stopped: AtomicBool,
}

impl Default for SinkHealth {
    fn default() -> Self {
        SinkHealth {
            failures: AtomicU64::new(0),
            consecutive: AtomicU64::new(0),
            last_progress: AtomicU64::new(now_secs().to_bits()),
            stopped: AtomicBool::new(false),
        }
    }
}

impl SinkHealth {
    pub(super) fn progress(&self) {
        self.last_progress
            .store(now_secs().to_bits(), Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
    }

    pub(super) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// A copy of the figures, for reports.
    pub fn report(&self) -> RunnerStatus {
        RunnerStatus {
            running: !self.stopped.load(Ordering::Relaxed),
            retries: self.failures.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
            last_progress_at: f64::from_bits(self.last_progress.load(Ordering::Relaxed)),
        }
    }
}

/// A sink runner's figures as `status --json` shows them (from a running
/// agent's snapshot only).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunnerStatus {
    /// The runner is delivering (false once it drained or gave up).
    pub running: bool,
    /// Failed delivery attempts since the agent started, each retried.
    pub retries: u64,
    /// Failures since the last progress (0 while delivery works).
    pub consecutive_failures: u64,
    /// Unix seconds of the last acknowledgement (or of finding nothing to
    /// deliver); the agent's start before the first.
    pub last_progress_at: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_and_progress_resets_the_streak() {
        let h = SinkHealth::default();
        let start = h.report();
        assert!(start.running && start.retries == 0 && start.last_progress_at > 1e9);
        h.failed();
        h.failed();
        assert_eq!(
            (h.report().retries, h.report().consecutive_failures),
            (2, 2)
        );
        h.progress();
        let r = h.report();
        assert_eq!((r.retries, r.consecutive_failures), (2, 0));
        assert!(r.last_progress_at >= start.last_progress_at);
        h.stopped();
        assert!(!h.report().running);
    }
}
