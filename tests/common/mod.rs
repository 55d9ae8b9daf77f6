//! Helpers shared by the integration tests: a scratch MOSAIC tree, a
//! configuration pointing into it, the real binary, and the jsonl output.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_mosaic-shipper");

/// A temporary MOSAIC tree with its own store and configuration.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn logs(&self, run_id: &str) -> PathBuf {
        let p = self
            .root()
            .join("var/trainer/runs")
            .join(run_id)
            .join("logs");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn store(&self) -> PathBuf {
        self.root().join("store")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("config.toml")
    }

    /// The embedded default with every path moved into this tree.
    pub fn write_config(&self) -> PathBuf {
        self.write_config_with(&[])
    }

    /// As `write_config`, with text replacements applied to the default
    /// (each `from` must occur in it).
    pub fn write_config_with(&self, edits: &[(&str, &str)]) -> PathBuf {
        let root = self.root().display().to_string();
        let mut text = mosaic_shipper::config::EMBEDDED_DEFAULT
            .replace(
                "path = \"var/shipper\"",
                &format!("path = \"{root}/store\""),
            )
            .replace(
                "\"var/trainer/runs/",
                &format!("\"{root}/var/trainer/runs/"),
            );
        for (from, to) in edits {
            assert!(text.contains(from), "config has no {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(self.config_path(), text).unwrap();
        self.config_path()
    }

    pub fn shipper(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.root())
            .env_remove("RUST_LOG")
            .env_remove("MOSAIC_SHIPPER_CONFIG");
        c
    }

    pub fn run_once(&self) -> Output {
        let out = self.shipper(&["run", "--once"]).output().unwrap();
        assert!(
            out.status.success(),
            "run --once failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn status_json(&self) -> serde_json::Value {
        self.try_status_json()
            .unwrap_or_else(|e| panic!("status failed: {e}"))
    }

    /// `status --json`, or its error text (e.g. before the agent made the store).
    pub fn try_status_json(&self) -> Result<serde_json::Value, String> {
        let out = self.shipper(&["status", "--json"]).output().unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).to_string());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Starts the agent as a daemon; it is SIGKILLed if the test ends first.
    pub fn spawn_agent(&self, args: &[&str], stderr: std::process::Stdio) -> Agent {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Agent(self.shipper(&all).stderr(stderr).spawn().unwrap())
    }

    /// Rows the jsonl sink delivered for `run_id`, in file order.
    pub fn delivered(&self, run_id: &str) -> Vec<serde_json::Value> {
        let path = self
            .root()
            .join("var/trainer/runs")
            .join(run_id)
            .join("shipper/rows.jsonl");
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

/// A row as the tests compare them: run id, step and values (wall time is
/// checked separately where the test controls it).
pub type RowKey = (String, i64, BTreeMap<String, String>);

pub fn key(v: &serde_json::Value) -> RowKey {
    let values = v["values"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, x)| {
            // 146 and 146.0 are one number; NaN and infinities are strings.
            let text = match x.as_f64() {
                Some(f) => format!("{f:?}"),
                None => x.as_str().unwrap().to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    (
        v["run_id"].as_str().unwrap().to_string(),
        v["step"].as_i64().unwrap(),
        values,
    )
}

/// Python for the tests that read output with real Python packages, from
/// the venv `scripts/test` prepares. Missing is a failure, not a skip.
pub fn python() -> PathBuf {
    match std::env::var_os("MOSAIC_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "MOSAIC_TEST_PYTHON is not set: run the suite with scripts/test, which prepares \
             the Python venv these tests need"
        ),
    }
}

/// Runs scripts/gen-worker-logs.py (plain python3 suffices: stdlib only).
pub fn gen_logs(root: &Path, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gen-worker-logs.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(root)
        .args(args)
        .output()
        .expect("python3 is needed to generate worker logs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Reads a JSON-lines file.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A running agent, killed when dropped so a failing test leaves none behind.
pub struct Agent(pub std::process::Child);

impl Agent {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "agent did not stop on SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes `runs` runs of `rows` JSON metric lines each, fast (one write
/// per file; plain python3: stdlib only); returns the rows written.
pub fn write_heavy_logs(root: &Path, runs: usize, rows: usize) -> usize {
    let script = r#"
import os, sys
root, runs, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for r in range(runs):
    d = os.path.join(root, "var/trainer/runs/HEAVY%d/logs" % r)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "worker.log"), "w") as f:
        f.write("".join('{"event":"metrics","run_id":"HEAVY%d","global_step":%d,"episodic_return":%d.5}\n' % (r, i, i % 997) for i in range(1, rows + 1)))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(root)
        .args([runs.to_string(), rows.to_string()])
        .output()
        .expect("python3 writes the logs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    runs * rows
}
