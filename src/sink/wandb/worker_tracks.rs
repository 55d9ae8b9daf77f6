//! Workers that track W&B themselves (CleanRL with `--track`, which runs
//! the SDK with `WANDB_DIR=<run>/wandb`): the SDK's own run directory
//! (`run-*` or `offline-run-*`) under the run's `sinks.wandb.worker_dir`
//! tells. By default (`when_worker_tracks = "skip"`) the W&B sinks leave
//! such a run to the worker instead of making a second W&B run of the
//! same metrics beside it (TensorBoard and jsonl still get it);
//! `"ship"` ships it anyway. `sync` finds the SDK's offline runs there
//! too.
//!
//! The decision is made when a run would be opened, at its first metric
//! row, console line or end (the worker has called `wandb.init` by then;
//! a configuration alone waits), and is final: a run that is being
//! shipped stays shipped, one left to the worker stays left.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::config::WhenWorkerTracks;

/// Where workers' own SDK runs live and what to do about them.
#[derive(Debug, Clone, Default)]
pub struct WorkerTracking {
    pub when: WhenWorkerTracks,
    /// The worker's `WANDB_DIR`, with `{run_id}`; empty: not looked for.
    pub dir: String,
}

/// Whether `name` is a directory name the SDK gives a run.
fn sdk_run_name(name: &str) -> bool {
    name.starts_with("run-") || name.starts_with("offline-run-")
}

impl WorkerTracking {
    /// The worker's own SDK run directory for `run_id`, if it has one and
    /// runs are left to such workers.
    pub fn own_run(&self, run_id: &str) -> Option<PathBuf> {
        if self.when == WhenWorkerTracks::Ship || self.dir.is_empty() {
            return None;
        }
        let base = PathBuf::from(self.dir.replace("{run_id}", run_id));
        // WANDB_DIR=<dir>: the SDK writes <dir>/wandb/run-*; a WANDB_DIR
        // naming the `wandb` directory itself holds them directly.
        [base.join("wandb"), base]
            .iter()
            .find_map(|d| sdk_runs_in(d).into_iter().next())
    }

    /// Every offline run directory the SDK wrote under any run's worker
    /// directory (`{run_id}` as `*`), for `sync`.
    pub fn sdk_offline_runs(&self) -> Vec<PathBuf> {
        if self.dir.is_empty() {
            return Vec::new();
        }
        let base = self.dir.replace("{run_id}", "*");
        let mut out = Vec::new();
        for pattern in [
            format!("{base}/wandb/offline-run-*"),
            format!("{base}/offline-run-*"),
        ] {
            if let Ok(paths) = glob::glob(&pattern) {
                out.extend(paths.flatten().filter(|p| p.is_dir()));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The SDK run directories directly in `dir` (none if it is missing).
fn sdk_runs_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut runs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| sdk_run_name(&e.file_name().to_string_lossy()))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    runs.sort();
    runs
}

/// The runs a W&B sink left to their workers (run id to the SDK's run
/// directory), read from its saved state for `status`. Both W&B sinks
/// keep them under `worker_tracked`.
pub fn left_to_workers(state: &[u8]) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        worker_tracked: BTreeMap<String, String>,
    }
    serde_json::from_slice::<Only>(state)
        .map(|o| o.worker_tracked)
        .unwrap_or_default()
}

/// Logs once, when the decision is made.
pub fn log_skipped(run_id: &str, own: &Path, sink: &str) {
    tracing::info!(
        run = run_id,
        sink,
        worker_wandb_run = %own.display(),
        "the worker tracks W&B itself: this run is left to its own W&B run (TensorBoard and jsonl still get it; sinks.wandb.when_worker_tracks = \"ship\" ships it too)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sdks_run_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = format!("{}/runs/{{run_id}}/wandb", tmp.path().display());
        let t = WorkerTracking {
            when: WhenWorkerTracks::Skip,
            dir: dir.clone(),
        };
        assert_eq!(t.own_run("A"), None);
        let own = tmp
            .path()
            .join("runs/A/wandb/wandb/offline-run-20260310_015400-abc");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(tmp.path().join("runs/B/wandb/wandb/debug")).unwrap();
        let online = tmp.path().join("runs/C/wandb/run-20260310_015400-xyz");
        std::fs::create_dir_all(&online).unwrap();
        assert_eq!(t.own_run("A"), Some(own.clone()));
        assert_eq!(t.own_run("B"), None);
        assert_eq!(t.own_run("C"), Some(online));
        assert_eq!(t.sdk_offline_runs(), vec![own]);
        let ship = WorkerTracking {
            when: WhenWorkerTracks::Ship,
            dir,
        };
        assert_eq!(ship.own_run("A"), None);
        assert_eq!(
            left_to_workers(br#"{"runs": {}, "worker_tracked": {"A": "/x"}}"#)["A"],
            "/x"
        );
        assert!(left_to_workers(b"").is_empty());
    }
}
