//! The real wandb SDK (0.31.0) and its tools as test instruments: running
//! an SDK script against the stand-in or offline, `wandb sync`, W&B's own
//! `.wandb` reader, and the recording of what the SDK sends for steps
//! (tests/fixtures/wandb-sdk-steps.json, made by scripts/record-wandb-sdk).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::harness::{self, KEY};
use super::standin::{Recorded, StandIn};

/// The recording of the SDK's steps and `define_metric`.
pub const STEPS_FIXTURE: &str = "tests/fixtures/wandb-sdk-steps.json";

/// The recording of how the SDK ends a run (finished, failed, killed).
pub const STATE_FIXTURE: &str = "tests/fixtures/wandb-sdk-state.json";

/// The recording of how the SDK logs a checkpoint as a model artifact.
pub const ARTIFACTS_FIXTURE: &str = "tests/fixtures/wandb-sdk-artifacts.json";
/// A checkpoint of 2 GiB and more (multipart) and a checkpoint directory,
/// logged by the SDK.
pub const ARTIFACTS_LARGE_FIXTURE: &str = "tests/fixtures/wandb-sdk-artifacts-large.json";

/// `MOSAIC_TEST_PYTHON`, checked to have wandb 0.31.0; fails without it.
pub fn python() -> PathBuf {
    let py = std::env::var_os("MOSAIC_TEST_PYTHON").unwrap_or_else(|| {
        panic!("MOSAIC_TEST_PYTHON is not set: run the tests with scripts/test, which builds the venv with wandb=={SDK_VERSION}")
    });
    let check =
        format!("import wandb; assert wandb.__version__ == '{SDK_VERSION}', wandb.__version__");
    let ok = Command::new(&py)
        .args(["-c", &check])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&py).display()));
    assert!(
        ok.status.success(),
        "{} has no wandb {SDK_VERSION} (scripts/test installs tests/requirements.txt): {}",
        Path::new(&py).display(),
        String::from_utf8_lossy(&ok.stderr)
    );
    PathBuf::from(py)
}

/// `MOSAIC_TEST_DATASTORE_PYTHON` (wandb 0.29.0's `DataStore`).
pub fn datastore_python() -> PathBuf {
    PathBuf::from(std::env::var_os("MOSAIC_TEST_DATASTORE_PYTHON").unwrap_or_else(|| {
        panic!("MOSAIC_TEST_DATASTORE_PYTHON is not set: run the tests with scripts/test, which prepares .venv-datastore (wandb 0.29.0)")
    }))
}

/// Every record of a `.wandb` file as W&B's `DataStore` reads it
/// (tests/py/wandb_datastore_read.py); it must read to the end.
pub fn datastore_read(file: &Path) -> Vec<Value> {
    datastore_run("tests/py/wandb_datastore_read.py", file)
}

/// What `script` (a reader under tests/py/ run with the DataStore venv,
/// asserts on: it checks CRCs with `assert`) prints of `file`, one JSON
/// value per line; it must read to the end.
pub fn datastore_run(script: &str, file: &Path) -> Vec<Value> {
    let py = datastore_python();
    let out = Command::new(&py)
        .arg(harness::repo().join(script))
        .arg(file)
        .env_remove("PYTHONOPTIMIZE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(
        out.status.success(),
        "W&B's DataStore reader failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs an SDK script in `dir/<name>` with the minimal settings of
/// docs/wandb-protocol.md section 7.2: online against `standin`, or
/// offline (`None`). Returns the SDK's working directory.
pub fn run_script(
    dir: &Path,
    name: &str,
    script: &Path,
    args: &[&str],
    standin: Option<&StandIn>,
) -> PathBuf {
    let (mut c, wdir) = script_command(dir, name, script, args, standin);
    let mut child = harness::spawn(&mut c);
    let status = harness::wait_child(&mut child, Duration::from_secs(240));
    assert!(
        status.success(),
        "the wandb SDK script {} failed",
        script.display()
    );
    wdir
}

/// The command [`run_script`] runs, and the SDK's working directory, for
/// a test that runs the script itself (one that kills itself).
pub fn script_command(
    dir: &Path,
    name: &str,
    script: &Path,
    args: &[&str],
    standin: Option<&StandIn>,
) -> (Command, PathBuf) {
    let wdir = dir.join(name);
    std::fs::create_dir_all(&wdir).unwrap();
    let mut c = Command::new(python());
    c.arg(script).args(args);
    harness::clean_env(&mut c, &wdir);
    match standin {
        Some(s) => {
            c.env("WANDB_BASE_URL", s.base_url())
                .env("WANDB_API_KEY", KEY);
        }
        None => {
            c.env("WANDB_MODE", "offline");
        }
    }
    c.env("NETRC", wdir.join("no-netrc"))
        .env("HOME", &wdir)
        .env("WANDB_DIR", &wdir)
        .env("WANDB_SILENT", "true")
        .env("WANDB_CONSOLE", "off")
        .env("WANDB_DISABLE_CODE", "true")
        .env("WANDB_DISABLE_GIT", "true")
        .env("WANDB_X_DISABLE_STATS", "true")
        .env("WANDB_X_DISABLE_META", "true")
        .env("WANDB_X_SAVE_REQUIREMENTS", "false")
        .env("WANDB_ERROR_REPORTING", "false")
        // Nothing may leave 127.0.0.1: anything else meets a dead port.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1");
    (c, wdir)
}

/// The `wandb-core` processes the SDK process `pid` started (their
/// command line carries `--pid <pid>`), from /proc.
pub fn core_processes(pid: u32) -> Vec<u32> {
    let want = pid.to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let core = args.first().is_some_and(|a| a.ends_with(b"wandb-core"));
        let parent = args
            .windows(2)
            .any(|w| w[0] == b"--pid" && w[1] == want.as_bytes());
        if core && parent {
            found.push(p);
        }
    }
    found
}

/// The one `offline-run-*` directory under `wdir/wandb`.
pub fn offline_dir(wdir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(wdir.join("wandb"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("offline-run-")
        })
        .collect();
    assert_eq!(dirs.len(), 1, "one offline run directory: {dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// The `run-<id>.wandb` in an offline run directory.
pub fn log_in(run_dir: &Path) -> PathBuf {
    std::fs::read_dir(run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wandb"))
        .unwrap_or_else(|| panic!("no .wandb file in {}", run_dir.display()))
}

/// The real `wandb sync --yes <run_dir>` to `standin`; must succeed.
pub fn wandb_sync(dir: &Path, run_dir: &Path, standin: &StandIn) {
    let wandb = python().parent().unwrap().join("wandb");
    let out = Command::new(&wandb)
        .args(["sync", "--yes"])
        .arg(run_dir)
        .env_clear()
        .current_dir(dir)
        .env("WANDB_DIR", dir)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("NETRC", dir.join("no-netrc"))
        .env("WANDB_BASE_URL", standin.base_url())
        .env("WANDB_API_KEY", KEY)
        .env("WANDB_ERROR_REPORTING", "false")
        .env("WANDB_SILENT", "true")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", wandb.display()));
    assert!(
        out.status.success(),
        "wandb sync failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `_wandb.m` (the metric definitions) of the last `UpsertBucket` that
/// carried a config.
pub fn config_m(reqs: &[Recorded]) -> Value {
    let config = reqs
        .iter()
        .rev()
        .filter(|r| r.path == "/graphql" && r.operation().as_deref() == Some("UpsertBucket"))
        .find_map(|r| r.json()["variables"]["config"].as_str().map(str::to_string))
        .expect("an UpsertBucket with a config");
    let config: Value = serde_json::from_str(&config).unwrap();
    config["_wandb"]["value"]["m"].clone()
}

/// The metric records of a `.wandb` log as `DataStore` decodes them, and
/// whether each comes before the first history record.
pub fn metric_records(records: &[Value]) -> Value {
    let first_history = records
        .iter()
        .position(|r| r["type"] == "history")
        .unwrap_or(usize::MAX);
    Value::Array(
        records
            .iter()
            .enumerate()
            .filter(|(_, r)| r["type"] == "metric")
            .map(|(i, r)| {
                let mut m = r["metric"].clone();
                m["before_history"] = Value::Bool(i < first_history);
                m
            })
            .collect(),
    )
}

/// The committed recording of steps.
pub fn steps_fixture() -> Value {
    fixture(STEPS_FIXTURE)
}

/// The committed recording of artifacts.
pub fn artifacts_large_fixture() -> Value {
    fixture(ARTIFACTS_LARGE_FIXTURE)
}

pub fn artifacts_fixture() -> Value {
    fixture(ARTIFACTS_FIXTURE)
}

/// The committed recording of run ends.
pub fn state_fixture() -> Value {
    fixture(STATE_FIXTURE)
}

/// The SDK version every recording was made with: tests/requirements.txt
/// pins it, [`python`] checks the venv has it.
pub const SDK_VERSION: &str = "0.31.0";

/// The recording of the SDK's system metrics, console and files
/// (tests/wandb_system.rs).
pub const SYSTEM_FIXTURE: &str = "tests/fixtures/wandb-sdk-system.json";

/// Every committed recording of the real SDK, with the SDK script that
/// made it. Re-recording runs the SDK for minutes, so the suite does it
/// only through scripts/record-wandb-sdk; what would make a recording
/// stale is a different SDK or a changed script, and
/// `recordings_are_of_the_pinned_sdk_and_todays_scripts` checks both.
pub const RECORDINGS: &[(&str, &str)] = &[
    (STEPS_FIXTURE, "tests/py/sdk_steps.py"),
    (STATE_FIXTURE, "tests/py/sdk_state.py"),
    (OVERVIEW_FIXTURE, "tests/py/sdk_overview.py"),
    (ARTIFACTS_FIXTURE, "tests/py/sdk_artifact.py"),
    (ARTIFACTS_LARGE_FIXTURE, "tests/py/sdk_artifact_large.py"),
    (SYSTEM_FIXTURE, "tests/py/sdk_system.py"),
];

/// The SHA-256 (hex) of the SDK script that made the recording at
/// `fixture_path`, as [`stamp`] stores it.
pub fn script_sha256(fixture_path: &str) -> String {
    use sha2::Digest;
    let (_, script) = RECORDINGS
        .iter()
        .find(|(f, _)| *f == fixture_path)
        .unwrap_or_else(|| panic!("{fixture_path} is not in sdk::RECORDINGS"));
    let path = harness::repo().join(script);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `got` as it is committed: with the hash of the script that made it
/// (`script_sha256`), so that a script changed without re-recording is
/// caught without running the SDK.
pub fn stamp(got: &Value, fixture_path: &str) -> Value {
    let mut got = got.clone();
    got["script_sha256"] = Value::String(script_sha256(fixture_path));
    got
}

/// The check every `sdk_*_recording_is_current` test ends with: `got`,
/// what the real SDK sent today, equals the committed recording at
/// `fixture`; with `MOSAIC_RECORD_FIXTURES=1` (scripts/record-wandb-sdk)
/// the recording is rewritten instead. `change` says what the SDK no
/// longer does as recorded ("sends what", "ends runs as").
pub fn recording_is_current(got: &Value, fixture_path: &str, change: &str) {
    let got = &stamp(got, fixture_path);
    let path = harness::repo().join(fixture_path);
    if std::env::var_os("MOSAIC_RECORD_FIXTURES").is_some_and(|v| v == "1") {
        let mut text = serde_json::to_string_pretty(got).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    assert_eq!(
        got,
        &fixture(fixture_path),
        "the SDK no longer {change} {} recorded: run scripts/record-wandb-sdk and review the change",
        path.display()
    );
}

/// The committed recording at `name` (a path under the repository).
pub fn fixture(name: &str) -> Value {
    let path = harness::repo().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (scripts/record-wandb-sdk makes it)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// What decides the state W&B shows for a run, from its file_stream
/// requests: every request that sets `complete` (with its `exitcode`),
/// how many requests came after the first of them, and whether any said
/// `preempting`. No `complete` at all: the run stays running while
/// heartbeats come, then the server shows it crashed.
pub fn run_end(reqs: &[Recorded]) -> Value {
    let fs: Vec<Value> = reqs
        .iter()
        .filter(|r| r.is_file_stream())
        .map(Recorded::json)
        .collect();
    let completes: Vec<Value> = fs
        .iter()
        .filter(|v| v.get("complete").is_some())
        .map(|v| serde_json::json!({"complete": v["complete"], "exitcode": v["exitcode"]}))
        .collect();
    let after = fs
        .iter()
        .position(|v| v.get("complete").is_some())
        .map(|i| fs.len() - 1 - i);
    serde_json::json!({
        "complete_requests": completes,
        "requests_after_complete": after,
        "preempting": fs.iter().any(|v| v.get("preempting").is_some()),
    })
}

/// The recording of the SDK's Overview and Logs (metadata, console).
pub const OVERVIEW_FIXTURE: &str = "tests/fixtures/wandb-sdk-overview.json";

/// The committed recording of the Overview and Logs.
pub fn overview_fixture() -> Value {
    fixture(OVERVIEW_FIXTURE)
}

/// An `output.log` line with its time replaced by `<time>`, to compare
/// shapes: `<time> text` (stdout) or `ERROR <time> text` (stderr).
pub fn output_shape(line: &str) -> String {
    let re = time_pattern();
    re.replace(line, "<time>").to_string()
}

fn time_pattern() -> regex::Regex {
    regex::Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}").unwrap()
}

/// The JSON type of each key of an object ("string", "array", ...).
pub fn key_types(v: &Value) -> Value {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    Value::Object(
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::String(kind(v).into())))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The last `UpsertBucket` config's `_wandb` value.
pub fn config_wandb(reqs: &[Recorded]) -> Value {
    let config = reqs
        .iter()
        .rev()
        .filter(|r| r.path == "/graphql" && r.operation().as_deref() == Some("UpsertBucket"))
        .find_map(|r| r.json()["variables"]["config"].as_str().map(str::to_string))
        .expect("an UpsertBucket with a config");
    let config: Value = serde_json::from_str(&config).unwrap();
    config["_wandb"]["value"].clone()
}

/// Every file name CreateRunFiles asked for, sorted.
pub fn run_files_asked(reqs: &[Recorded]) -> Vec<String> {
    let mut out: Vec<String> = reqs
        .iter()
        .filter(|r| r.path == "/graphql" && r.operation().as_deref() == Some("CreateRunFiles"))
        .flat_map(|r| {
            r.json()["variables"]["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// How a client uploaded the `output.log` run file (the SDK keeps the
/// console in `files/output.log` and uploads it at the end, besides
/// streaming its lines): how many PUTs, whether every PUT came before the
/// file_stream request that completed the run and whether that request
/// lists it as uploaded, and whether its text is the streamed lines'
/// texts (without stream and time) in offset order, each with a newline.
pub fn output_file_facts(reqs: &[Recorded], console: &BTreeMap<u64, String>) -> Value {
    let puts: Vec<usize> = reqs
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.method == "PUT" && r.path.starts_with("/upload/") && r.path.ends_with("/output.log")
        })
        .map(|(i, _)| i)
        .collect();
    let complete = reqs
        .iter()
        .position(|r| r.is_file_stream() && r.json()["complete"] == Value::Bool(true));
    let listed = complete.is_some_and(|i| {
        reqs[i].json()["uploaded"]
            .as_array()
            .is_some_and(|a| a.iter().any(|f| f == "output.log"))
    });
    let text = puts
        .last()
        .map(|&i| String::from_utf8_lossy(&reqs[i].body).to_string());
    let streamed: String = console
        .values()
        .map(|l| {
            let l = l.strip_prefix("ERROR ").unwrap_or(l);
            let (_, text) = l.split_once(' ').unwrap_or(("", ""));
            format!("{text}\n")
        })
        .collect();
    serde_json::json!({
        "puts": puts.len(),
        "before_complete": complete.is_some_and(|c| puts.iter().all(|&p| p < c)),
        "listed_as_uploaded_at_complete": listed,
        "is_the_streamed_lines": text.as_deref() == Some(streamed.as_str()),
    })
}
