//! System metrics of the workers (W&B's System tab), sampled from `/proc`
//! and `nvidia-smi` under the names and units of the W&B SDK's system
//! monitor (wandb 0.31.0, `core/internal/monitor/system.go`; recorded in
//! tests/fixtures/wandb-sdk-system.json):
//!
//! | name | what |
//! | --- | --- |
//! | `cpu` | CPU of the worker's process tree, percent of one core, divided by the physical cores (from the second sample on) |
//! | `proc.memory.rssMB`, `proc.memory.percent` | resident memory of the tree, MiB and percent of the host's |
//! | `proc.cpu.threads` | threads of the tree |
//! | `memory_percent`, `proc.memory.availableMB` | the host's memory in use (percent) and available (MiB) |
//! | `network.sent`, `network.recv`, `network.tcpRetransmits` | bytes and TCP retransmits since the run's first sample, all interfaces |
//! | `disk.<device>.in`, `disk.<device>.out` | MiB read and written since the first sample, device of `/` |
//! | `disk./.usagePercent`, `disk./.usageGB` | space used on `/` |
//! | `gpu.<i>.*`, `gpu.process.<i>.*` | see [`gpu`] |
//!
//! Samples go into the journal as `RunEvent::System` rows of the run
//! (from no file, like init mode's exit code), so they reach W&B exactly
//! once, online (`wandb-events.jsonl`), offline (stats records), staged
//! and through `sync`, like every other row. [`discover`] says which
//! processes are a run's worker.

pub mod discover;
pub mod gpu;
pub mod liveness;
pub mod procfs;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journal::Journal;
use crate::row::{Row, RunEvent};

/// The SDK's default sampling interval (`x_stats_sampling_interval`); the
/// configuration schema owns it.
pub use crate::config::DEFAULT_SYSTEM_INTERVAL_SECS as DEFAULT_INTERVAL_SECS;

/// What the host has that every run's samples share.
#[derive(Debug, Clone)]
pub struct Host {
    pub proc_root: PathBuf,
    cores: u32,
    ticks: f64,
    /// `nvidia-smi`, when there is one.
    pub nvidia_smi: Option<PathBuf>,
}

impl Host {
    pub fn new(proc_root: &Path, nvidia_smi: Option<PathBuf>) -> Host {
        Host {
            proc_root: proc_root.to_path_buf(),
            cores: procfs::physical_cores(proc_root).max(1),
            ticks: procfs::ticks_per_second(),
            nvidia_smi,
        }
    }
}

/// One run's sampler: the counters its deltas start from and the CPU
/// time its processes had at the last sample.
#[derive(Debug)]
pub struct RunSampler {
    net0: Option<(u64, u64)>,
    tcp0: Option<u64>,
    disk0: BTreeMap<String, (u64, u64)>,
    last_cpu: Option<(Instant, BTreeMap<u32, u64>)>,
}

/// MiB.
const MB: f64 = 1024.0 * 1024.0;

impl RunSampler {
    pub fn new(host: &Host) -> RunSampler {
        let root = &host.proc_root;
        let all = procfs::disks(root);
        let devices: Vec<String> = match procfs::root_device(root) {
            Some(d) if all.contains_key(&d) => vec![d],
            // `/` on an overlay or a device the kernel names otherwise:
            // every real block device, as the SDK falls back to.
            _ => all
                .keys()
                .filter(|d| !["loop", "ram", "zram"].iter().any(|p| d.starts_with(p)))
                .cloned()
                .collect(),
        };
        RunSampler {
            net0: procfs::network(root),
            tcp0: procfs::tcp_retransmits(root),
            disk0: devices
                .into_iter()
                .filter_map(|d| all.get(&d).map(|c| (d, *c)))
                .collect(),
            last_cpu: None,
        }
    }

    /// A sample of the trees under `roots` and the host; empty when none
    /// of the processes is left.
    pub fn sample(&mut self, host: &Host, roots: &[u32]) -> BTreeMap<String, f64> {
        let root = &host.proc_root;
        let mut procs: BTreeMap<u32, procfs::Proc> = BTreeMap::new();
        for &pid in roots {
            procs.extend(procfs::tree(root, pid));
        }
        let mut m = BTreeMap::new();
        if procs.is_empty() {
            return m;
        }
        if let (Some((recv, sent)), Some((r0, s0))) = (procfs::network(root), self.net0) {
            m.insert("network.recv".into(), recv.saturating_sub(r0) as f64);
            m.insert("network.sent".into(), sent.saturating_sub(s0) as f64);
        }
        if let (Some(t), Some(t0)) = (procfs::tcp_retransmits(root), self.tcp0) {
            m.insert("network.tcpRetransmits".into(), t.saturating_sub(t0) as f64);
        }
        let now_disks = procfs::disks(root);
        for (dev, (r0, w0)) in &self.disk0 {
            if let Some((r, w)) = now_disks.get(dev) {
                m.insert(format!("disk.{dev}.in"), r.saturating_sub(*r0) as f64 / MB);
                m.insert(format!("disk.{dev}.out"), w.saturating_sub(*w0) as f64 / MB);
            }
        }
        if let Some((used, total)) = procfs::disk_usage(Path::new("/")) {
            if total > 0 {
                m.insert(
                    "disk./.usagePercent".into(),
                    used as f64 / total as f64 * 100.0,
                );
            }
            m.insert("disk./.usageGB".into(), used as f64 / MB / 1024.0);
        }
        let memory = procfs::memory(root);
        if let Some((total, available)) = memory {
            if total > 0 {
                m.insert(
                    "memory_percent".into(),
                    total.saturating_sub(available) as f64 / total as f64 * 100.0,
                );
            }
            m.insert("proc.memory.availableMB".into(), available as f64 / MB);
        }
        let rss: u64 = procs.values().map(|p| p.rss_bytes).sum();
        m.insert("proc.memory.rssMB".into(), rss as f64 / MB);
        if let Some((total, _)) = memory.filter(|(t, _)| *t > 0) {
            m.insert(
                "proc.memory.percent".into(),
                rss as f64 / total as f64 * 100.0,
            );
        }
        m.insert(
            "proc.cpu.threads".into(),
            procs.values().map(|p| p.threads).sum::<u64>() as f64,
        );
        // CPU since the last sample, of the processes seen both times (a
        // process born meanwhile counts from its first sample on).
        let now = Instant::now();
        let ticks: BTreeMap<u32, u64> = procs.iter().map(|(p, s)| (*p, s.cpu_ticks)).collect();
        if let Some((then, before)) = &self.last_cpu {
            let secs = now.duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                let used: u64 = ticks
                    .iter()
                    .filter_map(|(p, t)| before.get(p).map(|b| t.saturating_sub(*b)))
                    .sum();
                let percent = used as f64 / host.ticks / secs * 100.0;
                m.insert("cpu".into(), percent / f64::from(host.cores));
            }
        }
        self.last_cpu = Some((now, ticks));
        if let Some(smi) = &host.nvidia_smi {
            let pids: BTreeSet<u32> = procs.keys().copied().collect();
            m.extend(gpu::sample(smi, &pids));
        }
        m
    }
}

/// Where the monitor finds the workers to sample.
#[derive(Debug, Clone)]
pub enum Workers {
    /// Init mode: CMD's process tree, for the runs it names (`MOSAIC_RUN_ID`,
    /// `[init] run_id`) and the runs whose files its processes hold open.
    Init { pid: u32, run_ids: Vec<String> },
    /// Daemon: every process that holds a run's files open, or works in
    /// its directory ([`discover`]).
    Daemon,
}

/// The monitor's settings.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    pub interval: Duration,
    pub workers: Workers,
    /// Tells a run id from a path (`run_id_from_path`).
    pub run_path: regex::Regex,
    /// Daemon mode: the directories the sources read under (each
    /// pattern's part before its first wildcard). Only paths under them
    /// name a run: a process elsewhere on the machine whose files merely
    /// look like `runs/<id>/` (another project, another agent's workers)
    /// is none of this agent's.
    pub roots: Vec<PathBuf>,
    pub host: Host,
}

/// Stops the monitor thread when dropped (with the agent).
pub struct Monitor(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Monitor {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Starts sampling as `[system_metrics]` says for this mode: `workers`
/// is init mode's CMD, or the daemon's discovery; `None` when off.
pub fn start(
    config: &crate::config::Config,
    journal: Arc<Journal>,
    workers: Workers,
) -> Option<Monitor> {
    use crate::config::SystemMetricsEnabled as E;
    let c = &config.system_metrics;
    match (c.enabled, &workers) {
        (E::Off, _) | (E::Auto, Workers::Daemon) => return None,
        _ => {}
    }
    // CMD already exited and was reaped (`run -- true`): its tree is gone
    // for good and every sample would be empty (`discover::init_runs`);
    // skipping the sampler spares a walk of /proc while the agent starts
    // and drains (a fifth of `run -- true`, scripts/bench-init).
    if let Workers::Init { pid, .. } = &workers {
        if !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::debug!(pid, "CMD has already exited: no system metrics to sample");
            return None;
        }
    }
    let paths = match discover::RunPaths::from_config(config) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "no system metrics");
            return None;
        }
    };
    let nvidia_smi = if c.nvidia_smi.is_empty() {
        gpu::find_on_path()
    } else {
        Some(PathBuf::from(&c.nvidia_smi))
    };
    tracing::info!(interval_secs = c.interval_secs, ?workers, gpu = ?nvidia_smi, "sampling system metrics");
    let settings = MonitorSettings {
        interval: Duration::from_secs_f64(c.interval_secs),
        workers,
        run_path: paths.run_path,
        roots: paths.roots,
        host: Host::new(Path::new("/proc"), nvidia_smi),
    };
    Some(Monitor(spawn(settings, journal)))
}

/// Samples every run's workers each interval and journals the samples,
/// until the returned flag is set. A run found for the first time is
/// sampled at once (as the SDK samples at its start, without `cpu`).
pub fn spawn(
    settings: MonitorSettings,
    journal: Arc<Journal>,
) -> Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("sysmetrics".into())
        .spawn(move || {
            let mut samplers: BTreeMap<String, RunSampler> = BTreeMap::new();
            let mut next = Instant::now();
            while !stopped.load(Ordering::SeqCst) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(200).min(next - Instant::now()));
                    continue;
                }
                next += settings.interval;
                let runs = match &settings.workers {
                    Workers::Init { pid, run_ids } => {
                        discover::init_runs(&settings.host.proc_root, *pid, run_ids, &settings.run_path)
                    }
                    Workers::Daemon => discover::runs(
                        &settings.host.proc_root,
                        &settings.run_path,
                        &settings.roots,
                    ),
                };
                samplers.retain(|id, _| runs.contains_key(id));
                let mut rows = Vec::new();
                for (id, roots) in &runs {
                    let sampler = samplers
                        .entry(id.clone())
                        .or_insert_with(|| RunSampler::new(&settings.host));
                    let values = sampler.sample(&settings.host, roots);
                    if values.is_empty() {
                        continue;
                    }
                    rows.push(Row {
                        run_id: id.clone(),
                        step: 0,
                        wall_time: crate::util::now_secs(),
                        values,
                        event: Some(RunEvent::System),
                        origin: Default::default(),
                    });
                }
                if !rows.is_empty() {
                    if let Err(e) = journal.commit_events(&rows) {
                        tracing::warn!(error = %e, "cannot journal system metrics; this sample is skipped");
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the system metrics thread; no system metrics");
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_of_this_process_has_the_sdk_names() {
        let host = Host::new(Path::new("/proc"), None);
        let mut s = RunSampler::new(&host);
        let me = std::process::id();
        let first = s.sample(&host, &[me]);
        for k in [
            "memory_percent",
            "proc.memory.availableMB",
            "proc.memory.rssMB",
            "proc.memory.percent",
            "proc.cpu.threads",
            "disk./.usagePercent",
            "disk./.usageGB",
            "network.sent",
            "network.recv",
        ] {
            assert!(first.contains_key(k), "{k} missing from {first:?}");
        }
        assert!(!first.contains_key("cpu"), "cpu needs a previous sample");
        assert!(first["proc.memory.rssMB"] > 0.0);
        std::thread::sleep(Duration::from_millis(50));
        let second = s.sample(&host, &[me]);
        assert!(second["cpu"] >= 0.0);
        assert!(s.sample(&host, &[u32::MAX - 1]).is_empty());
    }
}
