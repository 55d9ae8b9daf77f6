//! What the agent can truthfully say about the machine that read a run's
//! files and, in init mode, about the worker it started: W&B's Overview
//! tab (`wandb-metadata.json`, `_wandb.e`, the run's host).
//!
//! Gathered where the rows are produced (the ingest journals them as a
//! [`RunEvent::Machine`](crate::row::RunEvent::Machine) row before a run's
//! first rows in each process) and read where they are shipped, so a run
//! staged on one machine and uploaded from another shows the first.

use serde::{Deserialize, Serialize};

/// The facts, as journaled (JSON). Every field is optional: what the
/// agent cannot know is left out rather than guessed, and a newer agent's
/// extra fields are ignored by an older one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineFacts {
    /// `gethostname(2)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `uname`: system, release and machine, as Python's
    /// `platform.platform()` begins (`Linux-6.1.0-18-amd64-x86_64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Physical cores (distinct core ids in /proc/cpuinfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_count: Option<u32>,
    /// Logical CPUs online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_count_logical: Option<u32>,
    /// The CPU's `model name` in /proc/cpuinfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_model: Option<String>,
    /// `MemTotal` of /proc/meminfo, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total: Option<u64>,
    /// The filesystem of `/`: what the SDK reports as `disk["/"]` (its
    /// default `x_stats_disk_paths`), when the agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskFacts>,
    /// The NVIDIA GPUs `nvidia-smi` lists, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuFacts>,
    /// The CUDA version the NVIDIA driver supports (`12.2`), as
    /// `nvidia-smi -q` heads its report with it: what the SDK reads as
    /// NVML's `cuda_driver_version` and writes as `cudaVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cuda_version: Option<String>,
    /// The worker: init mode only (the agent started it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerFacts>,
}

/// A filesystem's size and use, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskFacts {
    pub total: u64,
    pub used: u64,
}

/// One GPU as `nvidia-smi --query-gpu=name,memory.total,uuid,pci.bus_id`
/// describes it (the SDK reads the same through NVML; CUDA cores and
/// architecture, which `nvidia-smi` does not print, are left out).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuFacts {
    pub name: String,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_total: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pci_bus_id: String,
}

/// The worker process init mode started: its command, directory and
/// start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerFacts {
    /// The program: the script for `python script.py ...`, else CMD.
    pub program: String,
    /// The program's arguments (after the script for a Python script).
    pub args: Vec<String>,
    /// The interpreter for `python script.py`, else `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    /// The interpreter's implementation and version as the SDK gives them
    /// (`CPython 3.11.2`): asked of the interpreter itself, so only for a
    /// Python CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// The script's path inside the git checkout that holds it, as the
    /// SDK's `codePath`; `None` outside a checkout or for no script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_path: Option<String>,
    /// The working directory the worker started in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// When the agent started it, seconds since the Unix epoch.
    pub started_at: f64,
}

impl WorkerFacts {
    /// The facts of `cmd` started now in the current directory. A Python
    /// interpreter running a script (`python3 train.py --seed 1`) is
    /// shown as the SDK shows it: the script is the program, the
    /// interpreter the executable.
    pub fn of_command(cmd: &[String], started_at: f64) -> WorkerFacts {
        let root = std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string());
        let python = cmd.first().is_some_and(|c| {
            let name = std::path::Path::new(c)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            name == "python"
                || name.strip_prefix("python").is_some_and(|v| {
                    !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.')
                })
        });
        let script = python
            .then(|| cmd.get(1))
            .flatten()
            .filter(|a| !a.starts_with('-'));
        let version = python.then(|| python_version(&cmd[0])).flatten();
        match script {
            Some(script) => WorkerFacts {
                program: script.clone(),
                args: cmd[2..].to_vec(),
                executable: cmd.first().cloned(),
                python: version,
                code_path: code_path(std::path::Path::new(script)),
                root,
                started_at,
            },
            None => WorkerFacts {
                program: cmd.first().cloned().unwrap_or_default(),
                args: cmd.get(1..).map(<[String]>::to_vec).unwrap_or_default(),
                executable: None,
                python: version,
                code_path: None,
                root,
                started_at,
            },
        }
    }
}

/// `CPython 3.11.2` for the interpreter `exe` (found on PATH as the
/// worker's will be), asked of it once, within a deadline; `None` if it
/// does not answer so.
fn python_version(exe: &str) -> Option<String> {
    let args = [
        "-c".to_string(),
        "import platform; print(platform.python_implementation(), platform.python_version())"
            .to_string(),
    ];
    let out = crate::sysmetrics::gpu::run(std::path::Path::new(exe), &args)?;
    let v = out.trim();
    (!v.is_empty() && !v.contains('\n')).then(|| v.to_string())
}

/// The path of `script` relative to the root of the git checkout that
/// holds it (the closest directory above it with a `.git`), as the SDK's
/// `codePath` reads for a script inside a checkout.
fn code_path(script: &std::path::Path) -> Option<String> {
    let abs = if script.is_absolute() {
        script.to_path_buf()
    } else {
        std::env::current_dir().ok()?.join(script)
    };
    let root = abs.ancestors().skip(1).find(|d| d.join(".git").exists())?;
    let rel = abs.strip_prefix(root).ok()?;
    Some(rel.display().to_string())
}

impl MachineFacts {
    /// This machine's facts, with the worker's when init mode knows it.
    pub fn local(
        worker: Option<WorkerFacts>,
        nvidia_smi: Option<&std::path::Path>,
    ) -> MachineFacts {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let (physical, logical) = cpu_counts(&cpuinfo);
        let logical = logical.or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.get() as u32)
        });
        MachineFacts {
            host: crate::util::hostname(),
            os: os_name(),
            cpu_count: physical,
            cpu_count_logical: logical,
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
                .filter(|m| !m.is_empty()),
            memory_total: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| mem_total(&m)),
            disk: crate::sysmetrics::procfs::disk_usage(std::path::Path::new("/"))
                .map(|(used, total)| DiskFacts { total, used }),
            gpus: nvidia_smi
                .map(crate::sysmetrics::gpu::devices)
                .unwrap_or_default(),
            cuda_version: nvidia_smi.and_then(crate::sysmetrics::gpu::cuda_version),
            worker,
        }
    }

    /// Whether `other` describes the same machine and worker: the disk's
    /// use is a reading taken when each agent process started, not a
    /// fact that tells a new Overview (a restart must not send it again).
    pub fn same_as(&self, other: &MachineFacts) -> bool {
        let strip = |f: &MachineFacts| MachineFacts {
            disk: f.disk.as_ref().map(|d| DiskFacts {
                total: d.total,
                used: 0,
            }),
            ..f.clone()
        };
        strip(self) == strip(other)
    }

    /// The journaled text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("facts serialise")
    }

    /// Facts from journaled text; `None` (logged by the caller) if it is
    /// not an object of this shape.
    pub fn from_json(text: &str) -> Option<MachineFacts> {
        serde_json::from_str(text).ok()
    }
}

/// `uname -s`-`uname -r`-`uname -m`.
fn os_name() -> Option<String> {
    // SAFETY: `utsname` is plain old data; uname fills it or fails.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).to_string()
    };
    Some(format!(
        "{}-{}-{}",
        field(&u.sysname),
        field(&u.release),
        field(&u.machine)
    ))
}

/// Physical cores (distinct `physical id`/`core id` pairs, when the
/// kernel lists them) and logical CPUs (`processor` entries).
fn cpu_counts(cpuinfo: &str) -> (Option<u32>, Option<u32>) {
    let mut cores = std::collections::BTreeSet::new();
    let mut logical = 0u32;
    let mut physical_id = String::new();
    for line in cpuinfo.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "processor" => logical += 1,
            "physical id" => physical_id = v.trim().to_string(),
            "core id" => {
                cores.insert((physical_id.clone(), v.trim().to_string()));
            }
            _ => {}
        }
    }
    (
        (!cores.is_empty()).then_some(cores.len() as u32),
        (logical > 0).then_some(logical),
    )
}

/// `MemTotal:  16303412 kB` in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_and_memory_are_read_from_proc() {
        let cpuinfo = "processor\t: 0\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t: 0\n\nprocessor\t: 2\nphysical id\t: 0\ncore id\t: 1\n";
        assert_eq!(cpu_counts(cpuinfo), (Some(2), Some(3)));
        assert_eq!(cpu_counts("processor : 0\n"), (None, Some(1)));
        assert_eq!(
            mem_total("MemFree: 1 kB\nMemTotal:       16303412 kB\n"),
            Some(16303412 * 1024)
        );
        let local = MachineFacts::local(None, None);
        assert!(local
            .disk
            .as_ref()
            .is_some_and(|d| d.total >= d.used && d.total > 0));
        assert!(local.os.as_deref().is_some_and(|o| o.starts_with("Linux-")));
        assert!(local.cpu_count_logical.is_some_and(|n| n > 0));
        assert_eq!(MachineFacts::from_json(&local.to_json()), Some(local));
    }

    #[test]
    fn python_scripts_are_shown_as_the_sdk_shows_them() {
        let cmd = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        let w = WorkerFacts::of_command(&cmd("/usr/bin/python3.11 train.py --seed 1"), 5.0);
        assert_eq!(w.program, "train.py");
        assert_eq!(w.args, ["--seed", "1"]);
        assert_eq!(w.executable.as_deref(), Some("/usr/bin/python3.11"));
        let w = WorkerFacts::of_command(&cmd("python -m cleanrl.ppo --track"), 5.0);
        assert_eq!(w.program, "python");
        assert_eq!(w.args, ["-m", "cleanrl.ppo", "--track"]);
        let w = WorkerFacts::of_command(&cmd("sh -c true"), 5.0);
        assert_eq!((w.program.as_str(), w.executable), ("sh", None));
    }
}
