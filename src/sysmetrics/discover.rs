//! Which processes are a run's worker.
//!
//! A worker is a process that holds one of its run's files open or works
//! in its run directory: `/proc/<pid>/fd/*` and `/proc/<pid>/cwd` link to
//! paths, and the run id is read from a path as the sources read it
//! (`run_id_from_path`, by default `runs/(?P<run_id>[^/]+)/`), in daemon
//! mode only of paths under the directories the sources read (a path
//! elsewhere that looks alike is another project's). MOSAIC
//! starts workers with stdout and stderr redirected to
//! `runs/<id>/logs/*.log`, Python's logging handlers and TensorBoard
//! writers keep their files open, so every worker the agent ships rows of
//! is found so, with no cooperation and without guessing from command
//! lines; a process whose parent is found for the same run is part of
//! that worker's tree, not a worker of its own. The agent's own processes
//! (it writes into run directories too) are left out. Only processes the
//! agent may inspect are seen (the same user, or root). It costs one
//! listing of `/proc` and a `readlink` per open file, once per sampling
//! interval.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::procfs;

/// How daemon mode tells a process's run from the paths it holds, from
/// the configuration: the sources' `run_id_from_path` and the directories
/// they read under ([`pattern_root`]).
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub run_path: regex::Regex,
    pub roots: Vec<PathBuf>,
}

impl RunPaths {
    /// Fails with the pattern and why when `run_id_from_path` is not a
    /// regular expression.
    pub fn from_config(config: &crate::config::Config) -> Result<RunPaths, String> {
        let sources = config.sources();
        let pattern = sources
            .iter()
            .find_map(|s| s.run_id_from_path.clone())
            .unwrap_or_else(|| crate::extract::events::DEFAULT_RUN_ID_FROM_PATH.to_string());
        let run_path = crate::extract::patterns::compile(&pattern)
            .map_err(|e| format!("run_id_from_path {pattern:?} is not a regex: {e}"))?;
        let roots = sources
            .iter()
            .flat_map(|s| s.paths.iter().map(|p| pattern_root(p)))
            .collect();
        Ok(RunPaths { run_path, roots })
    }
}

/// The directory a source pattern reads under: its components before the
/// first one with a wildcard, absolute (relative patterns are read from
/// the working directory) and with symbolic links resolved where it
/// exists, as `/proc`'s links show paths.
pub fn pattern_root(pattern: &str) -> PathBuf {
    let mut root = PathBuf::new();
    for c in Path::new(pattern).components() {
        if c.as_os_str()
            .to_string_lossy()
            .contains(['*', '?', '[', '{'])
        {
            break;
        }
        root.push(c);
    }
    let root = if root.is_absolute() {
        root
    } else {
        std::env::current_dir()
            .map(|d| d.join(&root))
            .unwrap_or(root)
    };
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// The run ids the paths a process holds name; with `roots`, only paths
/// under one of them count.
fn runs_of(
    proc_root: &Path,
    pid: u32,
    run_path: &regex::Regex,
    roots: Option<&[PathBuf]>,
) -> BTreeSet<String> {
    let dir = proc_root.join(pid.to_string());
    let mut paths: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::fs::read_link(dir.join("cwd")) {
        paths.push(cwd.join("")); // a trailing `/`: the directory itself
    }
    if let Ok(fds) = std::fs::read_dir(dir.join("fd")) {
        paths.extend(
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok()),
        );
    }
    paths
        .iter()
        .filter(|p| roots.map_or(true, |roots| roots.iter().any(|r| p.starts_with(r))))
        .filter_map(|p| {
            let text = p.to_string_lossy();
            run_path
                .captures(&text)
                .and_then(|c| c.name("run_id"))
                .map(|m| m.as_str().to_string())
        })
        .collect()
}

/// Whether `pid` runs the agent's own executable.
fn is_agent(proc_root: &Path, pid: u32, own_exe: Option<&Path>) -> bool {
    pid == std::process::id()
        || own_exe.is_some_and(|own| {
            std::fs::read_link(proc_root.join(pid.to_string()).join("exe")).is_ok_and(|e| e == own)
        })
}

/// Daemon mode: each run's worker processes (tree roots), by run id, of
/// the processes holding paths under `roots`.
pub fn runs(
    proc_root: &Path,
    run_path: &regex::Regex,
    roots: &[PathBuf],
) -> BTreeMap<String, Vec<u32>> {
    let own_exe = std::fs::read_link("/proc/self/exe").ok();
    let mut found: BTreeMap<String, BTreeMap<u32, u32>> = BTreeMap::new();
    for pid in procfs::pids(proc_root) {
        if is_agent(proc_root, pid, own_exe.as_deref()) {
            continue;
        }
        let runs = runs_of(proc_root, pid, run_path, Some(roots));
        if runs.is_empty() {
            continue;
        }
        let Some(p) = procfs::process(proc_root, pid) else {
            continue;
        };
        for run in runs {
            found.entry(run).or_default().insert(pid, p.ppid);
        }
    }
    found
        .into_iter()
        .map(|(run, pids)| {
            let roots = pids
                .iter()
                .filter(|(_, ppid)| !pids.contains_key(ppid))
                .map(|(pid, _)| *pid)
                .collect();
            (run, roots)
        })
        .collect()
}

/// Init mode: CMD's whole tree for each run it names or whose files any
/// of its processes holds.
pub fn init_runs(
    proc_root: &Path,
    pid: u32,
    named: &[String],
    run_path: &regex::Regex,
) -> BTreeMap<String, Vec<u32>> {
    let mut runs: BTreeSet<String> = named.iter().cloned().collect();
    for (p, _) in procfs::tree(proc_root, pid) {
        runs.extend(runs_of(proc_root, p, run_path, None));
    }
    if procfs::process(proc_root, pid).is_none() {
        return BTreeMap::new();
    }
    runs.into_iter().map(|r| (r, vec![pid])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_holding_a_run_file_is_its_worker() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("runs/01ABC/logs");
        std::fs::create_dir_all(&run_dir).unwrap();
        let log = run_dir.join("w.log");
        // A child with its stdout in the run's log, as MOSAIC starts one.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let re = regex::Regex::new("runs/(?P<run_id>[^/]+)/").unwrap();
        let root = pattern_root(&format!("{}/runs/*/logs/*.log", tmp.path().display()));
        let found = runs(Path::new("/proc"), &re, std::slice::from_ref(&root));
        // The same process, seen by an agent whose sources are elsewhere.
        let elsewhere = tempfile::tempdir().unwrap();
        let other_root = pattern_root(&format!("{}/runs/*/logs/*.log", elsewhere.path().display()));
        let foreign = runs(Path::new("/proc"), &re, &[other_root]);
        let init = init_runs(Path::new("/proc"), child.id(), &["NAMED".into()], &re);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.get("01ABC"), Some(&vec![child.id()]), "{found:?}");
        assert!(!foreign.contains_key("01ABC"), "{foreign:?}");
        assert_eq!(init.keys().collect::<Vec<_>>(), ["01ABC", "NAMED"]);
        assert!(init_runs(Path::new("/proc"), child.id(), &["X".into()], &re).is_empty());
    }

    #[test]
    fn a_pattern_reads_under_its_part_before_the_first_wildcard() {
        assert_eq!(
            pattern_root("/nonexistent/var/trainer/runs/*/logs/*.log"),
            Path::new("/nonexistent/var/trainer/runs")
        );
        assert_eq!(
            pattern_root("/nonexistent/r/{a,b}/x.json"),
            Path::new("/nonexistent/r")
        );
        let rel = pattern_root("nonexistent-dir/runs/*/x.log");
        assert!(
            rel.is_absolute() && rel.ends_with("nonexistent-dir/runs"),
            "{rel:?}"
        );
    }
}
