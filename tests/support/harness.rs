//! Running the real agent binary against the stand-in, and comparing what
//! arrived with the rows the log generator says must arrive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::standin::{parse_extended_json, RunRecord};

/// The test API key (the SDK wants at least 40 word characters).
pub const KEY: &str = "k3ytestk3ytestk3ytestk3ytestk3ytestk3yte";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Python for helper scripts: the test venv's, else python3.
pub fn python() -> String {
    std::env::var("MOSAIC_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// One row the agent must deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub run_id: String,
    pub step: i64,
    pub values: BTreeMap<String, Value>,
}

/// Writes worker logs for `run_id` under `root`; returns the expected rows.
pub fn gen_logs(root: &Path, run_id: &str, rows: usize, seed: u64) -> Vec<Expected> {
    let expect = root.join(format!("expect-{run_id}.jsonl"));
    let out = Command::new(python())
        .arg(repo().join("scripts/gen-worker-logs.py"))
        .arg(root)
        .args([
            "--rows",
            &rows.to_string(),
            "--run-id",
            run_id,
            "--seed",
            &seed.to_string(),
            "--max-bytes",
            "8000",
        ])
        .arg("--expect")
        .arg(&expect)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} for scripts/gen-worker-logs.py: {e}",
                python()
            )
        });
    assert!(
        out.status.success(),
        "gen-worker-logs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_expected(&expect)
}

/// The metric rows of an `--expect` file (lines without a step, such as
/// run events a test added, are left out).
pub fn read_expected(path: &Path) -> Vec<Expected> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("step").is_some())
        .map(|v| Expected {
            run_id: v["run_id"].as_str().unwrap().to_string(),
            step: v["step"].as_i64().unwrap(),
            values: v["values"]
                .as_object()
                .unwrap()
                .clone()
                .into_iter()
                .collect(),
        })
        .collect()
}

/// A config for the agent in `dir`, W&B sink on, jsonl off; `extra`
/// lines (`key = value`) replace or add to `[sinks.wandb]`.
pub fn write_config(dir: &Path, base_url: &str, extra: &str) -> PathBuf {
    let path = dir.join("shipper.toml");
    let default = std::fs::read_to_string(repo().join("config/mosaic-shipper.toml")).unwrap();
    // The rules of the documented default, with paths inside `dir`.
    let rules_start = default.find("[[extract.rules]]").unwrap();
    let rules_end = default.find("[sinks.jsonl]").unwrap();
    let text = format!(
        "[store]\npath = \"{store}\"\nmax_bytes = 1048576\n\n[tail]\nsources = [\"{root}/var/trainer/runs/*/logs/*.log\"]\npoll_interval_ms = 100\n\n{rules}\n[sinks.jsonl]\nenabled = false\n\n[sinks.wandb]\n{wandb}",
        store = dir.join("store").display(),
        root = dir.display(),
        rules = &default[rules_start..rules_end],
        wandb = wandb_section(base_url, extra),
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn wandb_section(base_url: &str, extra: &str) -> String {
    let defaults = format!(
        "enabled = true\nbase_url = \"{base_url}\"\nproject = \"mosaic-test\"\nrows_per_request = 25\nflush_interval_ms = 200\nidle_finish_secs = 0\ntimeout_ms = 1500\nretry_initial_ms = 100\nretry_max_ms = 1000\ngive_up_secs = 20\n"
    );
    let key = |l: &str| l.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = extra.lines().filter(|l| l.contains('=')).map(key).collect();
    let mut out: String = defaults
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(extra);
    out.push('\n');
    out
}

/// The agent command with a clean environment: no W&B or proxy variables
/// from the caller, HOME in the test dir, the test key.
pub fn agent(dir: &Path, config: &Path, args: &[&str]) -> Command {
    shipper(dir, "run", config, args)
}

/// Keeps the caller's W&B, proxy, netrc, systemd credential and log
/// settings from `c`, and
/// points HOME and NETRC into `dir`: a test sees only what it sets.
pub fn clean_env(c: &mut Command, dir: &Path) {
    for (k, _) in std::env::vars() {
        let u = k.to_ascii_uppercase();
        if u.starts_with("WANDB_")
            || u.ends_with("_PROXY")
            || matches!(u.as_str(), "NETRC" | "RUST_LOG" | "CREDENTIALS_DIRECTORY")
        {
            c.env_remove(&k);
        }
    }
    c.env("HOME", dir).env("NETRC", dir.join("no-netrc"));
}

/// `mosaic-shipper <command> --config <config> <args>` in `dir`, with the
/// clean environment of [`agent`].
pub fn shipper(dir: &Path, command: &str, config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"));
    c.arg(command).arg("--config").arg(config).args(args);
    // Relative paths of the configuration (a sink's default directory)
    // land in the test's directory, not in the repository's var/.
    c.current_dir(dir);
    clean_env(&mut c, dir);
    c.env("WANDB_API_KEY", KEY);
    // stderr to a file: a pipe nobody reads could block the agent. A new
    // file for every agent, never one an earlier agent wrote (counting the
    // directory's entries could repeat a number when the agent's own files
    // come and go, and lose that agent's log).
    let log = (0..10_000)
        .find_map(|n| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(format!("agent-stderr-{n}.log")))
                .ok()
        })
        .expect("a new agent-stderr-N.log");
    c.stdout(Stdio::null()).stderr(log);
    c
}

/// `run --once` in `dir` to the end (bounded); asserts it succeeded.
pub fn run_once(dir: &Path, config: &Path) {
    let mut child = spawn(agent(dir, config, &["--once"]).current_dir(dir));
    let status = wait_child(&mut child.0, Duration::from_secs(120));
    assert!(status.success(), "agent failed:\n{}", stderr_logs(dir));
}

/// Everything the agents wrote to stderr in `dir`.
pub fn stderr_logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with("agent-stderr-") {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// Waits for `cond` for at most `limit`, polling; on timeout the panic
/// shows the agents' logs from `dir`.
pub fn wait_for(dir: &Path, limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = stderr_logs(dir);
    let tail: String = logs
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    panic!("timed out after {limit:?} waiting for {what}; agent log tail:\n{tail}");
}

/// A child process killed (SIGKILL) and reaped when dropped, so that a
/// failing test leaves no agent running.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `cmd`; the child is killed if the test ends first.
pub fn spawn(cmd: &mut Command) -> KillOnDrop {
    KillOnDrop(cmd.spawn().expect("start the agent"))
}

/// Waits for a child with a bound; kills it and panics on timeout.
pub fn wait_child(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("agent did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The W&B run id the agent uses for a MOSAIC run id.
pub fn wandb_id(run_id: &str) -> String {
    run_id.to_ascii_lowercase()
}

/// Checks a run's reconstructed history against the expected rows:
/// offsets 0..n without gaps, one line per row, `_step` = the line's
/// number (W&B's TensorBoard-sync counting), `global_step` = the row's
/// step, same values, and the W&B fields every line must carry.
pub fn assert_history(run: &RunRecord, expected: &[Expected]) {
    let offsets: Vec<u64> = run.history.keys().copied().collect();
    let want: Vec<u64> = (0..expected.len() as u64).collect();
    assert_eq!(
        offsets.len(),
        want.len(),
        "history has {} lines, {} rows were logged",
        offsets.len(),
        want.len()
    );
    assert_eq!(offsets, want, "history offsets have gaps");
    let mut prev_runtime = f64::MIN;
    for ((offset, line), exp) in run.history.iter().zip(expected) {
        let v = parse_extended_json(line);
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("history line is not an object: {line}"));
        assert_eq!(obj["_step"].as_i64(), Some(*offset as i64), "line {line}");
        assert_eq!(obj["global_step"].as_i64(), Some(exp.step), "line {line}");
        let runtime = obj["_runtime"].as_f64().expect("_runtime");
        assert!(
            runtime >= 0.0 && runtime >= prev_runtime - 1e-9,
            "_runtime goes back: {line}"
        );
        prev_runtime = runtime;
        assert!(obj["_timestamp"].as_f64().expect("_timestamp") > 1.0e9);
        let values: BTreeMap<String, Value> = obj
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "_step" | "_runtime" | "_timestamp" | "global_step"
                )
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            values.len(),
            exp.values.len(),
            "keys differ: {line} vs {:?}",
            exp.values
        );
        for (k, want) in &exp.values {
            let got = values
                .get(k)
                .unwrap_or_else(|| panic!("{k} missing in {line}"));
            match (got.as_f64(), want.as_f64()) {
                (Some(a), Some(b)) => assert_eq!(a, b, "{k} in {line}"),
                _ => assert_eq!(got, want, "{k} in {line}"),
            }
        }
    }
}

/// Appends one MOSAIC lifecycle event (`run_completed`, `run_failed`,
/// `run_cancelled`; `payload` e.g. `{"exit_code": 2}`) for `run_id` to
/// the run's `logs/lifecycle.log` under `root`, as a worker prints it.
pub fn lifecycle(root: &Path, run_id: &str, event: &str, payload: Option<Value>) {
    use std::io::Write;
    let logs = root.join("var/trainer/runs").join(run_id).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut line = serde_json::json!({
        "event": event,
        "run_id": run_id,
        "timestamp": 1_795_000_000.5,
    });
    if let Some(p) = payload {
        line["payload"] = p;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join("lifecycle.log"))
        .unwrap();
    writeln!(f, "{line}").unwrap();
}
