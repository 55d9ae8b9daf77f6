//! A MOSAIC tree as the real workers write it (scripts/gen-mosaic-runs.py:
//! CleanRL PPO and DQN, XuanCe, Ray RLlib and a python-json-logger worker,
//! with their text logs, event files, result.json and configuration
//! documents), shipped by `mosaic-shipper run --once` with the embedded
//! default and nothing else (the binary runs in the tree, paths relative),
//! then checked point by point in every sink against what the generator
//! says it wrote:
//!
//! - jsonl: every point once (points written twice by the worker, to a
//!   text log and its event file, once);
//! - TensorBoard, read back with the real `tensorboard` package: exactly
//!   the worker's own event points in each run directory (counts per tag,
//!   no point twice), plus the agent's file only for the run whose worker
//!   writes none;
//! - W&B offline, read back with W&B's own `.wandb` reader: every point
//!   once at `global_step` = the worker's step, `_step` counting rows, the
//!   configuration document as the run's config;
//! - W&B online against the stand-in: the same history.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::harness::{self, KEY};
use support::sdk;
use support::standin::{parse_extended_json, StandIn};

/// 2026-03-10T01:54:00Z, as in ../shared/worker-formats.md's examples.
const T0: &str = "1773107640";

/// (run, metric, step, value as text).
type Point = (String, String, i64, String);

/// A value as the tests compare them: `{:?}` of the f64, or the string
/// W&B and jsonl use for NaN and the infinities.
fn text(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{:?}", n.as_f64().unwrap()),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => "NaN".into(),
            "Infinity" | "inf" => "Infinity".into(),
            "-Infinity" | "-inf" => "-Infinity".into(),
            other => match other.parse::<f64>() {
                Ok(f) => format!("{f:?}"),
                Err(_) => panic!("not a number: {other:?}"),
            },
        },
        Value::Bool(b) => format!("{:?}", if *b { 1.0 } else { 0.0 }),
        other => panic!("not a number: {other}"),
    }
}

/// TensorBoard's view: run directory (relative to var/trainer/runs) ->
/// tag -> multiset of (step, f32 bits of the value).
type Series = BTreeMap<String, BTreeMap<String, BTreeMap<(i64, u32), usize>>>;

/// What the generator wrote and the sinks must receive.
struct Expected {
    doc: Value,
}

impl Expected {
    fn runs(&self) -> BTreeMap<String, Value> {
        self.doc["runs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn points(&self) -> &[Value] {
        self.doc["points"].as_array().unwrap()
    }

    /// The points `sink` must receive, as a multiset.
    fn for_sink(&self, sink: &str) -> BTreeMap<Point, usize> {
        let mut out = BTreeMap::new();
        for p in self.points() {
            if p["sinks"].as_array().unwrap().iter().any(|s| s == sink) {
                let key = (
                    p["run"].as_str().unwrap().to_string(),
                    p["metric"].as_str().unwrap().to_string(),
                    p["step"].as_i64().unwrap(),
                    text(&p["value"]),
                );
                *out.entry(key).or_default() += 1;
            }
        }
        out
    }

    /// The points TensorBoard must show.
    fn tensorboard(&self) -> Series {
        let mut out = Series::new();
        for p in self.points() {
            if !p["sinks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "tensorboard")
            {
                continue;
            }
            let tb = p["tb"].as_array().unwrap();
            let v: f64 = text(&p["value"]).parse().unwrap();
            *out.entry(tb[0].as_str().unwrap().to_string())
                .or_default()
                .entry(tb[1].as_str().unwrap().to_string())
                .or_default()
                .entry((p["step"].as_i64().unwrap(), (v as f32).to_bits()))
                .or_default() += 1;
        }
        out
    }
}

/// Writes the tree into `dir` with the real libraries (the test venv's
/// Python: tensorboard, tensorboardX, python-json-logger).
fn generate(dir: &Path, seed: u64) -> Expected {
    let expect = dir.join("expect.json");
    let out = Command::new(sdk::python())
        .arg(harness::repo().join("scripts/gen-mosaic-runs.py"))
        .arg(dir)
        .args(["--seed", &seed.to_string(), "--time", T0])
        .arg("--expect")
        .arg(&expect)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-mosaic-runs.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&expect).unwrap()).unwrap();
    let e = Expected { doc };
    // The tree has what the test is about.
    let workers: BTreeSet<String> = e
        .runs()
        .values()
        .map(|r| r["worker"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        workers.len(),
        5,
        "five worker shapes: {workers:?} ({})",
        String::from_utf8_lossy(&out.stdout)
    );
    let twins = e.points().iter().filter(|p| p["twin"] == true).count();
    assert!(twins > 20, "points written twice by the workers: {twins}");
    e
}

/// `mosaic-shipper run --once` in `dir` with the embedded default (no
/// --config), the caller's W&B settings removed and `env` set.
fn run_once(dir: &Path, env: &[(&str, String)]) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"));
    c.args(["run", "--once"]).current_dir(dir);
    harness::clean_env(&mut c, dir);
    c.env_remove("MOSAIC_SHIPPER_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let log = std::fs::File::create(dir.join("agent-stderr-once.log")).unwrap();
    c.stdout(std::process::Stdio::null()).stderr(log);
    let mut child = harness::spawn(&mut c);
    let status = harness::wait_child(&mut child, Duration::from_secs(90));
    assert!(
        status.success(),
        "run --once failed:\n{}",
        harness::stderr_logs(dir)
    );
}

fn diff(what: &str, got: &BTreeMap<Point, usize>, want: &BTreeMap<Point, usize>) {
    if got == want {
        return;
    }
    let missing: Vec<_> = want
        .iter()
        .filter(|(k, n)| got.get(*k).copied().unwrap_or(0) < **n)
        .take(12)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, n)| want.get(*k).copied().unwrap_or(0) < **n)
        .take(12)
        .collect();
    let count = |m: &BTreeMap<Point, usize>| m.values().sum::<usize>();
    panic!(
        "{what}: {} points received, {} expected\nmissing or too few (first 12): {missing:#?}\nunexpected or too many (first 12): {extra:#?}",
        count(got),
        count(want)
    );
}

/// Every point of the jsonl sink's files.
fn jsonl_points(dir: &Path, runs: &BTreeMap<String, Value>) -> BTreeMap<Point, usize> {
    let mut out = BTreeMap::new();
    for run in runs.keys() {
        let path = dir.join(format!("var/trainer/runs/{run}/shipper/rows.jsonl"));
        let text_ = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}: run {run} not shipped", path.display()));
        for line in text_.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            assert_eq!(row["run_id"], run.as_str(), "{line}");
            let step = row["step"].as_i64().unwrap();
            for (metric, v) in row["values"].as_object().unwrap() {
                *out.entry((run.clone(), metric.clone(), step, text(v)))
                    .or_default() += 1;
            }
        }
    }
    out
}

/// What TensorBoard's own loaders read under var/trainer/runs.
fn tensorboard_read(dir: &Path) -> Series {
    let out = Command::new(sdk::python())
        .arg(harness::repo().join("tests/py/tb_read.py"))
        .arg(dir.join("var/trainer/runs"))
        .arg("--scalars-only")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tb_read.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut series = Series::new();
    for (run, tags) in v["series"].as_object().unwrap() {
        for (tag, points) in tags.as_object().unwrap() {
            for p in points.as_array().unwrap() {
                let key = (p[0].as_i64().unwrap(), p[2].as_u64().unwrap() as u32);
                *series
                    .entry(run.clone())
                    .or_default()
                    .entry(tag.clone())
                    .or_default()
                    .entry(key)
                    .or_default() += 1;
            }
        }
    }
    // Directories whose tags are all non-scalar (none here) would be absent.
    series.retain(|_, tags| {
        tags.retain(|_, p| !p.is_empty());
        !tags.is_empty()
    });
    series
}

/// The one offline run directory of `run` under var/wandb.
fn offline_dir(dir: &Path, run: &str) -> PathBuf {
    let id = harness::wandb_id(run);
    let dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("var/wandb"))
        .unwrap_or_else(|e| panic!("var/wandb: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("offline-run-") && n.ends_with(&format!("-{id}"))
        })
        .collect();
    assert_eq!(dirs.len(), 1, "one offline directory for {run}: {dirs:?}");
    dirs.into_iter().next().unwrap()
}

/// History points of history rows given as (items), checking the W&B
/// step fields: `_step` counts rows from 0, `global_step` is present.
fn history_points(
    who: &str,
    run: &str,
    rows: &[BTreeMap<String, Value>],
    out: &mut BTreeMap<Point, usize>,
) {
    for (i, items) in rows.iter().enumerate() {
        assert_eq!(
            items.get("_step").and_then(Value::as_f64),
            Some(i as f64),
            "{who} {run}: _step counts rows: {items:?}"
        );
        let step = items
            .get("global_step")
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{who} {run}: no global_step in {items:?}"));
        assert_eq!(step.fract(), 0.0, "{items:?}");
        for (k, v) in items {
            if k.starts_with('_') || k == "global_step" {
                continue;
            }
            *out.entry((run.to_string(), k.clone(), step as i64, text(v)))
                .or_default() += 1;
        }
    }
}

#[test]
fn a_mosaic_tree_reaches_every_sink_point_by_point() {
    let started = Instant::now();
    // Online first, in its own copy of the tree (the same seed and time
    // give the same runs): the stand-in records the history.
    let online = tempfile::tempdir().unwrap();
    let standin = StandIn::start();
    let expected_online = generate(online.path(), 5);
    run_once(
        online.path(),
        &[
            ("WANDB_API_KEY", KEY.to_string()),
            ("WANDB_BASE_URL", standin.base_url()),
        ],
    );

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let expected = generate(dir, 5);
    assert_eq!(
        expected.runs(),
        expected_online.runs(),
        "the same seed and time give the same tree"
    );
    run_once(dir, &[("WANDB_MODE", "offline".to_string())]);
    let runs = expected.runs();

    // jsonl: every point once.
    diff(
        "jsonl",
        &jsonl_points(dir, &runs),
        &expected.for_sink("jsonl"),
    );

    // TensorBoard: each directory holds what its writer wrote, the agent
    // added a file only where the worker wrote none.
    let series = tensorboard_read(dir);
    let want = expected.tensorboard();
    let got_dirs: BTreeSet<&String> = series.keys().collect();
    let want_dirs: BTreeSet<&String> = want.keys().collect();
    assert_eq!(got_dirs, want_dirs, "TensorBoard run directories");
    for (d, tags) in &want {
        let got = &series[d];
        let counts = |t: &BTreeMap<String, BTreeMap<(i64, u32), usize>>| {
            t.iter()
                .map(|(k, v)| (k.clone(), v.values().sum::<usize>()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(counts(got), counts(tags), "{d}: points per tag");
        assert_eq!(got, tags, "{d}: (step, value) per tag");
    }
    for (run, r) in &runs {
        if r["event_files"] == false {
            assert!(
                series.contains_key(&format!("{run}/tensorboard")),
                "the agent writes TensorBoard for {run}, whose worker writes no event file"
            );
        }
    }
    // No (tag, step, value) twice in one run, across all its files: the
    // worker's own and any the agent wrote.
    for run in runs.keys() {
        let mut seen: BTreeMap<(String, i64, u32), usize> = BTreeMap::new();
        for (d, tags) in &series {
            if d.split('/').next() == Some(run.as_str()) {
                for (tag, points) in tags {
                    for ((step, bits), n) in points {
                        *seen.entry((tag.clone(), *step, *bits)).or_default() += n;
                    }
                }
            }
        }
        let mut want_seen: BTreeMap<(String, i64, u32), usize> = BTreeMap::new();
        for (d, tags) in &want {
            if d.split('/').next() == Some(run.as_str()) {
                for (tag, points) in tags {
                    for ((step, bits), n) in points {
                        *want_seen.entry((tag.clone(), *step, *bits)).or_default() += n;
                    }
                }
            }
        }
        assert_eq!(seen, want_seen, "{run}: TensorBoard shows a point twice");
    }

    // W&B offline, read with W&B's own reader.
    let mut offline = BTreeMap::new();
    for run in runs.keys() {
        let records = sdk::datastore_read(&sdk::log_in(&offline_dir(dir, run)));
        let rows: Vec<BTreeMap<String, Value>> = records
            .iter()
            .filter(|r| r["type"] == "history")
            .map(|r| {
                r["history"]["items"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), parse_extended_json(v.as_str().unwrap())))
                    .collect()
            })
            .collect();
        history_points("offline", run, &rows, &mut offline);
        // The configuration document is the run's config.
        let config: BTreeMap<String, Value> = records
            .iter()
            .filter(|r| r["type"] == "config")
            .flat_map(|r| r["config"].as_object().unwrap().clone())
            .collect();
        let doc: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("var/trainer/configs/config-{run}.json")))
                .unwrap(),
        )
        .unwrap();
        let name = config
            .get("run_name")
            .unwrap_or_else(|| panic!("{run}: no run_name in the W&B config {config:?}"));
        assert_eq!(
            parse_extended_json(name.as_str().unwrap()),
            doc["run_name"],
            "{run}"
        );
    }
    diff("W&B offline", &offline, &expected.for_sink("wandb"));

    // W&B online, from the stand-in's history.
    let got_runs = standin.runs();
    let mut online_points = BTreeMap::new();
    for run in runs.keys() {
        let rec = got_runs
            .get(&harness::wandb_id(run))
            .unwrap_or_else(|| panic!("no W&B run for {run}"));
        let offsets: Vec<u64> = rec.history.keys().copied().collect();
        assert_eq!(
            offsets,
            (0..offsets.len() as u64).collect::<Vec<_>>(),
            "{run}: history lines without gaps"
        );
        let rows: Vec<BTreeMap<String, Value>> = rec
            .history
            .values()
            .map(|l| {
                parse_extended_json(l)
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .collect();
        history_points("online", run, &rows, &mut online_points);
    }
    diff("W&B online", &online_points, &expected.for_sink("wandb"));
    eprintln!("checked in {:?}", started.elapsed());
}
