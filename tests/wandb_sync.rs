//! `mosaic-shipper sync` against the W&B stand-in: a directory the real
//! wandb SDK (0.31.0) wrote in offline mode, rows staged in the journal
//! (`mode = "stage"`), directories of our own offline sink that are still
//! growing or damaged; re-runs upload nothing twice, and the marker it
//! leaves makes the real `wandb sync` skip the directory too.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::harness::{self, assert_history, gen_logs, write_config, Expected, KEY};
use support::standin::{parse_extended_json, Fault, On, StandIn};
use support::tinyproxy::Tinyproxy;

/// Logs every expected row with the SDK, offline, like a worker that was
/// instrumented with wandb directly, the way the agent logs them (each row
/// its own line, the step as `global_step`, declared the x-axis).
const SDK_OFFLINE_SCRIPT: &str = r#"
import json, sys, wandb
assert wandb.__version__ == "0.31.0", wandb.__version__
expect, run_id, exit_code = sys.argv[1], sys.argv[2], int(sys.argv[3])
def value(v):
    return float(v) if isinstance(v, str) else v
run = wandb.init(project="sdk-offline", id=run_id, name="sdk-" + run_id,
                 config={"lr": 0.00025, "algo": "ppo", "net": {"width": 64}})
run.define_metric("*", step_metric="global_step")
for line in open(expect):
    row = json.loads(line)
    values = {k: value(v) for k, v in row["values"].items()}
    values["global_step"] = row["step"]
    wandb.log(values)
run.finish(exit_code=exit_code)
"#;

fn venv_python() -> PathBuf {
    match std::env::var_os("MOSAIC_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "MOSAIC_TEST_PYTHON is not set: run the suite with scripts/test, which prepares \
             the Python venv (wandb 0.31.0) these tests need"
        ),
    }
}

/// A command with no W&B or proxy settings from the caller's environment.
fn clean(mut c: Command, dir: &Path) -> Command {
    harness::clean_env(&mut c, dir);
    c
}

/// Runs the SDK offline in `dir/sdk`; returns its offline run directory.
fn sdk_offline_run(dir: &Path, expect: &Path, run_id: &str, exit_code: i32) -> PathBuf {
    let script = dir.join("sdk_offline.py");
    std::fs::write(&script, SDK_OFFLINE_SCRIPT).unwrap();
    let wdir = dir.join("sdk");
    std::fs::create_dir_all(&wdir).unwrap();
    let mut c = clean(Command::new(venv_python()), &wdir);
    c.arg(&script)
        .arg(expect)
        .arg(run_id)
        .arg(exit_code.to_string())
        .env("WANDB_MODE", "offline")
        .env("WANDB_DIR", &wdir)
        .env("WANDB_SILENT", "true")
        .env("WANDB_CONSOLE", "off")
        .env("WANDB_DISABLE_CODE", "true")
        .env("WANDB_DISABLE_GIT", "true")
        .env("WANDB_X_DISABLE_STATS", "true")
        .env("WANDB_ERROR_REPORTING", "false")
        // Offline must not connect anywhere; if it tried, a dead port.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9");
    let mut child = harness::spawn(&mut c);
    let status = harness::wait_child(&mut child.0, Duration::from_secs(240));
    assert!(status.success(), "the wandb SDK script failed");
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

/// `mosaic-shipper sync --config <config> <args>`, with the test key;
/// waits (bounded) and returns its output.
fn sync(dir: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = harness::shipper(dir, "sync", config, args);
    c.current_dir(dir);
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let err_path = dir.join(format!("sync-stderr-{n}.log"));
    c.stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    let mut child = harness::spawn(&mut c);
    let status = harness::wait_child(&mut child.0, Duration::from_secs(180));
    Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&err_path).unwrap(),
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn file_stream_count(standin: &StandIn) -> usize {
    standin
        .requests()
        .iter()
        .filter(|r| r.is_file_stream())
        .count()
}

/// The `run-<id>.wandb` in an offline run directory.
fn log_in(run_dir: &Path) -> PathBuf {
    std::fs::read_dir(run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "wandb"))
        .unwrap_or_else(|| panic!("no .wandb file in {}", run_dir.display()))
}

fn synced(run_dir: &Path) -> bool {
    let mut marker = log_in(run_dir).into_os_string();
    marker.push(".synced");
    Path::new(&marker).exists()
}

fn assert_summary_is_last_row(summary: Option<&str>, last: &Expected) {
    let summary = parse_extended_json(summary.unwrap_or("{}"));
    for (k, want) in &last.values {
        match (summary[k].as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => assert_eq!(a, b, "summary {k}: {summary}"),
            _ => assert_eq!(&summary[k], want, "summary {k}: {summary}"),
        }
    }
}

#[test]
fn sync_uploads_a_directory_the_wandb_sdk_wrote_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run_id = "sdkoffline01";
    // Values incl. NaN and infinities (the generator writes some).
    let expected = gen_logs(dir, "01JD9X2K7M3N4P5Q6R7S8T9SDK", 300, 5);
    let expect = dir.join("expect-01JD9X2K7M3N4P5Q6R7S8T9SDK.jsonl");
    let run_dir = sdk_offline_run(dir, &expect, run_id, 3);

    let standin = StandIn::start();
    // One failing file_stream request on the way: the retry policy holds.
    standin.inject(On::FileStream, Fault::Status(503));
    let cfg = write_config(dir, &standin.base_url(), "");
    let out = sync(
        dir,
        &cfg,
        &[run_dir.to_str().unwrap()],
        &[("WANDB_API_KEY", KEY)],
    );
    assert!(out.status.success(), "sync failed:\n{}", text(&out));
    assert_eq!(standin.faults_pending(), 0, "the injected 503 was not hit");

    let runs = standin.runs();
    let got = runs
        .get(run_id)
        .unwrap_or_else(|| panic!("run not uploaded: {:?}\n{}", runs.keys(), text(&out)));
    // Every logged row, in order, at offsets 0..n, same steps and values.
    let expected: Vec<Expected> = expected
        .into_iter()
        .map(|e| Expected {
            run_id: run_id.into(),
            ..e
        })
        .collect();
    assert_history(got, &expected);
    assert_eq!(got.exit_code, Some(3), "the SDK's exit code");
    assert_eq!(got.project, "sdk-offline");
    assert_summary_is_last_row(got.summary.as_deref(), expected.last().unwrap());
    // The config the SDK logged reaches UpsertBucket, nested keys too.
    let configs: Vec<Value> = standin
        .requests()
        .iter()
        .filter(|r| r.operation().as_deref() == Some("UpsertBucket"))
        .filter_map(|r| {
            r.json()["variables"]["config"]
                .as_str()
                .map(parse_extended_json)
        })
        .collect();
    assert!(
        configs.iter().any(|c| c["lr"]["value"] == 0.00025
            && c["algo"]["value"] == "ppo"
            && c["net"]["value"]["width"] == 64),
        "config not sent: {configs:?}"
    );
    // The run files the SDK left (requirements.txt) were uploaded too.
    let puts: Vec<String> = standin
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path.clone())
        .collect();
    for f in ["wandb-summary.json", "config.yaml", "requirements.txt"] {
        assert!(
            puts.iter().any(|p| p.ends_with(f)),
            "{f} not uploaded: {puts:?}"
        );
    }
    assert!(synced(&run_dir), "not marked synced:\n{}", text(&out));
    // Plain log lines without a terminal (the progress of each run).
    assert!(text(&out).contains("uploading"), "{}", text(&out));

    // Again: nothing is uploaded twice, by us or by W&B's own tool.
    let before = standin.requests().len();
    let out = sync(
        dir,
        &cfg,
        &[run_dir.to_str().unwrap()],
        &[("WANDB_API_KEY", KEY)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already synced"), "{}", text(&out));
    let wandb = venv_python().parent().unwrap().join("wandb");
    let mut c = clean(Command::new(&wandb), dir);
    c.args(["sync"])
        .arg(&run_dir)
        .env("WANDB_BASE_URL", standin.base_url())
        .env("WANDB_API_KEY", KEY)
        .env("WANDB_ERROR_REPORTING", "false")
        .env("WANDB_SILENT", "true");
    let mut child = harness::spawn(&mut c);
    let status = harness::wait_child(&mut child.0, Duration::from_secs(120));
    assert!(status.success(), "wandb sync failed on a synced directory");
    let new: Vec<String> = standin.requests()[before..]
        .iter()
        .filter(|r| r.is_file_stream() || r.method == "PUT")
        .map(|r| r.path.clone())
        .collect();
    assert!(
        new.is_empty(),
        "a synced directory was uploaded again: {new:?}"
    );
}

/// Worker logs with a config record first and, if `finish`, a
/// run-finished record at the end.
fn worker_logs(
    dir: &Path,
    run_id: &str,
    rows: usize,
    seed: u64,
    finish: Option<i32>,
) -> Vec<Expected> {
    let expected = gen_logs(dir, run_id, rows, seed);
    let log = dir.join(format!("var/trainer/runs/{run_id}/logs/worker.log"));
    let mut text = std::fs::read_to_string(&log).unwrap();
    if let Some(code) = finish {
        text.push_str(&format!(
            "{{\"timestamp\": \"2026-11-27T18:30:00.000Z\", \"event\": \"run_finished\", \"run_id\": \"{run_id}\", \"exit_code\": {code}}}\n"
        ));
    }
    std::fs::write(&log, text).unwrap();
    expected
}

fn wandb_pending(dir: &Path, cfg: &Path) -> u64 {
    let out = harness::shipper(dir, "status", cfg, &["--json"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "wandb")
        .map(|s| s["pending"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("no wandb sink in status: {v}"))
}

#[test]
fn rows_staged_in_the_journal_upload_through_a_proxy_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = "01JD9X2K7M3N4P5Q6R7S8T9STA";
    let b = "01JD9X2K7M3N4P5Q6R7S8T9STB";
    let rows_a = worker_logs(dir, a, 240, 21, Some(4));
    let rows_b = worker_logs(dir, b, 90, 22, None);
    let standin = StandIn::start();
    // Air-gapped: rows are staged, nothing connects.
    let cfg = write_config(dir, &standin.base_url(), "mode = \"stage\"");
    harness::run_once(dir, &cfg);
    assert!(standin.requests().is_empty(), "staging contacted W&B");
    // Every metric row, a's run-finished record, and the config records
    // the generator writes.
    let staged = wandb_pending(dir, &cfg);
    assert!(staged > (rows_a.len() + rows_b.len()) as u64, "{staged}");

    // Connected, through a real proxy.
    let proxy = Tinyproxy::start(dir, None);
    let out = sync(
        dir,
        &cfg,
        &[],
        &[("WANDB_API_KEY", KEY), ("HTTP_PROXY", &proxy.url())],
    );
    assert!(out.status.success(), "sync failed:\n{}", text(&out));
    assert!(
        text(&out).contains(&format!("{staged} rows of 2 runs uploaded")),
        "{}",
        text(&out)
    );
    let logged = proxy.logged_requests();
    assert!(
        logged.iter().any(|l| l.contains("file_stream")),
        "requests did not go through the proxy: {logged:?}"
    );
    let runs = standin.runs();
    assert_history(&runs[&harness::wandb_id(a)], &rows_a);
    assert_history(&runs[&harness::wandb_id(b)], &rows_b);
    // The run-finished record completes its run; the other stays open.
    assert_eq!(runs[&harness::wandb_id(a)].exit_code, Some(4));
    assert_eq!(runs[&harness::wandb_id(b)].exit_code, None);
    assert_summary_is_last_row(
        runs[&harness::wandb_id(a)].summary.as_deref(),
        rows_a.last().unwrap(),
    );
    assert_eq!(wandb_pending(dir, &cfg), 0);

    // Again: nothing to send.
    let before = file_stream_count(&standin);
    let out = sync(
        dir,
        &cfg,
        &[],
        &[("WANDB_API_KEY", KEY), ("HTTP_PROXY", &proxy.url())],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file_stream_count(&standin), before, "{}", text(&out));
    for run in standin.runs().values() {
        assert_eq!(
            run.line_writes,
            run.history.len() as u64,
            "lines sent twice"
        );
    }
}

#[test]
fn sync_without_a_key_or_with_the_server_down_fails_clearly_and_keeps_the_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9DWN";
    let rows = worker_logs(dir, run, 50, 31, Some(0));
    let port = harness::free_port();
    let cfg = write_config(
        dir,
        &format!("http://127.0.0.1:{port}"),
        "mode = \"stage\"\ngive_up_secs = 1",
    );
    harness::run_once(dir, &cfg);
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", "")]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("sync needs a W&B API key"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains(KEY));

    // Nothing listens on the port: the sync fails after its retries,
    // naming the URL, and the rows wait in the journal.
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(!out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("stays in the journal"), "{msg}");
    assert!(!msg.contains(KEY), "the key leaked: {msg}");
    assert!(wandb_pending(dir, &cfg) > rows.len() as u64);

    // The server is back: everything arrives once.
    let standin = StandIn::start_on(port);
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_history(&standin.runs()[&harness::wandb_id(run)], &rows);
}

#[test]
fn growing_and_damaged_offline_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9GRW";
    let standin = StandIn::start();
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"",
        dir.join("wandb").display()
    );
    let cfg = write_config(dir, &standin.base_url(), &extra);
    // Our own offline sink, run not finished yet.
    let first = worker_logs(dir, run, 120, 41, None);
    harness::run_once(dir, &cfg);
    assert!(standin.requests().is_empty(), "offline mode contacted W&B");
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no exit record yet"), "{}", text(&out));
    let run_dir = std::fs::read_dir(dir.join("wandb"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .unwrap();
    assert!(!synced(&run_dir));
    assert_history(&standin.runs()[&harness::wandb_id(run)], &first);
    assert_eq!(standin.runs()[&harness::wandb_id(run)].exit_code, None);

    // More rows and the run's end: only the new lines go out.
    let log = dir.join(format!("var/trainer/runs/{run}/logs/worker.log"));
    let mut all = first.clone();
    let mut text_more = String::new();
    for i in 0..30i64 {
        let step = first.last().unwrap().step + 1000 * (i + 1);
        text_more.push_str(&format!(
            "{{\"timestamp\": \"2026-11-27T19:00:{:02}.000Z\", \"event\": \"metrics\", \"run_id\": \"{run}\", \"global_step\": {step}, \"episodic_return\": {}.5}}\n",
            i, i
        ));
    }
    text_more.push_str(&format!(
        "{{\"timestamp\": \"2026-11-27T19:01:00.000Z\", \"event\": \"run_finished\", \"run_id\": \"{run}\", \"exit_code\": 0}}\n"
    ));
    let mut old = std::fs::read_to_string(&log).unwrap();
    old.push_str(&text_more);
    std::fs::write(&log, old).unwrap();
    harness::run_once(dir, &cfg);
    let n = first.len();
    let before = standin.requests().len();
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    let offsets: Vec<u64> = standin.requests()[before..]
        .iter()
        .filter(|r| r.is_file_stream())
        .filter_map(|r| {
            r.json()
                .pointer("/files/wandb-history.jsonl/offset")
                .and_then(Value::as_u64)
        })
        .collect();
    assert_eq!(
        offsets.first().copied(),
        Some(n as u64),
        "resent old lines: {offsets:?}"
    );
    let got = &standin.runs()[&harness::wandb_id(run)];
    assert_eq!(got.history.len(), n + 30);
    assert_eq!(got.line_writes as usize, n + 30, "a line was sent twice");
    assert_eq!(got.exit_code, Some(0));
    for (i, (_, line)) in got.history.iter().skip(n).enumerate() {
        let v = parse_extended_json(line);
        assert_eq!(
            v["charts/episodic_return"].as_f64(),
            Some(i as f64 + 0.5),
            "{line}"
        );
    }
    assert!(synced(&run_dir));
    all.truncate(n);
    assert_history(
        &support::standin::RunRecord {
            history: got
                .history
                .iter()
                .take(n)
                .map(|(k, v)| (*k, v.clone()))
                .collect(),
            ..got.clone()
        },
        &all,
    );

    // A damaged copy: the good records upload, the damage is named, the
    // exit code is not trusted and the directory is not marked synced.
    let bad_dir = dir.join("bad/offline-run-20261127_190000-damaged");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let src = log_in(&run_dir);
    let mut bytes = std::fs::read(&src).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    let bad = bad_dir.join("run-damaged.wandb");
    std::fs::write(&bad, &bytes).unwrap();
    let out = sync(
        dir,
        &cfg,
        &[bad_dir.to_str().unwrap()],
        &[("WANDB_API_KEY", KEY)],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("checksum mismatch") && msg.contains("run-damaged.wandb"),
        "{msg}"
    );
    assert!(!synced(&bad_dir));
    // A path that is not an offline directory is an error, not a no-op.
    let out = sync(
        dir,
        &cfg,
        &[dir.join("nope").to_str().unwrap()],
        &[("WANDB_API_KEY", KEY)],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("nope"), "{}", text(&out));
}

#[test]
fn a_terminal_gets_a_progress_bar_per_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"",
        dir.join("wandb").display()
    );
    let cfg = write_config(dir, &standin.base_url(), &extra);
    for (i, run) in ["01JD9X2K7M3N4P5Q6R7S8T9TT1", "01JD9X2K7M3N4P5Q6R7S8T9TT2"]
        .iter()
        .enumerate()
    {
        worker_logs(dir, run, 60, 50 + i as u64, Some(0));
    }
    harness::run_once(dir, &cfg);
    // `script` gives the command a pseudo-terminal and copies what it
    // draws to its own stdout.
    let inner = format!(
        "{} sync --config {}",
        env!("CARGO_BIN_EXE_mosaic-shipper"),
        cfg.display()
    );
    let mut c = clean(Command::new("script"), dir);
    c.args(["-q", "-e", "-c", &inner, "/dev/null"])
        .env("WANDB_API_KEY", KEY)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(dir.join("tty.out")).unwrap());
    let mut child = harness::spawn(&mut c);
    let status = harness::wait_child(&mut child.0, Duration::from_secs(120));
    let drawn = std::fs::read_to_string(dir.join("tty.out")).unwrap_or_default();
    assert!(status.success(), "sync on a terminal failed: {drawn}");
    for run in ["01JD9X2K7M3N4P5Q6R7S8T9TT1", "01JD9X2K7M3N4P5Q6R7S8T9TT2"] {
        let line = drawn
            .lines()
            .rev()
            .find(|l| l.contains(run) && l.contains("lines"))
            .unwrap_or_else(|| panic!("no progress bar for {run} in:\n{drawn}"));
        assert!(line.contains("[====") && line.contains("synced"), "{line}");
    }
    // Info lines would tear the bars: on a terminal only the report.
    assert!(!drawn.contains(" INFO "), "{drawn}");
    assert_eq!(standin.runs().len(), 2);
}

#[test]
fn a_directory_that_continues_a_run_is_appended_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9CNT";
    let standin = StandIn::start();
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"",
        dir.join("wandb").display()
    );
    let cfg = write_config(dir, &standin.base_url(), &extra);
    let first = worker_logs(dir, run, 40, 61, None);
    harness::run_once(dir, &cfg);
    // The file is cut short by hand: the offline sink continues the run
    // in a second directory (docs/wandb-offline.md).
    let first_dir = std::fs::read_dir(dir.join("wandb"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let file = log_in(&first_dir);
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let log = dir.join(format!("var/trainer/runs/{run}/logs/worker.log"));
    let mut more = String::new();
    for i in 0..12i64 {
        more.push_str(&format!(
            "{{\"timestamp\": \"2099-01-01T00:00:{i:02}.000Z\", \"event\": \"metrics\", \"run_id\": \"{run}\", \"global_step\": {}, \"episodic_return\": {i}.25}}\n",
            100_000 + i
        ));
    }
    let mut text_all = std::fs::read_to_string(&log).unwrap();
    text_all.push_str(&more);
    std::fs::write(&log, text_all).unwrap();
    harness::run_once(dir, &cfg);
    assert_eq!(std::fs::read_dir(dir.join("wandb")).unwrap().count(), 2);

    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    let got = &standin.runs()[&harness::wandb_id(run)];
    // The cut lost the last record of the first file; everything else is
    // there once, the second directory's lines after the first's.
    let kept = first.len() - 1;
    assert_eq!(got.history.len(), kept + 12, "{}", text(&out));
    assert_eq!(
        got.line_writes as usize,
        kept + 12,
        "a line was overwritten"
    );
    let column = |key: &str| -> Vec<i64> {
        got.history
            .values()
            .map(|l| parse_extended_json(l)[key].as_i64().unwrap())
            .collect()
    };
    let want: Vec<i64> = first[..kept]
        .iter()
        .map(|e| e.step)
        .chain(100_000..100_012)
        .collect();
    assert_eq!(column("global_step"), want);
    // `_step` goes on counting in the second directory; the lost record's
    // number stays a gap (harmless: `_step` only orders lines).
    let lines: Vec<i64> = (0..kept as i64)
        .chain(kept as i64 + 1..kept as i64 + 13)
        .collect();
    assert_eq!(column("_step"), lines);

    // Again: no history line is sent a second time.
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    let got = &standin.runs()[&harness::wandb_id(run)];
    assert_eq!(got.line_writes as usize, kept + 12);
}

#[test]
fn a_running_agent_keeps_its_journal_and_sync_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9LCK";
    worker_logs(dir, run, 20, 71, None);
    let standin = StandIn::start();
    let cfg = write_config(dir, &standin.base_url(), "mode = \"stage\"");
    let mut agent = harness::spawn(harness::agent(dir, &cfg, &[]).current_dir(dir));
    harness::wait_for(dir, Duration::from_secs(60), "rows staged", || {
        dir.join("store/status.json").exists()
            && std::fs::read_to_string(dir.join("store/status.json"))
                .is_ok_and(|s| s.contains("\"wandb\""))
    });
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("an agent is running"), "{}", text(&out));
    assert!(standin.requests().is_empty());
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let status = harness::wait_child(&mut agent.0, Duration::from_secs(60));
    assert!(status.success());
    // Stopped: now the rows go.
    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(standin.runs().contains_key(&harness::wandb_id(run)));
}

/// Runs `mosaic-shipper <command> --config <cfg> <args>` in `dir`; asserts
/// it succeeded.
fn shipper_ok(dir: &Path, command: &str, cfg: &Path, args: &[&str]) -> String {
    let out = harness::shipper(dir, command, cfg, args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command} failed: {all}");
    all
}

#[test]
fn staged_rows_carried_in_a_bundle_upload_from_the_connected_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let (gapped, connected) = (tmp.path().join("gapped"), tmp.path().join("connected"));
    std::fs::create_dir_all(&gapped).unwrap();
    std::fs::create_dir_all(&connected).unwrap();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9BND";
    let rows = worker_logs(&gapped, run, 150, 81, Some(2));
    let standin = StandIn::start();
    // The air-gapped machine stages and exports.
    let cfg_a = write_config(&gapped, "http://127.0.0.1:9", "mode = \"stage\"");
    harness::run_once(&gapped, &cfg_a);
    let bundle = tmp.path().join("usb/bundle-01");
    shipper_ok(
        &gapped,
        "export",
        &cfg_a,
        &["--to", bundle.to_str().unwrap()],
    );
    // The connected machine imports, then syncs.
    let cfg_b = write_config(&connected, &standin.base_url(), "");
    shipper_ok(&connected, "import", &cfg_b, &[bundle.to_str().unwrap()]);
    assert!(standin.requests().is_empty(), "import must not upload");
    let out = sync(&connected, &cfg_b, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    let got = &standin.runs()[&harness::wandb_id(run)];
    assert_history(got, &rows);
    assert_eq!(got.exit_code, Some(2));
    assert_eq!(got.line_writes as usize, rows.len());
    // Importing it again is refused; syncing again sends nothing.
    let again = harness::shipper(&connected, "import", &cfg_b, &[bundle.to_str().unwrap()])
        .current_dir(&connected)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let before = file_stream_count(&standin);
    let out = sync(&connected, &cfg_b, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file_stream_count(&standin), before);
}

#[test]
fn init_modes_exit_code_is_staged_with_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9INI";
    // The worker's logs are prepared aside; CMD writes them, then fails.
    let prepared = tmp.path().join("prepared");
    std::fs::create_dir_all(&prepared).unwrap();
    let rows = gen_logs(&prepared, run, 60, 91);
    let src = prepared.join(format!("var/trainer/runs/{run}/logs"));
    let dst = dir.join(format!("var/trainer/runs/{run}/logs"));
    let standin = StandIn::start();
    let cfg = write_config(dir, &standin.base_url(), "mode = \"stage\"");
    let script = format!(
        "mkdir -p {dst} && cp {src}/* {dst}/ && exit 5",
        dst = dst.display(),
        src = src.display()
    );
    let mut child =
        harness::spawn(harness::agent(dir, &cfg, &["--", "sh", "-c", &script]).current_dir(dir));
    let status = harness::wait_child(&mut child.0, Duration::from_secs(120));
    assert_eq!(status.code(), Some(5), "{}", harness::stderr_logs(dir));
    assert!(standin.requests().is_empty(), "staging contacted W&B");

    let out = sync(dir, &cfg, &[], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    let got = &standin.runs()[&harness::wandb_id(run)];
    assert_history(got, &rows);
    assert_eq!(got.exit_code, Some(5), "the worker's exit code");
}

/// The runs whose file_stream requests come between two requests of
/// another run: none when runs are uploaded one after another.
fn interleaved_runs(standin: &StandIn) -> usize {
    let order: Vec<String> = standin
        .requests()
        .iter()
        .filter(|r| r.is_file_stream())
        .map(|r| r.path.split('/').nth(4).unwrap_or("").to_string())
        .collect();
    let mut seen_done: Vec<&String> = Vec::new();
    let mut interleaved = std::collections::BTreeSet::new();
    for (i, run) in order.iter().enumerate() {
        if i > 0 && order[i - 1] != *run {
            if seen_done.contains(&run) {
                interleaved.insert(run.clone());
            }
            seen_done.push(&order[i - 1]);
        }
    }
    interleaved.len()
}

#[test]
fn jobs_upload_runs_at_once_each_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    // Slow answers keep several runs in flight at once.
    standin.set_latency(Duration::from_millis(60));
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"\nrows_per_request = 10",
        dir.join("wandb").display()
    );
    let cfg = write_config(dir, &standin.base_url(), &extra);
    let runs: Vec<String> = (0..6)
        .map(|i| format!("01JD9X2K7M3N4P5Q6R7S8TJOB{i}"))
        .collect();
    let mut expected = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        expected.push(worker_logs(dir, run, 40 + i, 70 + i as u64, Some(0)));
    }
    harness::run_once(dir, &cfg);
    let out = sync(dir, &cfg, &["--jobs", "3"], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    let got = standin.runs();
    for (run, want) in runs.iter().zip(&expected) {
        let r = &got[&harness::wandb_id(run)];
        assert_history(r, want);
        assert_eq!(
            r.line_writes as usize,
            want.len(),
            "{run}: a line sent twice"
        );
        assert_eq!(r.exit_code, Some(0), "{run}");
    }
    assert!(
        interleaved_runs(&standin) > 0,
        "--jobs 3 uploaded the runs one after another"
    );
    // The report lists the directories in order, whatever finished first.
    let said = text(&out);
    let report: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("marked synced"))
        .collect();
    assert_eq!(report.len(), 6, "{}", text(&out));
    let mut sorted = report.clone();
    sorted.sort();
    assert_eq!(report, sorted);
    // Again: everything is marked synced, nothing is sent.
    let before = file_stream_count(&standin);
    let out = sync(dir, &cfg, &["--jobs", "3"], &[("WANDB_API_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(file_stream_count(&standin), before);
    assert_eq!(text(&out).matches("already synced").count(), 6);

    // One at a time with --jobs 1, uploaded again: no interleaving.
    let one = StandIn::start();
    one.set_latency(Duration::from_millis(20));
    let cfg = write_config(dir, &one.base_url(), &extra);
    let out = sync(
        dir,
        &cfg,
        &["--jobs", "1", "--include-synced"],
        &[("WANDB_API_KEY", KEY)],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(one.runs().len(), 6);
    assert_eq!(interleaved_runs(&one), 0);
    // A bad value is refused with a clear message.
    let out = sync(dir, &cfg, &["--jobs", "0"], &[("WANDB_API_KEY", KEY)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--jobs"), "{}", text(&out));
}
