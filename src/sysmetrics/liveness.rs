//! Daemon mode: runs whose worker died without a word.
//!
//! The agent is not the worker's parent in daemon mode, so it never learns
//! an exit status. What it can see is the process: a worker is found as
//! [`super::discover`] finds it (it holds one of its run's files open or
//! works in its run directory), and it is remembered by pid *and* start
//! time (`/proc/<pid>/stat` field 22), so that a later process given the
//! same pid is not taken for it. Once every process remembered for a run
//! is gone (or a zombie) and none was found for the run since, for
//! `worker_gone_secs`, the run *died*: a run-finished event with
//! [`crate::sink::wandb::ending::DIED`] is journaled for it, which ends the
//! W&B run failed. The wait lets the sources read the last lines the worker
//! wrote: a run-finished record among them (a lifecycle `run_completed`)
//! is journaled first, and the sinks keep the worker's own word over the
//! agent's guess (`ending::DIED` never replaces a requested end).
//!
//! What the watch does not see: a worker that never held a file of its run
//! open (it is not found at all: its run ends only by a record or the idle
//! timeout), processes of another user when the agent is not root, and a
//! worker that died while the agent was not running (the watch keeps no
//! state across restarts).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journal::Journal;
use crate::row::{Row, RunEvent};

use super::{discover, procfs};

/// One run's workers as last seen.
#[derive(Debug, Default)]
struct Watched {
    /// pid to start time, of every process found for the run and alive.
    workers: BTreeMap<u32, u64>,
    /// Since when none of them is alive.
    gone_since: Option<Instant>,
}

/// The state of the watch, separate from its thread so that it can be
/// driven step by step.
#[derive(Debug)]
pub struct Watch {
    proc_root: PathBuf,
    paths: discover::RunPaths,
    grace: Duration,
    runs: BTreeMap<String, Watched>,
}

impl Watch {
    pub fn new(proc_root: PathBuf, paths: discover::RunPaths, grace: Duration) -> Watch {
        Watch {
            proc_root,
            paths,
            grace,
            runs: BTreeMap::new(),
        }
    }

    /// One look at `/proc` at `now`: the runs whose workers have been gone
    /// for the grace period (each returned once, then forgotten; a worker
    /// found for it later is watched anew).
    pub fn step(&mut self, now: Instant) -> Vec<String> {
        for (run, roots) in discover::runs(&self.proc_root, &self.paths.run_path, &self.paths.roots)
        {
            let w = self.runs.entry(run.clone()).or_default();
            for pid in roots {
                if let Some(start) = procfs::start_time(&self.proc_root, pid) {
                    if w.workers.insert(pid, start).is_none() {
                        tracing::info!(run = %run, pid, "worker process found for the run; watched until it exits");
                    }
                }
            }
        }
        let mut died = Vec::new();
        for (run, w) in &mut self.runs {
            let root = &self.proc_root;
            w.workers
                .retain(|pid, start| procfs::start_time(root, *pid) == Some(*start));
            if !w.workers.is_empty() {
                w.gone_since = None;
                continue;
            }
            let since = *w.gone_since.get_or_insert(now);
            if now.duration_since(since) >= self.grace {
                died.push(run.clone());
            }
        }
        for run in &died {
            self.runs.remove(run);
        }
        died
    }
}

/// The event journaled for a run whose worker died.
pub fn died_row(run_id: &str) -> Row {
    Row {
        run_id: run_id.to_string(),
        step: 0,
        wall_time: crate::util::now_secs(),
        values: Default::default(),
        event: Some(RunEvent::Finished(crate::sink::wandb::ending::DIED)),
        origin: Default::default(),
    }
}

/// Stops the watch thread when dropped (with the agent).
pub struct Watcher(Arc<AtomicBool>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Starts the watch (daemon mode, a W&B sink on, `worker_gone_secs` > 0):
/// a look every quarter of the grace period, at most every 5 s.
pub fn start(config: &crate::config::Config, journal: Arc<Journal>) -> Option<Watcher> {
    let secs = config.sinks.wandb.worker_gone_secs;
    if secs == 0 {
        return None;
    }
    let paths = match super::discover::RunPaths::from_config(config) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "workers are not watched");
            return None;
        }
    };
    // The last lines a worker wrote before it exited must be read before
    // its run is judged to have died without a word: at least two polls.
    let grace =
        Duration::from_secs(secs).max(Duration::from_millis(2 * config.tail.poll_interval_ms));
    let every = (grace / 4).min(Duration::from_secs(5));
    let mut watch = Watch::new(PathBuf::from("/proc"), paths, grace);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("worker-watch".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stopped.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep(Duration::from_millis(200).min(next - now));
                    continue;
                }
                next += every;
                let died = watch.step(now);
                if died.is_empty() {
                    continue;
                }
                let rows: Vec<Row> = died.iter().map(|r| died_row(r)).collect();
                match journal.commit_events(&rows) {
                    Ok(_) => {
                        for run in &died {
                            tracing::warn!(
                                run = %run,
                                gone_secs = secs,
                                exit_code = crate::sink::wandb::ending::DIED,
                                "the run's worker process is gone; unless the worker logged its end, the run ends failed"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, runs = ?died, "cannot journal that these runs' workers died; they end by the idle timeout")
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the worker watch; runs whose worker dies end by the idle timeout");
    }
    tracing::info!(
        gone_secs = grace.as_secs_f64(),
        "watching the workers found in run directories"
    );
    Some(Watcher(stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_dies_once_its_worker_is_gone_for_the_grace() {
        let tmp = tempfile::tempdir().unwrap();
        let logs = tmp.path().join("runs/01LIVE/logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(std::fs::File::create(logs.join("w.log")).unwrap())
            .spawn()
            .unwrap();
        let paths = discover::RunPaths {
            run_path: regex::Regex::new("runs/(?P<run_id>[^/]+)/").unwrap(),
            roots: vec![discover::pattern_root(&format!(
                "{}/runs/*/logs/*.log",
                tmp.path().display()
            ))],
        };
        let grace = Duration::from_secs(10);
        let mut w = Watch::new(PathBuf::from("/proc"), paths, grace);
        let t0 = Instant::now();
        assert!(w.step(t0).is_empty());
        assert!(w.runs.contains_key("01LIVE"), "{:?}", w.runs);
        // Alive: never died, however long.
        assert!(w.step(t0 + grace * 3).is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        let t1 = t0 + grace * 4;
        assert!(w.step(t1).is_empty(), "gone, but not for the grace yet");
        assert!(w.step(t1 + grace / 2).is_empty());
        assert_eq!(w.step(t1 + grace), ["01LIVE"]);
        assert!(w.step(t1 + grace * 2).is_empty(), "reported once");
    }

    #[test]
    fn a_reused_pid_is_not_the_worker() {
        let me = std::process::id();
        let start = procfs::start_time(std::path::Path::new("/proc"), me).unwrap();
        let mut w = Watch::new(
            PathBuf::from("/proc"),
            discover::RunPaths {
                run_path: regex::Regex::new("never-matches/(?P<run_id>x)").unwrap(),
                roots: Vec::new(),
            },
            Duration::ZERO,
        );
        // This pid, but as if another process had held it before.
        w.runs.insert(
            "R".into(),
            Watched {
                workers: [(me, start.wrapping_add(1))].into(),
                gone_since: None,
            },
        );
        assert_eq!(w.step(Instant::now()), ["R"]);
        w.runs.insert(
            "S".into(),
            Watched {
                workers: [(me, start)].into(),
                gone_since: None,
            },
        );
        assert!(w.step(Instant::now()).is_empty());
    }
}
