//! The crash test: a writer appends rows (partial writes, rename rotation)
//! while the real agent is SIGKILLed at random moments and restarted, many
//! times. At the end, after `run --once`, the jsonl sink's output must equal
//! the rows written: none missing, none twice, in order per run.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{key, Tree};

/// xorshift64*: a seeded generator, printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes like Python's RotatingFileHandler: whole records, rotation by
/// renaming x.log -> x.log.1 (shifting older ones) and opening a new x.log.
struct Writer {
    path: PathBuf,
    file: File,
    max_bytes: u64,
    rotations: usize,
}

impl Writer {
    fn new(path: PathBuf, max_bytes: u64) -> Writer {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        Writer {
            path,
            file,
            max_bytes,
            rotations: 0,
        }
    }

    fn rotated(path: &Path, n: usize) -> PathBuf {
        PathBuf::from(format!("{}.{n}", path.display()))
    }

    fn write(&mut self, record: &str, rng: &mut Rng) {
        if self.max_bytes > 0 && self.file.metadata().unwrap().len() >= self.max_bytes {
            for n in (1..=self.rotations).rev() {
                std::fs::rename(
                    Self::rotated(&self.path, n),
                    Self::rotated(&self.path, n + 1),
                )
                .unwrap();
            }
            std::fs::rename(&self.path, Self::rotated(&self.path, 1)).unwrap();
            self.rotations += 1;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .unwrap();
        }
        let line = format!("{record}\n");
        if rng.below(4) == 0 {
            // A record reaching the file in two writes: a partial line.
            let cut = 1 + rng.below(line.len() as u64 - 1) as usize;
            self.file.write_all(&line.as_bytes()[..cut]).unwrap();
            std::thread::sleep(Duration::from_micros(300));
            self.file.write_all(&line.as_bytes()[cut..]).unwrap();
        } else {
            self.file.write_all(line.as_bytes()).unwrap();
        }
    }
}

fn record(run: &str, step: i64, v: f64) -> (String, serde_json::Value) {
    let value = if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v:?}")
    };
    let line = format!(
        r#"{{"timestamp": "2026-11-27T10:00:00.000Z", "level": "INFO", "event": "metrics", "run_id": "{run}", "global_step": {step}, "metrics": {{"losses": {{"value_loss": {value}, "entropy": {step}}}}}}}"#
    );
    let expected = serde_json::json!({
        "run_id": run, "step": step,
        "values": {
            "losses/entropy": step as f64,
            "losses/value_loss": if v.is_nan() { serde_json::json!("NaN") } else { serde_json::json!(v) },
        }
    });
    (line, expected)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let t = Tree::new();
    t.write_config_with(&[("poll_interval_ms = 1000", "poll_interval_ms = 50")]);
    let runs = ["01JF3Q8ZK6T9V0W2X4Y5Z6A7B8", "01JF3QA2M8N4P6R8S0T2V4W6X8"];
    let writers = [
        Writer::new(t.logs(runs[0]).join("worker.log"), 12_000),
        Writer::new(t.logs(runs[1]).join("worker.jsonl"), 0),
    ];

    let done = Arc::new(AtomicBool::new(false));
    let writer_done = done.clone();
    let writer = std::thread::spawn(move || {
        let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        let mut writers = writers;
        let mut expected: Vec<Vec<serde_json::Value>> = vec![Vec::new(), Vec::new()];
        for i in 0..2500i64 {
            let w = (rng.below(3) == 0) as usize;
            let v = if i % 97 == 0 {
                f64::NAN
            } else {
                (rng.next() % 1_000_000) as f64 / 997.0
            };
            let (line, exp) = record(runs[w], i, v);
            writers[w].write(&line, &mut rng);
            expected[w].push(exp);
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        writer_done.store(true, Ordering::SeqCst);
        expected
    });

    let mut rng = Rng(seed);
    let mut kills = 0;
    let started = Instant::now();
    while kills < 25 || !done.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash loop ran too long"
        );
        // The agents' own logs, kept in the store for a failure's post-mortem.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.root().join("agents.log"))
            .unwrap();
        let mut child = t
            .shipper(&["run", "--log-level", "mosaic_shipper=debug"])
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    }
    let expected = writer.join().unwrap();
    eprintln!("{kills} kills");

    t.run_once();
    for (w, run) in runs.iter().enumerate() {
        let got: Vec<_> = t.delivered(run).iter().map(key).collect();
        let want: Vec<_> = expected[w].iter().map(key).collect();
        if got != want {
            let keep = std::env::temp_dir().join(format!("mosaic-crash-{seed}"));
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(t.root())
                .arg(&keep)
                .status();
            eprintln!("tree kept at {}", keep.display());
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            let show = |v: &[common::RowKey], i: usize| {
                v[i.saturating_sub(2)..(i + 3).min(v.len())].to_vec()
            };
            let i = first.unwrap_or(got.len().min(want.len()));
            panic!(
                "run {run} (seed {seed}): {} rows delivered, {} written; first difference at #{i}:\n got  {:?}\n want {:?}",
                got.len(),
                want.len(),
                show(&got, i),
                show(&want, i),
            );
        }
    }
    let status = t.status_json();
    assert_eq!(status["counters"]["rows"], 2500);
    assert_eq!(status["counters"]["lines"], 2500);
}

/// The SIGKILL storm while a CleanRL text log and TensorBoard event files
/// grow in small pieces (tests/py/grow_worker.py: the real logging module
/// and TensorBoard's record framing, each write split anywhere, records
/// cut mid-frame): a text-only run, an event-file-only run and a run that
/// writes each episode to both. At the end every point is in jsonl once;
/// the twin run's text lines gave way to its event file.
#[test]
fn sigkill_while_text_logs_and_event_files_grow_loses_and_repeats_nothing() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let t = Tree::new();
    t.write_config_with(&[("poll_interval_ms = 1000", "poll_interval_ms = 50")]);
    let expect = t.root().join("expect.json");
    let mut writer = std::process::Command::new(common::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/grow_worker.py"))
        .arg(t.root())
        .arg((seed % 1_000_000).to_string())
        .arg("2400")
        .arg(&expect)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut rng = Rng(seed);
    let (mut kills, mut kills_while_writing) = (0, 0);
    let started = Instant::now();
    let status = loop {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "crash loop ran too long"
        );
        let finished = writer.try_wait().unwrap();
        if finished.is_none() {
            kills_while_writing = kills;
        }
        if kills >= 25 {
            if let Some(status) = finished {
                break status;
            }
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.root().join("agents.log"))
            .unwrap();
        let mut child = t
            .shipper(&["run", "--log-level", "mosaic_shipper=debug"])
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(writer.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "grow_worker.py failed: {err}");
    eprintln!("{kills} kills, {kills_while_writing} while the files grew");
    assert!(
        kills_while_writing >= 10,
        "the storm must hit growing files: {kills_while_writing} kills while writing"
    );

    t.run_once();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&expect).unwrap()).unwrap();
    for (name, run) in doc["runs"].as_object().unwrap() {
        let run = run.as_str().unwrap();
        let mut want: Vec<(String, i64, String)> = doc["points"][run]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_i64().unwrap(),
                    format!("{:?}", p[2].as_f64().unwrap()),
                )
            })
            .collect();
        let mut got: Vec<(String, i64, String)> = t
            .delivered(run)
            .iter()
            .flat_map(|row| {
                let step = row["step"].as_i64().unwrap();
                row["values"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), step, format!("{:?}", v.as_f64().unwrap())))
                    .collect::<Vec<_>>()
            })
            .collect();
        want.sort();
        got.sort();
        if got != want {
            let keep = std::env::temp_dir().join(format!("mosaic-crash-kinds-{seed}"));
            let _ = std::process::Command::new("cp")
                .arg("-a")
                .arg(t.root())
                .arg(&keep)
                .status();
            let missing: Vec<_> = want.iter().filter(|p| !got.contains(p)).take(5).collect();
            let mut extra = got.clone();
            for p in &want {
                if let Some(i) = extra.iter().position(|g| g == p) {
                    extra.swap_remove(i);
                }
            }
            panic!(
                "{name} run {run} (seed {seed}, tree kept at {}): {} points delivered, {} written; missing {missing:?}; extra {:?}",
                keep.display(),
                got.len(),
                want.len(),
                &extra[..extra.len().min(5)]
            );
        }
        assert!(!want.is_empty(), "{name}: no points written");
    }
}
