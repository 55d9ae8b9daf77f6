//! The `tensorboard` sink against the real TensorBoard (issue 3).
//!
//! Every test runs the real binary on a configuration inside a temporary
//! directory and reads the event files with TensorBoard's own Python code
//! (`tests/py/`), from the venv `scripts/test` prepares: a missing venv is
//! a failure, never a skip.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mosaic-shipper");
const DEFAULT_CONFIG: &str = include_str!("../config/mosaic-shipper.toml");

fn python() -> PathBuf {
    match std::env::var_os("MOSAIC_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "MOSAIC_TEST_PYTHON is not set: these tests read event files with the real \
             tensorboard package; run scripts/test (it prepares .venv and sets it)"
        ),
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary root holding logs, store, sink output and agent logs.
struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Env {
    /// `poll_ms`: tail poll interval; `flush_ms`: the sink's flush interval.
    fn new(poll_ms: u64, flush_ms: u64, jsonl: bool) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let r = root.display().to_string();
        let text = DEFAULT_CONFIG
            .replace("\"var/trainer/runs", &format!("\"{r}/var/trainer/runs"))
            .replace("path = \"var/shipper\"", &format!("path = \"{r}/store\""))
            .replace(
                "poll_interval_ms = 1000",
                &format!("poll_interval_ms = {poll_ms}"),
            )
            .replace(
                "flush_interval_ms = 1000",
                &format!("flush_interval_ms = {flush_ms}"),
            )
            .replace(
                "level = \"info\"",
                &format!("level = \"info\"\ndir = \"{r}/agent-logs\""),
            )
            .replace("enabled = true\npath", &format!("enabled = {jsonl}\npath"));
        assert!(
            text.contains(&format!("{r}/store")),
            "config template changed"
        );
        let config = root.join("shipper.toml");
        std::fs::write(&config, text).unwrap();
        Env {
            _tmp: tmp,
            root,
            config,
        }
    }

    fn logdir(&self) -> PathBuf {
        self.root.join("var/trainer/runs")
    }

    fn log_file(&self, run: &str) -> PathBuf {
        let dir = self.logdir().join(run).join("logs");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("worker.log")
    }

    fn agent(&self, once: bool) -> Command {
        let mut c = Command::new(BIN);
        c.arg("run").arg("--config").arg(&self.config);
        if once {
            c.arg("--once");
        }
        c.stdin(Stdio::null());
        c
    }

    fn run_once(&self) {
        let out = self.agent(true).output().unwrap();
        assert!(
            out.status.success(),
            "run --once failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What TensorBoard's loaders read from the logdir (tests/py/tb_read.py).
    fn tb_read(&self) -> Value {
        let out = Command::new(python())
            .arg(repo().join("tests/py/tb_read.py"))
            .arg(self.logdir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tb_read.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// One metric row as the test writes it and expects it back.
#[derive(Debug, Clone)]
struct Expected {
    step: i64,
    wall_time: f64,
    values: BTreeMap<String, f64>,
}

/// A MOSAIC worker's metric line for `row`; non-finite values as Python's
/// json module writes them (bare NaN / Infinity tokens).
fn log_line(run: &str, row: &Expected, nested: bool) -> String {
    fn num(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v.is_infinite() {
            if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
        } else {
            format!("{v:?}")
        }
    }
    let mut fields = vec![
        format!("\"timestamp\": {:?}", row.wall_time),
        "\"level\": \"INFO\"".into(),
        "\"event\": \"metrics\"".into(),
        format!("\"run_id\": \"{run}\""),
        format!("\"global_step\": {}", row.step),
    ];
    if nested {
        // {"metrics": {"losses": {...}, "charts": {...}}} as CleanRL-style tags.
        let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (tag, v) in &row.values {
            let (group, name) = tag.split_once('/').unwrap();
            groups
                .entry(group)
                .or_default()
                .push(format!("\"{name}\": {}", num(*v)));
        }
        let inner: Vec<String> = groups
            .iter()
            .map(|(g, kv)| format!("\"{g}\": {{{}}}", kv.join(", ")))
            .collect();
        fields.push(format!("\"metrics\": {{{}}}", inner.join(", ")));
    } else {
        for (tag, v) in &row.values {
            let field = tag.split_once('/').unwrap().1;
            fields.push(format!("\"{field}\": {}", num(*v)));
        }
    }
    format!("{{{}}}\n", fields.join(", "))
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Values chosen to catch lossy handling: non-finite, signed zero, f32
/// subnormals and overflow, decimal fractions, large integers.
const TRICKY: [f64; 14] = [
    0.1,
    -0.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    1.0 / 3.0,
    1e-40,
    3.4e38,
    1e39,
    16_777_217.0,
    2.5e-4,
    -123.456,
    0.0,
    6.02214076e23,
];

fn rows_for(run_index: usize, n: usize) -> Vec<Expected> {
    (0..n)
        .map(|i| {
            let v = |k: usize| TRICKY[(i * 3 + k + run_index) % TRICKY.len()];
            let values: BTreeMap<String, f64> = if i % 2 == 0 {
                [
                    ("charts/episodic_return", v(0)),
                    ("charts/episodic_length", (i * 7 + 1) as f64),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            } else {
                [
                    ("losses/policy_loss", v(0)),
                    ("losses/value_loss", v(1)),
                    ("losses/entropy", v(2)),
                    ("charts/learning_rate", 2.5e-4 * (1.0 - i as f64 / n as f64)),
                    ("charts/SPS", (1000 + i) as f64),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
            };
            Expected {
                // Step 0 and steps beyond 2^32 included.
                step: if i == 0 {
                    0
                } else {
                    (i as i64) * 64 + (run_index as i64) * (1 << 33)
                },
                // Binary fractions: exact in any decimal round trip.
                wall_time: 1_764_000_000.0 + i as f64 * 0.25 + run_index as f64 * 0.125,
                values,
            }
        })
        .collect()
}

fn bits_of(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

/// Asserts that TensorBoard's view of `run` is exactly `rows` (each row once).
fn assert_run_matches(read: &Value, run: &str, rows: &[Expected], check_wall_time: bool) {
    let tb_run = format!("{run}/tensorboard");
    let series = &read["series"][&tb_run];
    assert!(
        series.is_object(),
        "run {tb_run} missing: {}",
        read["series"]
    );
    let mut want: BTreeMap<String, Vec<(i64, f64, f32)>> = BTreeMap::new();
    for r in rows {
        for (tag, v) in &r.values {
            want.entry(tag.clone())
                .or_default()
                .push((r.step, r.wall_time, *v as f32));
        }
    }
    let got_tags: Vec<&String> = series.as_object().unwrap().keys().collect();
    let want_tags: Vec<&String> = want.keys().collect();
    assert_eq!(got_tags, want_tags, "tags of {run}");
    for (tag, points) in &want {
        let mut got: Vec<(i64, u64, u32)> = series[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let wall = p[1].as_f64().unwrap();
                (
                    p[0].as_i64().unwrap(),
                    wall.to_bits(),
                    bits_of(&p[2]) as u32,
                )
            })
            .collect();
        let mut want: Vec<(i64, u64, u32)> = points
            .iter()
            .map(|(s, w, v)| (*s, w.to_bits(), canonical_bits(*v)))
            .collect();
        for g in &mut got {
            g.2 = canonical_bits(f32::from_bits(g.2));
        }
        if !check_wall_time {
            got.iter_mut().for_each(|g| g.1 = 0);
            want.iter_mut().for_each(|w| w.1 = 0);
        }
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got.len(), want.len(), "number of points of {run} {tag}");
        assert_eq!(
            got, want,
            "points of {run} {tag} (step, wall time bits, f32 bits)"
        );
    }
    let meta = &read["metadata"][&tb_run];
    for tag in want.keys() {
        assert_eq!(meta[tag]["plugin"], "scalars", "{run} {tag}");
        assert_eq!(meta[tag]["data_class"], "DATA_CLASS_SCALAR", "{run} {tag}");
    }
    let raw = &read["raw"][&tb_run];
    assert_eq!(
        raw["file_versions"],
        json!(["brain.Event:2"]),
        "{run}: {raw}"
    );
    assert_eq!(raw["files"].as_array().unwrap().len(), 1, "{run}: {raw}");
    let values: usize = rows.iter().map(|r| r.values.len()).sum();
    assert_eq!(
        raw["values"].as_u64().unwrap() as usize,
        values,
        "{run}: {raw}"
    );
    let name = raw["files"][0].as_str().unwrap();
    assert!(
        name.starts_with("events.out.tfevents.") && name.split('.').count() >= 7,
        "{name}"
    );
}

/// All NaNs compare equal (the payload is not part of the contract).
fn canonical_bits(v: f32) -> u32 {
    if v.is_nan() {
        f32::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

#[test]
fn tensorboard_loader_reads_every_row_exactly() {
    let env = Env::new(1000, 1000, false);
    let runs = ["01JALPHA", "01JBETA"];
    let mut all = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        let rows = rows_for(k, 120);
        let mut text = String::new();
        for (i, r) in rows.iter().enumerate() {
            text.push_str(&log_line(run, r, i % 3 == 1));
            if i % 10 == 0 {
                text.push_str("{\"event\": \"heartbeat\"}\nnot json at all\n");
            }
        }
        append(&env.log_file(run), &text);
        all.push(rows);
    }
    env.run_once();
    let read = env.tb_read();
    for (run, rows) in runs.iter().zip(&all) {
        assert_run_matches(&read, run, rows, true);
    }
}

#[test]
fn event_file_matches_tensorboards_own_writer_byte_for_byte() {
    let env = Env::new(1000, 1000, false);
    let run = "01JBYTES";
    let rows = rows_for(0, 40);
    let text: String = rows.iter().map(|r| log_line(run, r, false)).collect();
    append(&env.log_file(run), &text);
    env.run_once();
    let dir = env.logdir().join(run).join("tensorboard");
    let ours: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    let spec: Vec<Value> = rows
        .iter()
        .map(|r| {
            let values: serde_json::Map<String, Value> = r
                .values
                .iter()
                .map(|(k, v)| {
                    let v = if v.is_nan() {
                        json!("NaN")
                    } else if v.is_infinite() {
                        json!(if *v > 0.0 { "Infinity" } else { "-Infinity" })
                    } else {
                        json!(v)
                    };
                    (k.clone(), v)
                })
                .collect();
            json!({"step": r.step, "wall_time": r.wall_time, "values": values})
        })
        .collect();
    let spec_path = env.root.join("rows.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let reference_dir = env.root.join("reference");
    std::fs::create_dir_all(&reference_dir).unwrap();
    let out = Command::new(python())
        .arg(repo().join("tests/py/tb_reference.py"))
        .arg(&spec_path)
        .arg(&reference_dir)
        .arg(&ours[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tb_reference.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let (a, b) = (
        std::fs::read(&ours[0]).unwrap(),
        std::fs::read(&reference).unwrap(),
    );
    let first_diff = a.iter().zip(&b).position(|(x, y)| x != y);
    assert!(
        a == b,
        "event files differ: ours {} bytes, TensorBoard's {} bytes, first difference at byte {first_diff:?}",
        a.len(),
        b.len()
    );
}
