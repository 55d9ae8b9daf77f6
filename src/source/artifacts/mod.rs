//! Checkpoint files a worker writes into its run directory, found and
//! handed on only once they are complete.
//!
//! Which files: glob patterns relative to each run directory
//! (`<runs_dir>/<run_id>/`), by default `checkpoints/**`, `**/*.cleanrl_model`,
//! `**/*.pth` and `**/*.pt`. Nothing else is looked at.
//!
//! When a file is complete: the agent cannot see whether the writer closed
//! it without asking every process (`/proc/*/fd`, costly and not allowed
//! across users), so it relies on what a writer cannot fake: the file's
//! size and modification time are the same at two looks at least `settle`
//! apart, and the modification time is itself at least `settle` old. A
//! writer that pauses longer than `settle` mid-file (rare for `torch.save`,
//! which writes in one go) would be read early; the uploader checks size
//! and time again after reading and drops a version that changed.

mod recorder;
mod stability;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use recorder::Recorder;
pub use stability::Stability;

/// A file found complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteFile {
    pub run_id: String,
    /// Relative to the run directory, `/`-separated.
    pub rel_path: String,
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: i128,
}

/// Finds checkpoint files under every run directory and tells which are
/// complete (see the module documentation).
pub struct ArtifactSource {
    runs_dir: PathBuf,
    patterns: Vec<glob::Pattern>,
    stability: Stability,
}

/// How deep the walk goes under a run directory (a symlink loop or a
/// pathological tree must not hang the agent).
const MAX_DEPTH: usize = 16;

impl ArtifactSource {
    /// `patterns` are globs relative to a run directory; an invalid one is
    /// an error naming it.
    pub fn new(
        runs_dir: &Path,
        patterns: &[String],
        settle: Duration,
    ) -> Result<ArtifactSource, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| format!("artifacts.paths: bad glob {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(ArtifactSource {
            runs_dir: runs_dir.to_path_buf(),
            patterns,
            stability: Stability::new(settle),
        })
    }

    /// Lists the matching files now and returns those that became
    /// complete since the last look (each version once per process; the
    /// journal remembers across processes).
    pub fn scan(&mut self, now: SystemTime) -> Vec<CompleteFile> {
        let mut seen = BTreeMap::new();
        let Ok(runs) = std::fs::read_dir(&self.runs_dir) else {
            return Vec::new();
        };
        for run in runs.flatten() {
            let Ok(ft) = run.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let run_id = run.file_name().to_string_lossy().to_string();
            self.walk(&run.path(), &run_id, "", 0, &mut seen);
        }
        self.stability.look(seen, now)
    }

    /// Every matching file now, complete or not (for `status`, which
    /// lists those the journal has no version of as still being written).
    pub fn list(&self) -> Vec<CompleteFile> {
        let mut seen = BTreeMap::new();
        let Ok(runs) = std::fs::read_dir(&self.runs_dir) else {
            return Vec::new();
        };
        for run in runs.flatten() {
            if run.file_type().is_ok_and(|t| t.is_dir()) {
                let run_id = run.file_name().to_string_lossy().to_string();
                self.walk(&run.path(), &run_id, "", 0, &mut seen);
            }
        }
        seen.into_values().collect()
    }

    /// Matching files seen but not complete yet.
    pub fn waiting(&self) -> usize {
        self.stability.waiting()
    }

    fn walk(
        &self,
        dir: &Path,
        run_id: &str,
        prefix: &str,
        depth: usize,
        out: &mut BTreeMap<PathBuf, CompleteFile>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            // No symlinks: a link out of the run directory is not the run's.
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                self.walk(&e.path(), run_id, &rel, depth + 1, out);
            } else if ft.is_file() && self.matches(&rel) {
                let Ok(meta) = e.metadata() else { continue };
                out.insert(
                    e.path(),
                    CompleteFile {
                        run_id: run_id.to_string(),
                        rel_path: rel,
                        path: e.path(),
                        size: meta.len(),
                        mtime_ns: mtime_ns(&meta),
                    },
                );
            }
        }
    }

    fn matches(&self, rel: &str) -> bool {
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.patterns.iter().any(|p| p.matches_with(rel, opts))
    }
}

/// A file's modification time in nanoseconds since the epoch.
pub fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    use std::os::unix::fs::MetadataExt;
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

/// The step in a checkpoint's name: the last run of digits in the file
/// name or its directory (`checkpoint_000010/...` -> 10, `step_500.pth`
/// -> 500); `None` without digits.
pub fn step_in_name(rel_path: &str) -> Option<i64> {
    let stem = rel_path
        .rsplit('/')
        .find(|part| part.bytes().any(|b| b.is_ascii_digit()))?;
    let stem = stem.split('.').next().unwrap_or(stem);
    let digits: String = stem
        .chars()
        .rev()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_take_checkpoints_and_model_files_only() {
        let s = ArtifactSource::new(
            Path::new("/nonexistent"),
            &[
                "checkpoints/**".into(),
                "**/*.cleanrl_model".into(),
                "**/*.pth".into(),
                "**/*.pt".into(),
            ],
            Duration::from_secs(1),
        )
        .unwrap();
        for yes in [
            "checkpoints/CartPole-v1/seed_1/final_train_model.pth",
            "checkpoints/checkpoint_000010/algorithm_state.pkl",
            "runs/ppo.cleanrl_model",
            "model.pt",
        ] {
            assert!(s.matches(yes), "{yes}");
        }
        for no in [
            "logs/worker.log",
            "tensorboard/events.out.tfevents.1.h",
            "shipper/rows.jsonl",
            "model.ptx",
        ] {
            assert!(!s.matches(no), "{no}");
        }
    }

    #[test]
    fn steps_come_from_names() {
        assert_eq!(
            step_in_name("checkpoints/checkpoint_000010/a.pkl"),
            Some(10)
        );
        assert_eq!(step_in_name("checkpoints/step_500.pth"), Some(500));
        assert_eq!(step_in_name("model.pth"), None);
    }
}
