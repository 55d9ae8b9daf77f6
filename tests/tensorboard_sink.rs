//! The `tensorboard` sink against the real TensorBoard (issue 3).
//!
//! Every test runs the real binary on a configuration inside a temporary
//! directory and reads the event files with TensorBoard's own Python code
//! (`tests/py/`), from the venv `scripts/test` prepares: a missing venv is
//! a failure, never a skip.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
                "flush_interval_ms = 5000",
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

/// Ends a child on drop (a failed assertion must not leave servers behind).
struct Guard(Child, &'static str);

impl Guard {
    /// SIGTERM/SIGINT first so that the child shuts down cleanly (TensorBoard
    /// stops its data server), then SIGKILL after a bounded wait.
    fn stop(&mut self, signal: i32) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(self.0.id() as i32, signal) };
            let until = Instant::now() + Duration::from_secs(15);
            while Instant::now() < until {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("{} did not stop in 15 s; killing it", self.1);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop(libc::SIGINT);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A minimal HTTP/1.0 GET against 127.0.0.1: (status, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((status, body))
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A live `tensorboard` follows the event file while the agent ships a
/// growing log: the newest point shows up through the HTTP API. Both of
/// TensorBoard's data paths are exercised: the Rust data server
/// (`--load_fast=true`, the default where it is installed) and the Python
/// multiplexer (`--load_fast=false`).
#[test]
fn live_tensorboard_shows_new_points_while_the_agent_runs() {
    let py = python();
    for load_fast in ["true", "false"] {
        let env = Env::new(100, 1000, false);
        let run = "01JLIVE";
        let log = env.log_file(run);
        let rows: Vec<Expected> = (0..24)
            .map(|i| Expected {
                step: (i + 1) * 128,
                wall_time: 1_764_000_000.5 + i as f64,
                values: [
                    ("charts/episodic_return".to_string(), 10.0 + i as f64 * 0.1),
                    ("charts/episodic_length".to_string(), (100 + i) as f64),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        let (first, rest) = rows.split_at(4);
        append(
            &log,
            &first
                .iter()
                .map(|r| log_line(run, r, false))
                .collect::<String>(),
        );
        let agent_out = std::fs::File::create(env.root.join("agent.out")).unwrap();
        let mut agent = Guard(
            env.agent(false)
                .stdout(agent_out.try_clone().unwrap())
                .stderr(agent_out)
                .spawn()
                .unwrap(),
            "the agent",
        );
        let port = free_port();
        let tb_out = std::fs::File::create(env.root.join("tensorboard.out")).unwrap();
        let mut tb = Guard(
            Command::new(&py)
                .args(["-m", "tensorboard.main", "--logdir"])
                .arg(env.logdir())
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--reload_interval", "1", "--load_fast", load_fast])
                .stdin(Stdio::null())
                .stdout(tb_out.try_clone().unwrap())
                .stderr(tb_out)
                .spawn()
                .unwrap(),
            "tensorboard",
        );
        let tag = "charts/episodic_return";
        let path = format!(
            "/data/plugin/scalars/scalars?run={}&tag={}",
            url_escape(&format!("{run}/tensorboard")),
            url_escape(tag)
        );
        // Keep the log growing while polling; stop at the newest point.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut written = 0;
        let mut last_body = String::new();
        let points = loop {
            assert!(
                Instant::now() < deadline,
                "load_fast={load_fast}: the newest point did not appear within 120 s; last answer: {last_body}\ntensorboard said: {}",
                std::fs::read_to_string(env.root.join("tensorboard.out")).unwrap_or_default()
            );
            if written < rest.len() {
                append(&log, &log_line(run, &rest[written], false));
                written += 1;
            }
            std::thread::sleep(Duration::from_millis(250));
            if let Ok((200, body)) = http_get(port, &path) {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let done = written == rest.len()
                    && v.as_array()
                        .and_then(|a| a.last())
                        .is_some_and(|p| p[1].as_i64() == Some(rows.last().unwrap().step));
                last_body = body;
                if done {
                    break v;
                }
            }
        };
        // [[wall_time, step, value], ...] as the scalars plugin serves them.
        // The value is the f32 TensorBoard holds, printed as a double; it is
        // compared as f32 because serde_json (without its float_roundtrip
        // feature) may read a 17-digit decimal 1 ULP off as f64, which the
        // rounding to f32 removes.
        let got: Vec<(f64, i64, u32)> = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let v = p[2].as_f64().unwrap() as f32;
                (p[0].as_f64().unwrap(), p[1].as_i64().unwrap(), v.to_bits())
            })
            .collect();
        let want: Vec<(f64, i64, u32)> = rows
            .iter()
            .map(|r| (r.wall_time, r.step, (r.values[tag] as f32).to_bits()))
            .collect();
        assert_eq!(got, want, "load_fast={load_fast}");
        tb.stop(libc::SIGINT);
        agent.stop(libc::SIGTERM);
        assert!(
            agent.0.wait().unwrap().success(),
            "the agent stops cleanly on SIGTERM"
        );
    }
}

/// A tiny deterministic generator (no extra dependency); the seed is printed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The crash test of the core issue, for this sink: workers log (with
/// rotation) while the agent is SIGKILLed at random moments again and
/// again; after a final `run --once`, TensorBoard's loader sees each row
/// exactly once (and so does the jsonl sink's file).
#[test]
fn sigkill_at_random_moments_leaves_each_row_exactly_once() {
    let py = python();
    let env = Env::new(50, 100, true);
    let runs = ["01JCRASHA", "01JCRASHB"];
    let mut writers: Vec<Guard> = runs
        .iter()
        .enumerate()
        .map(|(k, run)| {
            Guard(
                Command::new(&py)
                    .arg(repo().join("scripts/gen-worker-logs.py"))
                    .arg(&env.root)
                    .args([
                        "--rows",
                        "7500",
                        "--max-bytes",
                        "65536",
                        "--delay",
                        "0.0012",
                    ])
                    .args(["--seed", &(k + 1).to_string(), "--run-id", run])
                    .arg("--expect")
                    .arg(env.root.join(format!("expect-{run}.jsonl")))
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
                "a log writer",
            )
        })
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = XorShift(seed);
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut kills = 0;
    for _ in 0..200 {
        let writing = writers
            .iter_mut()
            .any(|w| matches!(w.0.try_wait(), Ok(None)));
        if (kills >= 24 && !writing) || Instant::now() > deadline {
            break;
        }
        let mut agent = env
            .agent(false)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(600)));
        agent.kill().unwrap(); // SIGKILL
        agent.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= 20, "only {kills} kills before the deadline");
    for w in &mut writers {
        let until = Instant::now() + Duration::from_secs(120);
        while matches!(w.0.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(w.0.wait().unwrap().success(), "a log writer failed");
    }
    env.run_once();

    let read = env.tb_read();
    for run in runs {
        let expect = std::fs::read_to_string(env.root.join(format!("expect-{run}.jsonl"))).unwrap();
        let rows: Vec<Expected> = expect
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Expected {
                    step: v["step"].as_i64().unwrap(),
                    wall_time: 0.0, // not in the expectation file; not compared
                    values: v["values"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, x)| {
                            let f = match x {
                                Value::String(s) => match s.as_str() {
                                    "Infinity" => f64::INFINITY,
                                    "-Infinity" => f64::NEG_INFINITY,
                                    _ => f64::NAN,
                                },
                                x => x.as_f64().unwrap(),
                            };
                            (k.clone(), f)
                        })
                        .collect(),
                }
            })
            .collect();
        assert!(
            rows.len() > 4000,
            "{run}: only {} expected rows",
            rows.len()
        );
        assert_run_matches(&read, run, &rows, false);
        let jsonl = env.logdir().join(run).join("shipper/rows.jsonl");
        let lines = std::fs::read_to_string(jsonl).unwrap().lines().count();
        assert_eq!(lines, rows.len(), "{run}: jsonl rows");
    }
}
