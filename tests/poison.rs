//! One bad run never stops a sink: hostile run ids are mapped to safe,
//! distinct names in every sink, and a run W&B refuses is set aside (kept,
//! counted, retried or dropped on request) while every other run flows,
//! exactly once across SIGKILL.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mosaic_shipper::sink::runname;
use serde_json::Value;
use support::harness::{self, gen_logs, shipper, wait_child, wait_for, write_config};
use support::sdk;
use support::standin::StandIn;

/// Run ids that keep their names (existing output must not move).
const GOOD: [&str; 3] = [
    "01JDAF0000000000000000G00D",
    "01JDAF00000000000000G00D02",
    "cartpole-ppo-1",
];

/// With a W&B sink on, a run's first rows in a process are preceded by one
/// row of the machine's facts (the W&B Overview), set aside with them.
const FACTS_ROWS: u64 = 1;

/// Run ids that broke sinks or collided, with the safe ids they collided with.
fn hostile() -> Vec<String> {
    [
        "..",
        ".",
        "a/b",
        "a_b",
        "実験-1",
        "測定-1",
        "nul\0id",
        "%2e%2e",
        "../../escape",
        "Run-A",
        "run-a",
        "sp ace:#?",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([("x".repeat(300))])
    .collect()
}

const ROWS: i64 = 5;

/// One worker log holding every run's rows (the record names its run).
fn write_log(root: &Path, ids: &[String]) {
    let dir = root.join("var/trainer/runs/host/logs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::new();
    for step in 1..=ROWS {
        for (i, id) in ids.iter().enumerate() {
            let line = serde_json::json!({
                "timestamp": 1_773_107_642.0 + step as f64,
                "level": "INFO",
                "event": "metrics",
                "run_id": id,
                "global_step": step,
                "episodic_return": (i as i64 * 100 + step) as f64,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
    }
    std::fs::write(dir.join("worker.log"), text).unwrap();
}

fn all_ids() -> Vec<String> {
    GOOD.iter()
        .map(|s| s.to_string())
        .chain(hostile())
        .collect()
}

/// The embedded default with every path inside `root` and `edits` applied.
fn config(root: &Path, edits: &[(&str, String)]) -> PathBuf {
    let r = root.display().to_string();
    let mut text = mosaic_shipper::config::EMBEDDED_DEFAULT
        .replace("path = \"var/shipper\"", &format!("path = \"{r}/store\""))
        .replace("\"var/trainer/", &format!("\"{r}/var/trainer/"));
    for (from, to) in edits {
        assert!(text.contains(from), "config has no {from:?}");
        text = text.replacen(from, to, 1);
    }
    let path = root.join("shipper.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run_once(dir: &Path, config: &Path) -> String {
    let mut child = harness::spawn(&mut shipper(dir, "run", config, &["--once"]));
    let status = wait_child(&mut child.0, Duration::from_secs(120));
    let logs = harness::stderr_logs(dir);
    assert!(status.success(), "run --once failed: {status}\n{logs}");
    logs
}

fn status_json(dir: &Path, config: &Path) -> Value {
    let out = shipper(dir, "status", config, &["--json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", harness::stderr_logs(dir));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `mosaic-shipper set-aside ARGS`: (success, stdout).
fn set_aside(dir: &Path, config: &Path, args: &[&str]) -> (bool, String) {
    let out = shipper(dir, "set-aside", config, args)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// Every file named `name` under `root`.
fn find(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            } else if e.file_name().to_string_lossy() == name {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn hostile_run_ids_reach_every_sink_under_safe_distinct_names() {
    let ids = all_ids();
    let want_steps: Vec<i64> = (1..=ROWS).collect();

    // jsonl, TensorBoard and W&B offline at once.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_log(root, &ids);
    let offline = root.join("var/wandb");
    let cfg = config(
        root,
        &[
            ("enabled = \"auto\"", "enabled = true".into()),
            ("# mode = \"online\"", "mode = \"offline\"".into()),
            (
                "# offline_dir = \"var/wandb\"",
                format!("offline_dir = \"{}\"", offline.display()),
            ),
        ],
    );
    run_once(root, &cfg);

    // jsonl: one file per run id, each in its own directory right under
    // runs/, holding that run's rows and no other's; nothing elsewhere.
    let runs = root.join("var/trainer/runs");
    let files: BTreeSet<PathBuf> = find(root, "rows.jsonl").into_iter().collect();
    let mut expected_files = BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let name = runname::path_name(id);
        let file = runs.join(&*name).join("shipper/rows.jsonl");
        let rows = harness_rows(&file);
        assert_eq!(rows.len() as i64, ROWS, "{id:?} in {}", file.display());
        for (row, step) in rows.iter().zip(1..) {
            assert_eq!(row["run_id"], id.as_str(), "{}", file.display());
            assert_eq!(row["step"], step);
            assert_eq!(
                row["values"]["charts/episodic_return"],
                (i as i64 * 100 + step) as f64
            );
        }
        expected_files.insert(file);
    }
    assert_eq!(files, expected_files, "no other rows.jsonl anywhere");
    for id in GOOD {
        assert!(
            runs.join(id).join("shipper/rows.jsonl").is_file(),
            "{id} kept its path"
        );
    }
    assert!(
        runs.join("a_b/shipper/rows.jsonl").is_file(),
        "a_b kept its path"
    );
    assert!(!root.join("var/escape").exists() && !root.parent().unwrap().join("escape").exists());

    // TensorBoard, read with its own loaders: one run per id.
    let out = Command::new(sdk::python())
        .arg(harness::repo().join("tests/py/tb_read.py"))
        .arg(&runs)
        .arg("--scalars-only")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tb: Value = serde_json::from_slice(&out.stdout).unwrap();
    let series = tb["series"].as_object().unwrap();
    assert_eq!(
        series.len(),
        ids.len(),
        "{:?}",
        series.keys().collect::<Vec<_>>()
    );
    for id in &ids {
        let run = format!("{}/tensorboard", runname::path_name(id));
        let points = series[&run]["charts/episodic_return"].as_array().unwrap();
        let steps: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
        assert_eq!(steps, want_steps, "{id:?} as {run}");
    }

    // W&B offline, read with W&B's own reader: one directory per id.
    let mut dirs = Vec::new();
    for id in &ids {
        let wid = runname::wandb_id(id);
        let file_name = format!("run-{wid}.wandb");
        let found = find(&offline, &file_name);
        assert_eq!(found.len(), 1, "{id:?}: {found:?}");
        let file = &found[0];
        assert_eq!(
            file.parent().unwrap().parent().unwrap(),
            offline,
            "{}",
            file.display()
        );
        let records = sdk::datastore_read(file);
        let run = records.iter().find(|r| r["type"] == "run").unwrap();
        assert_eq!(run["run"]["run_id"], wid.as_str());
        let steps: Vec<i64> = records
            .iter()
            .filter(|r| r["type"] == "history")
            .map(|r| {
                r["history"]["items"]["global_step"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, want_steps, "{id:?}");
        dirs.push((id.clone(), file.parent().unwrap().to_path_buf()));
    }
    // The real `wandb sync` takes the directory of a hostile id.
    let standin = StandIn::start();
    let (id, dir) = dirs.iter().find(|(id, _)| id == "..").unwrap();
    sdk::wandb_sync(root, dir, &standin);
    let synced = standin.runs();
    assert_eq!(
        synced[&runname::wandb_id(id)].history.len() as i64,
        ROWS,
        "{:?}",
        synced.keys().collect::<Vec<_>>()
    );

    // status shows every mapped id with its names.
    let status = status_json(root, &cfg);
    let mapped: BTreeMap<String, (String, String)> = status["mapped_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["run"].as_str().unwrap().to_string(),
                (
                    m["path"].as_str().unwrap().to_string(),
                    m["wandb"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    for id in &ids {
        let is_mapped = runname::is_mapped(id);
        assert_eq!(mapped.contains_key(id), is_mapped, "{id:?}");
        if is_mapped {
            assert_eq!(mapped[id].0, runname::path_name(id));
        }
    }
    assert!(!mapped.contains_key(GOOD[0]) && mapped.contains_key("a/b"));
    let text = shipper(root, "status", &cfg, &[])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("run ids shown under other names"), "{text}");
    assert!(
        text.contains(&format!("\"a/b\" -> {}", runname::path_name("a/b"))),
        "{text}"
    );

    // W&B online, against the stand-in: one W&B run per id, named as
    // W&B allows, the original id as its display name.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_log(root, &ids);
    let standin = StandIn::start();
    let cfg = config(
        root,
        &[
            ("enabled = \"auto\"", "enabled = true".into()),
            (
                "# base_url = \"https://api.wandb.ai\"",
                format!("base_url = \"{}\"", standin.base_url()),
            ),
            (
                "flush_interval_ms = 15000",
                "flush_interval_ms = 200".into(),
            ),
        ],
    );
    run_once(root, &cfg);
    let runs = standin.runs();
    let upserts = standin.requests();
    for id in &ids {
        let wid = runname::wandb_id(id);
        let run = runs
            .get(&wid)
            .unwrap_or_else(|| panic!("{id:?} as {wid}: {:?}", runs.keys().collect::<Vec<_>>()));
        let steps: Vec<i64> = run
            .history
            .values()
            .map(|l| {
                support::standin::parse_extended_json(l)["global_step"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(steps, want_steps, "{id:?}");
        assert!(
            upserts.iter().any(|r| {
                let v = r.json();
                r.operation().as_deref() == Some("UpsertBucket")
                    && v["variables"]["name"] == wid.as_str()
                    && v["variables"]["displayName"] == id.as_str()
            }),
            "{id:?}: display name"
        );
    }
    assert_eq!(runs.len(), ids.len());
    let status = status_json(root, &cfg);
    let wandb = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "wandb")
        .unwrap();
    assert_eq!(wandb["set_aside_rows"], 0, "nothing refused: {wandb}");
}

fn harness_rows(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const A: &str = "01JDAF000000000000000P0SNA";
const B: &str = "01JDAF000000000000000P0SNB";
const C: &str = "01JDAF000000000000000P0SNC";
const D: &str = "01JDAF000000000000000P0SND";

fn wandb_sink(status: &Value) -> Value {
    status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "wandb")
        .cloned()
        .unwrap()
}

#[test]
fn a_run_wandb_refuses_is_set_aside_others_flow_then_retry_delivers_and_drop_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let a = gen_logs(dir, A, 40, 1);
    let b = gen_logs(dir, B, 40, 2);
    let c = gen_logs(dir, C, 30, 3);
    let cfg = write_config(dir, &standin.base_url(), "");
    let c_id = harness::wandb_id(C);
    standin.refuse_run(Some((&c_id, 400, false)));

    let logs = run_once(dir, &cfg);
    let runs = standin.runs();
    harness::assert_history(&runs[&harness::wandb_id(A)], &a);
    harness::assert_history(&runs[&harness::wandb_id(B)], &b);
    assert!(runs.get(&c_id).map_or(true, |r| r.history.is_empty()));
    // One clear error naming the run, the sink and why.
    let refusals: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("refused run") && l.contains(C))
        .collect();
    assert_eq!(refusals.len(), 1, "{logs}");
    assert!(
        refusals[0].contains("wandb")
            && refusals[0].contains("HTTP 400")
            && refusals[0].contains("set-aside retry"),
        "{}",
        refusals[0]
    );
    // Only one request was refused: the run's later rows did not ask again.
    let refused_requests = standin
        .requests()
        .iter()
        .filter(|r| r.json().pointer("/variables/name").and_then(Value::as_str) == Some(&c_id))
        .count();
    assert_eq!(refused_requests, 1);

    let sink = wandb_sink(&status_json(dir, &cfg));
    assert_eq!(
        sink["set_aside_rows"],
        c.len() as u64 + FACTS_ROWS,
        "{sink}"
    );
    assert_eq!(
        sink["pending"], 0,
        "the cursor passed the refused rows: {sink}"
    );
    assert_eq!(sink["set_aside"][0]["run"], C);
    assert!(sink["set_aside"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("HTTP 400"));
    let (ok, listed) = set_aside(dir, &cfg, &["list"]);
    assert!(
        ok && listed.contains(C)
            && listed.contains(&format!("{} rows", c.len() as u64 + FACTS_ROWS)),
        "{listed}"
    );
    let (ok, _) = set_aside(dir, &cfg, &["retry"]);
    assert!(!ok, "retry without saying which is refused");

    // Retried while the server still refuses: set aside again, nothing lost.
    let (ok, said) = set_aside(dir, &cfg, &["retry", "--run", C, "--sink", "wandb"]);
    assert!(ok && said.contains("will retry"), "{said}");
    run_once(dir, &cfg);
    let sink = wandb_sink(&status_json(dir, &cfg));
    assert_eq!(
        sink["set_aside_rows"],
        c.len() as u64 + FACTS_ROWS,
        "{sink}"
    );
    assert_eq!(sink["set_aside"][0]["retry"], false);

    // Accepted now: the retry delivers every row once, in order.
    standin.refuse_run(None);
    set_aside(dir, &cfg, &["retry", "--run", C]);
    run_once(dir, &cfg);
    harness::assert_history(&standin.runs()[&c_id], &c);
    let sink = wandb_sink(&status_json(dir, &cfg));
    assert_eq!(sink["set_aside_rows"], 0, "{sink}");
    assert_eq!(sink["set_aside"], serde_json::json!([]));
    let (_, listed) = set_aside(dir, &cfg, &["list"]);
    assert!(listed.contains("nothing is set aside"), "{listed}");
    // A and B were not sent again.
    harness::assert_history(&standin.runs()[&harness::wandb_id(A)], &a);

    // drop: the kept rows are gone for good.
    let d_id = harness::wandb_id(D);
    standin.refuse_run(Some((&d_id, 404, false)));
    let d = gen_logs(dir, D, 10, 4);
    run_once(dir, &cfg);
    assert_eq!(
        wandb_sink(&status_json(dir, &cfg))["set_aside_rows"],
        d.len() as u64 + FACTS_ROWS
    );
    standin.refuse_run(None);
    let (ok, said) = set_aside(dir, &cfg, &["drop", "--sink", "wandb", "--run", D]);
    assert!(ok && said.contains("dropped") && said.contains(D), "{said}");
    run_once(dir, &cfg);
    assert!(standin
        .runs()
        .get(&d_id)
        .map_or(true, |r| r.history.is_empty()));
    assert_eq!(wandb_sink(&status_json(dir, &cfg))["set_aside_rows"], 0);
}

#[test]
fn a_file_stream_refusal_under_sigkill_keeps_every_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    // Slow answers, so that kills land while rows are in flight.
    standin.set_latency(Duration::from_millis(15));
    let a = gen_logs(dir, A, 600, 11);
    let b = gen_logs(dir, B, 600, 12);
    let c = gen_logs(dir, C, 600, 13);
    let cfg = write_config(
        dir,
        &standin.base_url(),
        "rows_per_request = 7\nflush_interval_ms = 50",
    );
    let c_id = harness::wandb_id(C);
    // W&B takes the run but not its history: a refusal after the run is known.
    standin.refuse_run(Some((&c_id, 404, true)));

    let mut seed = 0x9e37_79b9_u64;
    for round in 0..8 {
        let mut agent = harness::spawn(&mut harness::agent(dir, &cfg, &[]));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 700));
        unsafe { libc::kill(agent.0.id() as i32, libc::SIGKILL) };
        let status = wait_child(&mut agent.0, Duration::from_secs(10));
        assert!(!status.success(), "round {round}: killed");
    }
    run_once(dir, &cfg);
    let runs = standin.runs();
    harness::assert_history(&runs[&harness::wandb_id(A)], &a);
    harness::assert_history(&runs[&harness::wandb_id(B)], &b);
    let sink = wandb_sink(&status_json(dir, &cfg));
    // Each start that reads rows of the run journals its machine facts
    // once more (at most one per start: 8 killed, 1 to the end).
    let kept = sink["set_aside_rows"].as_u64().unwrap();
    assert!(
        (c.len() as u64 + FACTS_ROWS..=c.len() as u64 + 9 * FACTS_ROWS).contains(&kept),
        "each refused row kept once: {sink}"
    );

    standin.refuse_run(None);
    set_aside(dir, &cfg, &["retry", "--all"]);
    // Killed during the retry too.
    for round in 0..3 {
        let mut agent = harness::spawn(&mut harness::agent(dir, &cfg, &[]));
        wait_for(dir, Duration::from_secs(30), "the retry to deliver", || {
            standin
                .runs()
                .get(&c_id)
                .is_some_and(|r| r.history.len() > 50 * (round + 1))
        });
        unsafe { libc::kill(agent.0.id() as i32, libc::SIGKILL) };
        wait_child(&mut agent.0, Duration::from_secs(10));
    }
    run_once(dir, &cfg);
    harness::assert_history(&standin.runs()[&c_id], &c);
    assert_eq!(wandb_sink(&status_json(dir, &cfg))["set_aside_rows"], 0);
}

/// What HTTP Basic sends for the test key (`api:<key>`, base64).
fn basic_value() -> String {
    mosaic_shipper::sink::wandb::redact::base64(format!("api:{}", harness::KEY).as_bytes())
}

#[test]
fn graphql_errors_in_a_200_answer_set_one_run_aside_or_hold_every_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let a = gen_logs(dir, A, 20, 1);
    let c = gen_logs(dir, C, 15, 3);
    let cfg = write_config(dir, &standin.base_url(), "");
    let c_id = harness::wandb_id(C);
    // As W&B answers a name it will not take: HTTP 200, `errors`. The
    // message repeats the key (a hostile server) to check the redaction.
    let message = format!("invalid run name {c_id} (key {})", harness::KEY);
    standin.graphql_error(Some((Some(&c_id), &message)));

    let logs = run_once(dir, &cfg);
    harness::assert_history(&standin.runs()[&harness::wandb_id(A)], &a);
    assert!(standin
        .runs()
        .get(&c_id)
        .map_or(true, |r| r.history.is_empty()));
    let refusal: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("refused run") && l.contains(C))
        .collect();
    assert_eq!(refusal.len(), 1, "{logs}");
    assert!(
        refusal[0].contains("GraphQL errors") && refusal[0].contains("invalid run name"),
        "{}",
        refusal[0]
    );
    let sink = wandb_sink(&status_json(dir, &cfg));
    assert_eq!(sink["set_aside"][0]["run"], C, "{sink}");
    assert_eq!(sink["set_aside_rows"], c.len() as u64 + FACTS_ROWS);
    // Asked once: the set-aside run's later rows did not ask again.
    let asked = standin
        .requests()
        .iter()
        .filter(|r| r.json().pointer("/variables/name").and_then(Value::as_str) == Some(&c_id))
        .count();
    assert_eq!(asked, 1);

    // Errors about what every run shares (here a permission): no run is
    // set aside, `--once` gives up with a message saying what to check,
    // and the rows stay in the journal.
    standin.graphql_error(Some((
        None,
        "permission denied: this key may not write to project mosaic-test",
    )));
    let b = gen_logs(dir, B, 10, 2);
    let mut child = harness::spawn(&mut shipper(
        dir,
        "run",
        &cfg,
        &["--once", "--log-level", "debug"],
    ));
    let status = wait_child(&mut child.0, Duration::from_secs(120));
    let logs2 = harness::stderr_logs(dir);
    assert!(!status.success(), "{logs2}");
    assert!(
        logs2.contains("concern every run") && logs2.contains("permission denied"),
        "{logs2}"
    );
    let sink = wandb_sink(&status_json(dir, &cfg));
    assert_eq!(sink["set_aside"].as_array().unwrap().len(), 1, "{sink}");
    assert!(
        sink["pending"].as_u64().unwrap() >= b.len() as u64,
        "{sink}"
    );

    // Once the server takes them: B ships, C stays set aside.
    standin.graphql_error(None);
    run_once(dir, &cfg);
    harness::assert_history(&standin.runs()[&harness::wandb_id(B)], &b);
    let sink = wandb_sink(&status_json(dir, &cfg));
    assert_eq!(sink["pending"], 0, "{sink}");
    assert_eq!(sink["set_aside_rows"], c.len() as u64 + FACTS_ROWS);

    // Neither the key nor its Basic value (echoed in the error's
    // `extensions`) reached a log, at the default level or at debug.
    let mut all = harness::stderr_logs(dir);
    for e in std::fs::read_dir(dir.join("store/logs")).unwrap().flatten() {
        all.push_str(&std::fs::read_to_string(e.path()).unwrap());
    }
    assert!(all.contains("invalid run name"), "{all}");
    assert!(!all.contains(harness::KEY), "the key was logged");
    assert!(!all.contains(&basic_value()), "the Basic value was logged");
}

/// Appends steps `steps` of every run in `ids` to the one worker log.
fn append_log(root: &Path, ids: &[&str], steps: std::ops::RangeInclusive<i64>) {
    use std::io::Write;
    let dir = root.join("var/trainer/runs/host/logs");
    std::fs::create_dir_all(&dir).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("worker.log"))
        .unwrap();
    for step in steps {
        for id in ids {
            let line = serde_json::json!({
                "timestamp": 1_773_107_642.0 + step as f64, "level": "INFO",
                "event": "metrics", "run_id": id, "global_step": step,
                "episodic_return": step as f64,
            });
            writeln!(f, "{line}").unwrap();
        }
    }
}

/// `chattr +i` on paths, undone on drop (or the temp dir stays behind).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(&mut self, p: &Path) {
        let ok = Command::new("chattr").arg("+i").arg(p).status().unwrap();
        assert!(ok.success(), "chattr +i {} failed", p.display());
        self.0.push(p.to_path_buf());
    }
    fn clear(&mut self) {
        for p in self.0.drain(..) {
            let _ = Command::new("chattr").arg("-i").arg(&p).status();
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        self.clear();
    }
}

fn sink_named(status: &Value, name: &str) -> Value {
    status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no sink {name}: {status}"))
}

fn set_aside_runs(sink: &Value) -> Vec<String> {
    sink["set_aside"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"].as_str().unwrap().to_string())
        .collect()
}

/// Steps of `run` in its TensorBoard directory, read by TensorBoard.
fn tb_steps(runs: &Path, run: &str) -> Vec<i64> {
    let out = Command::new(sdk::python())
        .arg(harness::repo().join("tests/py/tb_read.py"))
        .arg(runs)
        .arg("--scalars-only")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tb: Value = serde_json::from_slice(&out.stdout).unwrap();
    tb["series"][format!("{run}/tensorboard")]["charts/episodic_return"]
        .as_array()
        .map(|ps| ps.iter().map(|p| p[0].as_i64().unwrap()).collect())
        .unwrap_or_default()
}

/// Steps in `run`'s offline run file(s), read by W&B's own reader.
fn offline_steps(offline: &Path, run: &str) -> Vec<i64> {
    let mut steps = Vec::new();
    for file in find(offline, &format!("run-{}.wandb", runname::wandb_id(run))) {
        for r in sdk::datastore_read(&file) {
            if r["type"] == "history" {
                let s = r["history"]["items"]["global_step"].as_str().unwrap();
                steps.push(s.parse().unwrap());
            }
        }
    }
    steps.sort();
    steps
}

#[test]
fn a_run_a_file_sink_cannot_write_is_set_aside_a_whole_destination_fault_holds_all() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let runs = root.join("var/trainer/runs");
    let offline = root.join("var/wandb");
    let cfg = config(
        root,
        &[
            ("enabled = \"auto\"", "enabled = true".into()),
            ("# mode = \"online\"", "mode = \"offline\"".into()),
            (
                "# offline_dir = \"var/wandb\"",
                format!("offline_dir = \"{}\"", offline.display()),
            ),
        ],
    );
    let mut frozen = Immutable(Vec::new());
    let ids = [A, B, C];
    append_log(root, &ids, 1..=5);
    // C's jsonl and TensorBoard directories are files: nothing can be
    // created under them (EEXIST / ENOTDIR).
    std::fs::create_dir_all(runs.join(C)).unwrap();
    std::fs::write(runs.join(C).join("shipper"), "not a directory").unwrap();
    std::fs::write(runs.join(C).join("tensorboard"), "not a directory").unwrap();

    let logs = run_once(root, &cfg);
    let rows = |run: &str| {
        let f = runs.join(run).join("shipper/rows.jsonl");
        if f.is_file() {
            harness_rows(&f).len()
        } else {
            0
        }
    };
    assert_eq!((rows(A), rows(B)), (5, 5));
    assert_eq!(tb_steps(&runs, A), (1..=5).collect::<Vec<_>>());
    assert_eq!(tb_steps(&runs, B), (1..=5).collect::<Vec<_>>());
    for run in ids {
        assert_eq!(
            offline_steps(&offline, run),
            (1..=5).collect::<Vec<_>>(),
            "{run}"
        );
    }
    let status = status_json(root, &cfg);
    for sink in ["jsonl", "tensorboard"] {
        let s = sink_named(&status, sink);
        assert_eq!(set_aside_runs(&s), [C], "{s}");
        assert_eq!(s["set_aside_rows"], 5 + FACTS_ROWS, "{s}");
        assert_eq!(s["pending"], 0, "{s}");
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("sink {sink} refused run")) && l.contains(C))
            .unwrap_or_else(|| panic!("no refusal by {sink}: {logs}"));
        assert!(line.contains(&runs.join(C).display().to_string()), "{line}");
    }
    assert!(set_aside_runs(&sink_named(&status, "wandb-offline")).is_empty());

    // C's offline run file made immutable: the offline sink sets C aside,
    // A and B go on there and everywhere.
    let c_file = find(&offline, &format!("run-{}.wandb", runname::wandb_id(C)));
    assert_eq!(c_file.len(), 1);
    frozen.set(&c_file[0]);
    append_log(root, &ids, 6..=10);
    run_once(root, &cfg);
    let status = status_json(root, &cfg);
    let off = sink_named(&status, "wandb-offline");
    assert_eq!(set_aside_runs(&off), [C], "{off}");
    assert_eq!(off["pending"], 0, "{off}");
    for run in [A, B] {
        assert_eq!(offline_steps(&offline, run), (1..=10).collect::<Vec<_>>());
        assert_eq!(rows(run), 10);
    }

    // The destination's shared root unwritable (new run D cannot get a
    // directory): not one run's fault, so nothing is set aside; `--once`
    // gives up and the rows wait in the journal.
    const D2: &str = "01JDAF000000000000000P0SNE";
    append_log(root, &[D2], 1..=3);
    frozen.set(&runs);
    let mut child = harness::spawn(&mut shipper(root, "run", &cfg, &["--once"]));
    let status_code = wait_child(&mut child.0, Duration::from_secs(120));
    assert!(!status_code.success(), "{}", harness::stderr_logs(root));
    let status = status_json(root, &cfg);
    for sink in ["jsonl", "tensorboard"] {
        let s = sink_named(&status, sink);
        assert_eq!(set_aside_runs(&s), [C], "{s}");
        assert!(s["pending"].as_u64().unwrap() >= 3, "{s}");
    }

    // Fixed, and retried: every kept row arrives once, D's too.
    frozen.clear();
    std::fs::remove_file(runs.join(C).join("shipper")).unwrap();
    std::fs::remove_file(runs.join(C).join("tensorboard")).unwrap();
    let (ok, said) = set_aside(root, &cfg, &["retry", "--all"]);
    assert!(ok, "{said}");
    run_once(root, &cfg);
    assert_eq!(rows(C), 10);
    assert_eq!(rows(D2), 3);
    assert_eq!(tb_steps(&runs, C), (1..=10).collect::<Vec<_>>());
    assert_eq!(offline_steps(&offline, C), (1..=10).collect::<Vec<_>>());
    let status = status_json(root, &cfg);
    for sink in ["jsonl", "tensorboard", "wandb-offline"] {
        let s = sink_named(&status, sink);
        assert_eq!(s["set_aside_rows"], 0, "{s}");
        assert_eq!(s["pending"], 0, "{s}");
    }
}

#[test]
fn set_aside_retry_and_drop_reach_a_running_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let a = gen_logs(dir, A, 20, 1);
    let c = gen_logs(dir, C, 15, 3);
    let cfg = write_config(dir, &standin.base_url(), "");
    let (a_id, c_id, d_id) = (
        harness::wandb_id(A),
        harness::wandb_id(C),
        harness::wandb_id(D),
    );
    standin.refuse_run(Some((&c_id, 400, false)));
    let mut daemon = harness::spawn(&mut shipper(dir, "run", &cfg, &[]));
    let aside = |run: &str| {
        let s = wandb_sink(&status_json(dir, &cfg));
        s["set_aside"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["run"] == run)
    };
    wait_for(
        dir,
        Duration::from_secs(60),
        "C set aside, A shipped",
        || {
            standin
                .runs()
                .get(&a_id)
                .is_some_and(|r| r.history.len() == a.len())
                && aside(C)
        },
    );

    // retry while it runs: the agent takes the request, delivers at once.
    standin.refuse_run(None);
    let (ok, said) = set_aside(dir, &cfg, &["retry", "--run", C]);
    assert!(
        ok && said.contains("will retry") && said.contains("delivers them now"),
        "{said}"
    );
    wait_for(dir, Duration::from_secs(60), "C delivered on retry", || {
        standin
            .runs()
            .get(&c_id)
            .is_some_and(|r| r.history.len() == c.len())
    });
    harness::assert_history(&standin.runs()[&c_id], &c);
    wait_for(
        dir,
        Duration::from_secs(30),
        "C no longer set aside",
        || !aside(C),
    );

    // drop while it runs.
    standin.refuse_run(Some((&d_id, 404, false)));
    gen_logs(dir, D, 10, 4);
    wait_for(dir, Duration::from_secs(60), "D set aside", || aside(D));
    let (ok, said) = set_aside(dir, &cfg, &["drop", "--run", D, "--sink", "wandb"]);
    assert!(ok && said.contains("dropped") && said.contains(D), "{said}");
    wait_for(dir, Duration::from_secs(30), "nothing set aside", || {
        wandb_sink(&status_json(dir, &cfg))["set_aside_rows"] == 0
    });

    // Still the one agent, stopping cleanly; A and C once each.
    let pid = daemon.0.id() as i32;
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = wait_child(&mut daemon.0, Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", harness::stderr_logs(dir));
    harness::assert_history(&standin.runs()[&a_id], &a);
    harness::assert_history(&standin.runs()[&c_id], &c);
    let logs = harness::stderr_logs(dir);
    assert!(logs.contains("set-aside request carried out"), "{logs}");
}
