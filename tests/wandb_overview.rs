//! A W&B run's Overview and Logs tabs as the agent fills them, against
//! the SDK's recording (tests/fixtures/wandb-sdk-overview.json, made by
//! scripts/record-wandb-sdk): the worker's console lines once and in
//! order (init mode from its pipes, daemon mode from the run's
//! `*.stdout.log` / `*.stderr.log`), online over file_stream and offline
//! as the SDK's console records, uploaded by the real `wandb sync`;
//! `wandb-metadata.json` and `_wandb.e`; the producing machine's host for
//! rows staged on another machine; and runs whose worker tracks W&B
//! itself, left to it.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::harness::{self, wait_child, wandb_section};
use support::sdk;
use support::standin::StandIn;

/// A configuration in `dir` with the default sources' console files, the
/// default rules, jsonl on, TensorBoard off and `[sinks.wandb]` as
/// `harness::wandb_section` makes it with `extra`.
fn config(dir: &Path, base_url: &str, extra: &str, store: &str) -> PathBuf {
    let default =
        std::fs::read_to_string(harness::repo().join("config/mosaic-shipper.toml")).unwrap();
    let rules = &default
        [default.find("[[extract.rules]]").unwrap()..default.find("[sinks.jsonl]").unwrap()];
    let path = dir.join(format!("{store}.toml"));
    let text = format!(
        r#"[store]
path = "{store}"
max_bytes = 67108864

[tail]
poll_interval_ms = 100

[[sources]]
name = "worker-logs"
kind = "lines"
paths = ["var/trainer/runs/*/logs/*.log"]
console = [
  "var/trainer/runs/*/logs/*.stdout.log",
  "var/trainer/runs/*/logs/*.stderr.log",
  "var/trainer/runs/*/logs/init.*.log",
]

{rules}
[sinks.jsonl]
enabled = true

[sinks.tensorboard]
enabled = false

[sinks.wandb]
{wandb}"#,
        wandb = wandb_section(base_url, extra),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn worker_script() -> PathBuf {
    harness::repo().join("tests/py/console_worker.py")
}

/// The lines `console_worker.py RUN FIRST COUNT` prints, per stream, in
/// the order it prints them (the logging times are left out: compared by
/// their message).
fn printed(run: &str, first: usize, count: usize) -> (Vec<String>, Vec<String>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for step in first..first + count {
        out.push(format!("update {step}: collecting rollouts"));
        out.push(format!(
            "{{\"event\": \"metrics\", \"run_id\": \"{run}\", \"global_step\": {}, \"loss\": {}}}",
            step * 8,
            python_float(step as f64 / 10.0)
        ));
        err.push(format!(
            "| INFO     | __main__ | global_step={}, episodic_return={:.3}, length={}",
            step * 8 + 4,
            step as f64 + 0.5,
            10 + step
        ));
        if step % 2 == 1 {
            err.push(format!("| WARNING  | __main__ | slow env {step}"));
        }
    }
    (out, err)
}

fn python_float(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

/// Whether a console line (without its stream prefix and time) is the
/// printed line: stderr lines carry logging's time first.
fn same_line(got: &str, want: &str) -> bool {
    got == want || (want.starts_with("| ") && got.len() == 20 + want.len() && got.ends_with(want))
}

/// The SDK's `output.log` prefixes, from the recording: what a stdout and
/// a stderr line look like before their text.
fn recorded_prefixes() -> (String, String) {
    let f = sdk::overview_fixture();
    let lines = f["online"]["output_log"].as_array().unwrap();
    let out = lines[0]
        .as_str()
        .unwrap()
        .strip_suffix("console out 0")
        .unwrap();
    let err = lines[1]
        .as_str()
        .unwrap()
        .strip_suffix("console err 1")
        .unwrap();
    assert_eq!((out, err), ("<time> ", "ERROR <time> "), "recorded shapes");
    (out.to_string(), err.to_string())
}

/// Splits `output.log` lines (by offset, as the stand-in holds them) into
/// stdout and stderr texts after checking each has the SDK's shape.
fn split_console(console: &BTreeMap<u64, String>) -> (Vec<String>, Vec<String>) {
    let (out_p, err_p) = recorded_prefixes();
    let offsets: Vec<u64> = console.keys().copied().collect();
    assert_eq!(
        offsets,
        (0..console.len() as u64).collect::<Vec<_>>(),
        "output.log offsets have gaps"
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for line in console.values() {
        let shape = sdk::output_shape(line);
        if let Some(text) = shape.strip_prefix(&err_p) {
            err.push(text.to_string());
        } else if let Some(text) = shape.strip_prefix(&out_p) {
            out.push(text.to_string());
        } else {
            panic!("output.log line not in the SDK's shape: {line:?}");
        }
    }
    (out, err)
}

fn assert_lines(got: &[String], want: &[String], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:#?} vs {want:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(same_line(g, w), "{what}: {g:?} is not {w:?}");
    }
}

fn hostname() -> String {
    let out = Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Checks the metadata the agent uploaded against the SDK's recording:
/// only keys the SDK sends, each of the SDK's type; the same object as
/// `_wandb.e` under its writer id; host and program as in UpsertBucket.
fn assert_metadata_like_the_sdk(standin: &StandIn, run: &str) -> Value {
    let f = sdk::overview_fixture();
    let record = &standin.runs()[run];
    let metadata: Value = serde_json::from_slice(
        record
            .files
            .get("wandb-metadata.json")
            .expect("wandb-metadata.json uploaded"),
    )
    .unwrap();
    let types = sdk::key_types(&metadata);
    let sdk_types = &f["online"]["metadata_key_types"];
    for (k, t) in types.as_object().unwrap() {
        assert_eq!(
            &sdk_types[k], t,
            "metadata key {k}: the SDK's type is {}",
            sdk_types[k]
        );
    }
    assert_eq!(
        sdk::key_types(&metadata["memory"]),
        f["online"]["memory_total"]
    );
    for k in [
        "os",
        "host",
        "startedAt",
        "cpu_count_logical",
        "memory",
        "writerId",
    ] {
        assert!(metadata.get(k).is_some(), "metadata has no {k}: {metadata}");
    }
    let reqs = standin.requests();
    let wandb = sdk::config_wandb(&reqs);
    let writer = metadata["writerId"].as_str().unwrap();
    assert_eq!(
        wandb["e"][writer] == metadata,
        f["online"]["config_e_is_the_metadata_under_its_writer_id"] == true
    );
    assert_eq!(
        record.host.as_ref(),
        metadata["host"].as_str().map(str::to_string).as_ref()
    );
    let asked = sdk::run_files_asked(&reqs);
    let sdk_files: Vec<String> = serde_json::from_value(f["online"]["run_files"].clone()).unwrap();
    assert!(
        asked.contains(&"wandb-metadata.json".to_string()),
        "{asked:?}"
    );
    assert!(
        asked.iter().all(|a| sdk_files.contains(a)),
        "{asked:?} not among the SDK's {sdk_files:?}"
    );
    metadata
}

#[test]
fn init_mode_ships_the_workers_console_and_overview_like_the_sdk() {
    let py = sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS0000000000000000INIT";
    let run = harness::wandb_id(ulid);
    let standin = StandIn::start();
    let cfg = config(dir, &standin.base_url(), "", "store");
    let script = worker_script();
    let mut c = harness::shipper(dir, "run", &cfg, &["--"]);
    c.arg(&py).arg(&script).args([ulid, "0", "6"]);
    c.env("MOSAIC_RUN_ID", ulid);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut child = harness::spawn(&mut c);
    let status = wait_child(&mut child, Duration::from_secs(120));
    assert!(status.success(), "{}", harness::stderr_logs(dir));

    let record = &standin.runs()[&run];
    assert_eq!(record.exit_code, Some(0));
    // Every printed line once, each stream in its order, as the SDK
    // formats them.
    let (out, err) = split_console(&record.console);
    let (want_out, want_err) = printed(ulid, 0, 6);
    assert_lines(&out, &want_out, "stdout");
    assert_lines(&err, &want_err, "stderr");
    assert_eq!(
        record.console_writes,
        record.console.len() as u64,
        "a line sent twice"
    );

    // Overview: the worker's command, host and start.
    let metadata = assert_metadata_like_the_sdk(&standin, &run);
    assert_eq!(metadata["host"], hostname());
    assert_eq!(metadata["program"], script.display().to_string());
    assert_eq!(metadata["args"], serde_json::json!([ulid, "0", "6"]));
    assert_eq!(metadata["executable"], py.display().to_string());
    assert_eq!(metadata["root"], dir.display().to_string());
    // The worker's facts as the SDK fills them (recorded with the script
    // inside this checkout, given by its absolute path): the interpreter's
    // `platform` implementation and version, the script's path in the
    // checkout as codePath and codePathLocal, `/`'s size and use.
    let facts = &sdk::overview_fixture()["online"]["worker_facts"];
    let repo = harness::repo().display().to_string();
    let sdk_program = facts["program"].as_str().unwrap();
    let in_checkout = sdk_program.strip_prefix("<repo>/").unwrap();
    assert_eq!(facts["codePath"], in_checkout);
    assert_eq!(facts["codePathLocal"], in_checkout);
    let ours = metadata["program"]
        .as_str()
        .unwrap()
        .replace(&repo, "<repo>");
    let ours = ours.strip_prefix("<repo>/").unwrap();
    assert_eq!(metadata["codePath"], ours, "{metadata}");
    assert_eq!(metadata["codePathLocal"], ours, "{metadata}");
    assert_eq!(facts["python_is_implementation_and_version"], true);
    let interpreter = Command::new(&py)
        .args([
            "-c",
            "import platform; print(platform.python_implementation(), platform.python_version())",
        ])
        .output()
        .unwrap();
    assert_eq!(
        metadata["python"],
        String::from_utf8_lossy(&interpreter.stdout).trim(),
        "{metadata}"
    );
    let disk: serde_json::Map<String, Value> = metadata["disk"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), sdk::key_types(v)))
        .collect();
    assert_eq!(Value::Object(disk), facts["disk"]);
    let (total, used): (u64, u64) = (
        metadata["disk"]["/"]["total"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
        metadata["disk"]["/"]["used"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
    assert!(used <= total && total > 0, "{metadata}");
    assert_eq!(
        record.program.as_deref(),
        Some(script.display().to_string().as_str())
    );
    let t = time::OffsetDateTime::parse(
        metadata["startedAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let t = t.unix_timestamp_nanos() as f64 / 1e9;
    assert!(
        t >= started - 1.0 && t <= started + 60.0,
        "startedAt {t} vs {started}"
    );
}

/// Runs `console_worker.py` with its stdout and stderr appended to the
/// run's log files, as MOSAIC runs a worker.
fn worker_into_files(dir: &Path, ulid: &str, first: usize, count: usize) {
    let logs = dir.join("var/trainer/runs").join(ulid).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs.join(name))
            .unwrap()
    };
    let status = Command::new(sdk::python())
        .arg(worker_script())
        .args([ulid, &first.to_string(), &count.to_string()])
        .stdin(Stdio::null())
        .stdout(open("cleanrl.stdout.log"))
        .stderr(open("cleanrl.stderr.log"))
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn daemon_console_logs_reach_wandb_once_across_restarts() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS000000000000000DAEMN";
    let run = harness::wandb_id(ulid);
    let standin = StandIn::start();
    let cfg = config(dir, &standin.base_url(), "", "store");
    worker_into_files(dir, ulid, 0, 4);
    harness::run_once(dir, &cfg);
    worker_into_files(dir, ulid, 4, 3);
    harness::run_once(dir, &cfg);
    harness::run_once(dir, &cfg);

    let record = &standin.runs()[&run];
    let (out, err) = split_console(&record.console);
    let (want_out, want_err) = printed(ulid, 0, 7);
    assert_lines(&out, &want_out, "stdout");
    assert_lines(&err, &want_err, "stderr");
    assert_eq!(
        record.console_writes,
        record.console.len() as u64,
        "a line sent twice"
    );
    let metadata = assert_metadata_like_the_sdk(&standin, &run);
    assert_eq!(metadata["host"], hostname());
    // Daemon mode does not know the worker's command.
    assert!(metadata.get("program").is_none() && metadata.get("args").is_none());
}

#[test]
fn offline_console_records_are_the_sdks_and_wandb_sync_uploads_them() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS00000000000000OFFLNE";
    let run = harness::wandb_id(ulid);
    let cfg = config(dir, "http://127.0.0.1:9", "mode = \"offline\"\n", "store");
    worker_into_files(dir, ulid, 0, 3);
    harness::run_once(dir, &cfg);
    worker_into_files(dir, ulid, 3, 2);
    harness::run_once(dir, &cfg);

    let offline = dir.join("var/wandb");
    let run_dir = sdk::offline_dir(&dir.join("var"));
    assert!(run_dir.starts_with(&offline));
    let records = sdk::datastore_read(&sdk::log_in(&run_dir));
    let f = sdk::overview_fixture();
    // The SDK's record kinds and order: run, environment, console.
    let kinds: Vec<String> = records
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_string())
        .filter(|t| matches!(t.as_str(), "run" | "environment" | "output_raw" | "output"))
        .fold(Vec::new(), |mut v, t| {
            if v.last() != Some(&t) {
                v.push(t);
            }
            v
        });
    assert_eq!(Value::from(kinds), f["offline"]["record_order"]);
    let env = &records.iter().find(|r| r["type"] == "environment").unwrap()["environment"];
    assert_eq!(env["host"], hostname());
    assert!(env["startedAt"].is_string(), "the run's start: {env}");
    // `/`'s size and use, as the SDK's environment record holds them.
    assert!(env["disk"]["/"]["total"].is_string(), "{env}");
    assert!(env["disk"]["/"]["used"].is_string(), "{env}");
    assert!(
        env["os"].as_str().is_some_and(|o| o.starts_with("Linux-")),
        "{env}"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["type"] == "environment")
            .count(),
        1,
        "facts repeated"
    );
    // One raw record per line, newline included, of its stream; the SDK
    // writes a line's newline as a record of its own, the same bytes.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for r in records.iter().filter(|r| r["type"] == "output_raw") {
        let line = r["output_raw"]["line"].as_str().unwrap();
        let text = line.strip_suffix('\n').expect("a whole line").to_string();
        match r["output_raw"]["stream"].as_str().unwrap() {
            "stdout" => out.push(text),
            _ => err.push(text),
        }
    }
    let (want_out, want_err) = printed(ulid, 0, 5);
    assert_lines(&out, &want_out, "stdout records");
    assert_lines(&err, &want_err, "stderr records");

    // The real `wandb sync` makes the Logs tab of them as it does of the
    // SDK's own records.
    let standin = StandIn::start();
    sdk::wandb_sync(dir, &run_dir, &standin);
    let record = &standin.runs()[&run];
    let (out, err) = split_console(&record.console);
    assert_lines(&out, &want_out, "stdout after wandb sync");
    assert_lines(&err, &want_err, "stderr after wandb sync");
    let uploaded: Value = serde_json::from_slice(&record.files["wandb-metadata.json"]).unwrap();
    assert_eq!(uploaded["host"], hostname());
}

#[test]
fn a_worker_that_tracks_wandb_itself_is_left_to_it() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tracked = "01JDAS000000000000000TRACK";
    let plain = "01JDAS000000000000000PLAIN";
    // The worker's own W&B run: the real SDK, offline, with
    // WANDB_DIR=<run>/wandb as CleanRL's --track runs it.
    let sdk_run = "ownsdkrun01";
    let rows = dir.join("own-rows.jsonl");
    std::fs::write(&rows, "{\"step\": 1, \"values\": {\"charts/episodic_return\": 1.5}}\n{\"step\": 2, \"values\": {\"charts/episodic_return\": 2.5}}\n").unwrap();
    let wandb_dir = dir.join("var/trainer/runs").join(tracked).join("wandb");
    std::fs::create_dir_all(&wandb_dir).unwrap();
    let script = harness::repo().join("tests/py/sdk_steps.py");
    let rows_arg = rows.display().to_string();
    let (mut c, _) = sdk::script_command(dir, "own", &script, &[&rows_arg, sdk_run, tracked], None);
    c.env("WANDB_DIR", &wandb_dir);
    let mut child = harness::spawn(&mut c);
    assert!(wait_child(&mut child, Duration::from_secs(240)).success());
    let own = sdk::offline_dir(&wandb_dir);

    worker_into_files(dir, tracked, 0, 2);
    worker_into_files(dir, plain, 0, 2);
    let standin = StandIn::start();
    let cfg = config(dir, &standin.base_url(), "", "store");
    harness::run_once(dir, &cfg);
    let runs = standin.runs();
    assert!(
        runs.contains_key(&harness::wandb_id(plain)),
        "{:?}",
        runs.keys()
    );
    assert!(
        !runs.contains_key(&harness::wandb_id(tracked)),
        "a second W&B run of a tracked worker"
    );
    assert!(!standin
        .requests()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains(&harness::wandb_id(tracked))));
    // jsonl still has it.
    let jsonl = std::fs::read_to_string(
        dir.join("var/trainer/runs")
            .join(tracked)
            .join("shipper/rows.jsonl"),
    )
    .unwrap();
    assert_eq!(jsonl.lines().count(), 2, "{jsonl}");
    // The log and status say so.
    assert!(harness::stderr_logs(dir).contains("tracks W&B itself"));
    let out = harness::shipper(dir, "status", &cfg, &["--json"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let wandb = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "wandb")
        .unwrap();
    // Named as the configured worker_dir names it (relative here).
    let own_rel = own.strip_prefix(dir).unwrap().display().to_string();
    assert_eq!(wandb["left_to_worker"][tracked], own_rel);
    let out = harness::shipper(dir, "status", &cfg, &[])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains(&format!("run {tracked}: left to the worker's own W&B run")));

    // `sync` finds the worker's own offline run in its run directory.
    let synced = StandIn::start();
    let sync_cfg = config(dir, &synced.base_url(), "mode = \"stage\"\n", "sync-store");
    let mut c = harness::shipper(dir, "sync", &sync_cfg, &[]);
    let status = wait_child(&mut harness::spawn(&mut c), Duration::from_secs(120));
    assert!(status.success(), "{}", harness::stderr_logs(dir));
    assert_eq!(
        synced.runs()[sdk_run].history.len(),
        2,
        "the SDK's own run uploaded"
    );
    assert!(own.join(format!("run-{sdk_run}.wandb.synced")).exists());

    // when_worker_tracks = "ship": shipped like any run.
    let again = StandIn::start();
    let ship = config(
        dir,
        &again.base_url(),
        "when_worker_tracks = \"ship\"\n",
        "ship-store",
    );
    harness::run_once(dir, &ship);
    assert!(again.runs().contains_key(&harness::wandb_id(tracked)));
}

#[test]
fn rows_staged_on_another_machine_keep_its_host() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS000000000000000STAGE";
    let run = harness::wandb_id(ulid);
    let airgap = "airgap-box";
    assert_ne!(hostname(), airgap);
    worker_into_files(dir, ulid, 0, 3);
    log_run_completed(dir, ulid);
    // The air-gapped machine: a UTS namespace of its own with another
    // host name (util-linux's unshare), staging for W&B.
    let staged = config(
        dir,
        "http://127.0.0.1:9",
        "mode = \"stage\"\n",
        "airgap-store",
    );
    let mut c = Command::new("unshare");
    c.args([
        "--map-root-user",
        "--uts",
        "sh",
        "-c",
        "hostname \"$0\" && exec \"$@\"",
    ])
    .arg(airgap)
    .arg(env!("CARGO_BIN_EXE_mosaic-shipper"))
    .args(["run", "--once", "--config"])
    .arg(&staged)
    .current_dir(dir);
    harness::clean_env(&mut c, dir);
    let out = c.output().expect("run unshare (util-linux)");
    assert!(
        out.status.success(),
        "staging under unshare failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Carried over as a bundle, imported and synced here.
    let bundle = dir.join("bundle-01");
    let b = bundle.display().to_string();
    let st = wait_child(
        &mut harness::spawn(&mut harness::shipper(dir, "export", &staged, &["--to", &b])),
        Duration::from_secs(60),
    );
    assert!(st.success(), "{}", harness::stderr_logs(dir));
    let standin = StandIn::start();
    let here = config(
        dir,
        &standin.base_url(),
        "mode = \"stage\"\n",
        "connected-store",
    );
    let st = wait_child(
        &mut harness::spawn(&mut harness::shipper(dir, "import", &here, &[&b])),
        Duration::from_secs(60),
    );
    assert!(st.success(), "{}", harness::stderr_logs(dir));
    let st = wait_child(
        &mut harness::spawn(&mut harness::shipper(dir, "sync", &here, &[])),
        Duration::from_secs(120),
    );
    assert!(st.success(), "{}", harness::stderr_logs(dir));

    let record = &standin.runs()[&run];
    assert_eq!(record.host.as_deref(), Some(airgap), "UpsertBucket host");
    let metadata: Value = serde_json::from_slice(&record.files["wandb-metadata.json"]).unwrap();
    assert_eq!(metadata["host"], airgap);
    let (out, _) = split_console(&record.console);
    let (last, out) = out.split_last().unwrap();
    assert!(last.contains("run_completed"), "{last}");
    assert_lines(out, &printed(ulid, 0, 3).0, "stdout staged and synced");
    // The run ended where it was synced: its output.log went up there,
    // as the SDK uploads it.
    assert_eq!(record.exit_code, Some(0));
    assert_eq!(
        sdk::output_file_facts(&standin.requests(), &record.console),
        sdk::overview_fixture()["online"]["output_log_file"]
    );
}

#[test]
fn console_lines_survive_agent_kills_once_and_in_order() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS000000000000000KILLS";
    let run = harness::wandb_id(ulid);
    let standin = StandIn::start();
    // Small requests, so a kill lands between acknowledged ones.
    let cfg = config(
        dir,
        &standin.base_url(),
        "rows_per_request = 3\nflush_interval_ms = 50\n",
        "store",
    );
    let mut first = 0;
    for _ in 0..3 {
        worker_into_files(dir, ulid, first, 5);
        first += 5;
        let mut child = harness::spawn(&mut harness::agent(dir, &cfg, &[]));
        let seen = standin.runs().get(&run).map_or(0, |r| r.console.len());
        harness::wait_for(dir, Duration::from_secs(60), "new console lines", || {
            standin
                .runs()
                .get(&run)
                .is_some_and(|r| r.console.len() > seen)
        });
        // SIGKILL: no drain, no final commit.
        child.kill().unwrap();
        child.wait().unwrap();
    }
    harness::run_once(dir, &cfg);
    let record = &standin.runs()[&run];
    let (out, err) = split_console(&record.console);
    let (want_out, want_err) = printed(ulid, 0, first);
    assert_lines(&out, &want_out, "stdout after kills");
    assert_lines(&err, &want_err, "stderr after kills");
}

/// What tests/py/console_backlog.py wrote: per stream, each line with
/// the time it carries (as Python reads it; `None`: none), and the files'
/// modification time.
struct Backlog {
    mtime: f64,
    stdout: Vec<(String, Option<f64>)>,
    stderr: Vec<(String, Option<f64>)>,
}

/// Writes run `ulid`'s console files as its worker printed them `ago`
/// seconds ago.
fn write_backlog(dir: &Path, ulid: &str, ago: u32) -> Backlog {
    let run_dir = dir.join("var/trainer/runs").join(ulid);
    let out = Command::new(sdk::python())
        .arg(harness::repo().join("tests/py/console_backlog.py"))
        .arg(&run_dir)
        .arg(ago.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let lines = |s: &str| -> Vec<(String, Option<f64>)> {
        v["lines"][s]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| (l[0].as_str().unwrap().to_string(), l[1].as_f64()))
            .collect()
    };
    Backlog {
        mtime: v["mtime"].as_f64().unwrap(),
        stdout: lines("stdout"),
        stderr: lines("stderr"),
    }
}

/// The time each line of one file must show: its own, else the next
/// stamped line's of the same file, else the file's modification time;
/// never earlier than the line before.
fn expected_times(lines: &[(String, Option<f64>)], mtime: f64) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for (i, (_, own)) in lines.iter().enumerate() {
        let t = own.unwrap_or_else(|| {
            let next = lines[i + 1..].iter().find_map(|(_, t)| *t).unwrap_or(mtime);
            out.last().map_or(next, |p| next.max(*p))
        });
        out.push(t);
    }
    out
}

/// Console lines of one stream with the times they show.
type Timed = Vec<(String, f64)>;

/// `output.log` lines split by stream into (text, time).
fn timed_console(console: &BTreeMap<u64, String>) -> (Timed, Timed) {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
    );
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for line in console.values() {
        let (stderr, rest) = match line.strip_prefix("ERROR ") {
            Some(r) => (true, r),
            None => (false, line.as_str()),
        };
        let (t, text) = rest.split_once(' ').unwrap();
        let t = time::PrimitiveDateTime::parse(t, fmt)
            .unwrap()
            .assume_utc()
            .unix_timestamp_nanos() as f64
            / 1e9;
        let v = if stderr { &mut err } else { &mut out };
        v.push((text.to_string(), t));
    }
    (out, err)
}

fn assert_times(got: &[(String, f64)], want: &[(String, Option<f64>)], mtime: f64, what: &str) {
    let times = expected_times(want, mtime);
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for ((g, w), t) in got.iter().zip(want).zip(times) {
        assert_eq!(g.0, w.0, "{what}");
        assert!(
            (g.1 - t).abs() < 2e-6,
            "{what}: {:?} shows {} for {t}",
            g.0,
            g.1
        );
    }
}

/// A backlog of console lines printed an hour before the agent reads
/// them: each shows the time it carries (Python `logging`'s `asctime`,
/// a JSON logger's ISO `timestamp`), or, without one, the next stamped
/// line's or the file's modification time, never the time of reading;
/// online (`output.log` over file_stream, through the stand-in) and
/// offline (the SDK's console records, through W&B's own reader) alike.
#[test]
fn backlog_console_lines_show_when_they_were_printed_online_and_offline() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS0000000000000BACKLOG";
    let run = harness::wandb_id(ulid);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let b = write_backlog(dir, ulid, 3600);
    assert!(b.mtime < started - 3000.0, "the files are an hour old");

    let standin = StandIn::start();
    let online = config(dir, &standin.base_url(), "", "online-store");
    harness::run_once(dir, &online);
    let record = &standin.runs()[&run];
    let (out, err) = timed_console(&record.console);
    assert_times(&out, &b.stdout, b.mtime, "stdout online");
    assert_times(&err, &b.stderr, b.mtime, "stderr online");
    assert!(
        out.iter().chain(&err).all(|(_, t)| *t < started - 3000.0),
        "a line shows the time it was read"
    );

    // The same files shipped offline by another store.
    let offline = config(
        dir,
        "http://127.0.0.1:9",
        "mode = \"offline\"\n",
        "offline-store",
    );
    harness::run_once(dir, &offline);
    let run_dir = sdk::offline_dir(&dir.join("var"));
    let records = sdk::datastore_read(&sdk::log_in(&run_dir));
    let (mut o, mut e) = (Vec::new(), Vec::new());
    for r in records.iter().filter(|r| r["type"] == "output_raw") {
        let raw = &r["output_raw"];
        let text = raw["line"].as_str().unwrap().strip_suffix('\n').unwrap();
        let t = raw["timestamp"].as_f64().unwrap();
        match raw["stream"].as_str().unwrap() {
            "stdout" => o.push((text.to_string(), t)),
            _ => e.push((text.to_string(), t)),
        }
    }
    assert_times(&o, &b.stdout, b.mtime, "stdout offline");
    assert_times(&e, &b.stderr, b.mtime, "stderr offline");
    // Online and offline agree line for line.
    for (on, off) in out.iter().chain(&err).zip(o.iter().chain(&e)) {
        assert_eq!(on.0, off.0);
        assert!((on.1 - off.1).abs() < 2e-6, "{on:?} vs {off:?}");
    }
}

/// Appends the lifecycle record that ends run `ulid` to its stdout log.
fn log_run_completed(dir: &Path, ulid: &str) {
    let path = dir
        .join("var/trainer/runs")
        .join(ulid)
        .join("logs/cleanrl.stdout.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    use std::io::Write;
    writeln!(
        f,
        "{{\"event\": \"run_completed\", \"run_id\": \"{ulid}\", \"timestamp\": 1796176183.5, \"payload\": {{}}}}"
    )
    .unwrap();
}

/// The `output.log` run file goes up at the run's end as the SDK uploads
/// it (tests/fixtures/wandb-sdk-overview.json, `online.output_log_file`):
/// once, before the request that completes the run, listed in its
/// `uploaded`, holding the streamed lines' texts; across agent restarts,
/// with the lines of every start in it once, and the agent's copy under
/// its store removed once the end is committed.
#[test]
fn the_output_log_file_goes_up_once_at_the_end_as_the_sdks() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS0000000000000000CPY1";
    let run = harness::wandb_id(ulid);
    let standin = StandIn::start();
    let cfg = config(dir, &standin.base_url(), "", "store");
    worker_into_files(dir, ulid, 0, 4);
    harness::run_once(dir, &cfg);
    let copy = dir
        .join("store/wandb-output")
        .join(format!("{run}.output.log"));
    assert!(copy.exists(), "the open run's copy is kept under the store");
    worker_into_files(dir, ulid, 4, 3);
    log_run_completed(dir, ulid);
    harness::run_once(dir, &cfg);
    harness::run_once(dir, &cfg);

    let reqs = standin.requests();
    let record = &standin.runs()[&run];
    assert_eq!(record.exit_code, Some(0));
    let f = sdk::overview_fixture();
    assert_eq!(
        sdk::output_file_facts(&reqs, &record.console),
        f["online"]["output_log_file"],
        "as the SDK uploads output.log"
    );
    let asked = sdk::run_files_asked(&reqs);
    assert!(asked.contains(&"output.log".to_string()), "{asked:?}");
    let text = String::from_utf8(record.files["output.log"].clone()).unwrap();
    let (want_out, want_err) = printed(ulid, 0, 7);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), want_out.len() + want_err.len() + 1, "{text}");
    assert!(lines.last().unwrap().contains("run_completed"));
    assert!(!copy.exists(), "the copy outlived the run's end");
}

/// Offline, the run directory holds `files/output.log` as the SDK's does
/// (the console records' text); the real `wandb sync` and
/// `mosaic-shipper sync` upload it as the SDK's `wandb sync` does
/// (`wandb_sync.output_log_file` of the recording).
#[test]
fn offline_runs_keep_files_output_log_and_both_syncs_upload_it() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ulid = "01JDAS0000000000000000CPY2";
    let run = harness::wandb_id(ulid);
    let cfg = config(dir, "http://127.0.0.1:9", "mode = \"offline\"\n", "store");
    worker_into_files(dir, ulid, 0, 2);
    harness::run_once(dir, &cfg);
    worker_into_files(dir, ulid, 2, 2);
    log_run_completed(dir, ulid);
    harness::run_once(dir, &cfg);

    let run_dir = sdk::offline_dir(&dir.join("var"));
    let records = sdk::datastore_read(&sdk::log_in(&run_dir));
    let raw: String = records
        .iter()
        .filter(|r| r["type"] == "output_raw")
        .map(|r| r["output_raw"]["line"].as_str().unwrap().to_string())
        .collect();
    let file = std::fs::read_to_string(run_dir.join("files/output.log")).unwrap();
    let f = sdk::overview_fixture();
    assert_eq!(
        Value::Bool(file == raw),
        f["offline"]["files_output_log_is_the_raw_records"],
        "files/output.log:\n{file}\nrecords:\n{raw}"
    );
    let (want_out, want_err) = printed(ulid, 0, 4);
    assert_eq!(file.lines().count(), want_out.len() + want_err.len() + 1);

    let name = run_dir.file_name().unwrap();
    let (theirs_dir, ours_dir) = (dir.join("theirs").join(name), dir.join("ours").join(name));
    for d in [&theirs_dir, &ours_dir] {
        std::fs::create_dir_all(d.join("files")).unwrap();
        std::fs::copy(
            sdk::log_in(&run_dir),
            d.join(sdk::log_in(&run_dir).file_name().unwrap()),
        )
        .unwrap();
        std::fs::copy(run_dir.join("files/output.log"), d.join("files/output.log")).unwrap();
    }
    let theirs = StandIn::start();
    sdk::wandb_sync(dir, &theirs_dir, &theirs);
    let ours = StandIn::start();
    let sync_cfg = config(dir, &ours.base_url(), "", "sync-store");
    let st = wait_child(
        &mut harness::spawn(&mut harness::shipper(
            dir,
            "sync",
            &sync_cfg,
            &[ours_dir.to_str().unwrap()],
        )),
        Duration::from_secs(120),
    );
    assert!(st.success(), "{}", harness::stderr_logs(dir));
    for (who, standin) in [("wandb sync", &theirs), ("mosaic-shipper sync", &ours)] {
        let record = &standin.runs()[&run];
        assert_eq!(
            sdk::output_file_facts(&standin.requests(), &record.console),
            f["wandb_sync"]["output_log_file"],
            "{who} uploads output.log as wandb sync of the SDK's directory does"
        );
        assert_eq!(
            String::from_utf8_lossy(&record.files["output.log"]),
            file,
            "{who}"
        );
    }
}
