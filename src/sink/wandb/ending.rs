//! How a W&B run ends: which exit code the agent reports, and what the W&B
//! UI shows for it.
//!
//! W&B derives the state from what the run's process sends: `complete`
//! with exit code 0 shows *finished*, with any other code *failed*
//! (`wandb.finish(exit_code=1)` sends exactly `"complete": true,
//! "exitcode": 1`, tests/fixtures/wandb-sdk-state.json); a run whose
//! heartbeats stop without `complete` is shown *crashed* by the server.
//! The agent sends `complete` only for an end the worker reported, so that
//! a worker that died is never shown as a successful run.

/// The exit code of a daemon-mode run whose worker process is gone
/// without a run-finished record (`sysmetrics::liveness`): the agent is not
/// its parent and cannot know its status, so "unknown", and non-zero so
/// that the run shows *failed*, never *finished*. It never replaces an end
/// the worker logged itself ([`keeps_requested`]).
pub const DIED: i32 = -1;

/// Whether a run-finished event with `code` leaves an end already
/// requested or sent alone: the agent's [`DIED`] yields to the worker's
/// own record (read before it, or already sent).
pub fn keeps_requested(code: i32, requested: Option<i32>, finished: Option<i32>) -> bool {
    code == DIED && (requested.is_some() || finished.is_some())
}

/// The exit code to report when the worker's process exited with `exit`
/// (init mode) and its records said `record` (a run-finished record's
/// code, if it logged one): a failure either way wins over success, and the
/// process's own non-zero status (a kill: 128 + signal) over the record's.
/// So a worker that logged `run_completed` and was then killed is failed,
/// and one that logged `run_failed` but exited 0 is failed too.
pub fn exit_code(record: Option<i32>, exit: i32) -> i32 {
    if exit != 0 {
        exit
    } else {
        record.unwrap_or(0)
    }
}

/// The state the W&B UI shows for a run completed with `code`.
pub fn shown(code: i32) -> &'static str {
    if code == 0 {
        "finished"
    } else {
        "failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_either_way_wins() {
        assert_eq!(exit_code(None, 0), 0);
        assert_eq!(exit_code(Some(0), 0), 0);
        assert_eq!(exit_code(Some(1), 0), 1);
        assert_eq!(exit_code(Some(0), 137), 137);
        assert_eq!(exit_code(Some(130), 1), 1);
        assert_eq!(exit_code(None, 137), 137);
        assert_eq!(shown(0), "finished");
        assert_eq!(shown(137), "failed");
        assert_eq!(shown(DIED), "failed");
        assert!(keeps_requested(DIED, Some(0), None));
        assert!(keeps_requested(DIED, None, Some(0)));
        assert!(!keeps_requested(DIED, None, None));
        assert!(!keeps_requested(1, Some(0), None));
    }
}
