//! Rotation by the real `logrotate` (the Debian package), run with `-f`
//! every few hundred milliseconds while a writer appends numbered JSON
//! metric lines and the agent runs as a daemon, once with `copytruncate`
//! and once with `create` (rename, then a new file). At the end every row
//! the jsonl sink delivered is counted by step:
//! - no step twice, in either mode;
//! - with `create`, no step missing;
//! - with `copytruncate`, a step may be missing only if its line is in no
//!   file at the end: written between logrotate's copy and its truncate,
//!   it is in neither file (the window every log shipper has).
//!
//! The counts are printed (`-- --nocapture` shows them).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Tree;

const RUN: &str = "01JF3Q8ZK6T9V0W2X4Y5Z6A7B8";
/// At most this many lines: the writer goes on until the rotations are done.
const MAX_LINES: i64 = 100_000;
/// logrotate runs, one every 200-500 ms while the writer writes.
const ROTATIONS: usize = 14;

/// xorshift64*, seeded, printed so a failure can be replayed.
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

fn line(step: i64) -> String {
    format!(
        r#"{{"timestamp": "2026-11-27T10:00:00.000Z", "level": "INFO", "event": "metrics", "run_id": "{RUN}", "global_step": {step}, "metrics": {{"losses": {{"value_loss": {}.5, "entropy": {step}}}}}}}"#,
        step % 1000
    ) + "\n"
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    CopyTruncate,
    Create,
}

/// Appends the lines. With copytruncate it keeps one handle (O_APPEND, so
/// after the truncate it writes at the new end); with create it reopens
/// the path when it names another file, as Python's WatchedFileHandler
/// (but leaves creating it to logrotate, whose `create` fails on a file
/// that is already there).
/// Returns how many lines it wrote (steps 0 to that, less one).
fn write_lines(path: PathBuf, mode: Mode, seed: u64, stop: &AtomicBool) -> i64 {
    let open = |p: &Path| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    };
    let mut file: File = open(&path);
    let mut rng = Rng(seed);
    for step in 0..MAX_LINES {
        if stop.load(Ordering::SeqCst) {
            return step;
        }
        if mode == Mode::Create {
            let now = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
            let held = file.metadata().map(|m| (m.dev(), m.ino())).ok();
            if now.is_some() && now != held {
                if let Ok(f) = OpenOptions::new().append(true).open(&path) {
                    file = f;
                }
            }
        }
        file.write_all(line(step).as_bytes()).unwrap();
        if rng.below(4) == 0 {
            std::thread::sleep(Duration::from_micros(500 + rng.below(1000)));
        }
    }
    MAX_LINES
}

fn logrotate(conf: &Path, state: &Path) {
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(conf)
        .output()
        .expect("logrotate is needed (Debian package logrotate, installed by scripts/test)");
    assert!(
        out.status.success(),
        "logrotate failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Steps of the complete lines in the log and all its rotations now.
fn steps_in_files(logs: &Path) -> BTreeSet<i64> {
    let mut steps = BTreeSet::new();
    for entry in std::fs::read_dir(logs).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
        for l in text.split_inclusive('\n') {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l.trim_end()) {
                if l.ends_with('\n') {
                    steps.insert(v["global_step"].as_i64().unwrap());
                }
            }
        }
    }
    steps
}

struct Counts {
    delivered: usize,
    duplicates: usize,
    lost: Vec<i64>,
    lost_outside_window: Vec<i64>,
    rotated_files: usize,
}

fn run(mode: Mode) -> Counts {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("{mode:?}: seed {seed}");
    let t = Tree::new();
    t.write_config_with(&[("poll_interval_ms = 1000", "poll_interval_ms = 50")]);
    let logs = t.logs(RUN);
    let log = logs.join("worker.log");
    File::create(&log).unwrap();
    let conf = t.root().join("logrotate.conf");
    let how = match mode {
        Mode::CopyTruncate => "copytruncate",
        Mode::Create => "create",
    };
    std::fs::write(
        &conf,
        format!(
            "\"{}\" {{\n    {how}\n    rotate 1000\n    nocompress\n    missingok\n    ifempty\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let state = t.root().join("logrotate.state");

    let agent_log = File::create(t.root().join("agent.log")).unwrap();
    let agent = t.spawn_agent(
        &["--log-level", "mosaic_shipper=debug"],
        Stdio::from(agent_log),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || write_lines(log, mode, seed ^ 0x9E37_79B9_7F4A_7C15, &stop))
    };
    // Rotations start once the agent ships: rotations before it looks
    // first would test nothing.
    let started = Instant::now();
    while t.delivered(RUN).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent shipped nothing within 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rng = Rng(seed);
    for _ in 0..ROTATIONS {
        assert!(
            !writer.is_finished(),
            "the writer finished before the rotations did"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rotation loop ran too long"
        );
        std::thread::sleep(Duration::from_millis(200 + rng.below(300)));
        logrotate(&conf, &state);
    }
    stop.store(true, Ordering::SeqCst);
    let lines = writer.join().unwrap();
    // Let the agent see the last of it before it drains and stops.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.terminate(), Some(0), "the agent's drain failed");
    t.run_once();

    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let rows = t.delivered(RUN);
    for row in &rows {
        *seen.entry(row["step"].as_i64().unwrap()).or_default() += 1;
    }
    let in_files = steps_in_files(&logs);
    let lost: Vec<i64> = (0..lines).filter(|s| !seen.contains_key(s)).collect();
    let counts = Counts {
        delivered: rows.len(),
        duplicates: seen.values().map(|n| n - 1).sum(),
        lost_outside_window: lost
            .iter()
            .copied()
            .filter(|s| in_files.contains(s))
            .collect(),
        lost,
        rotated_files: std::fs::read_dir(&logs).unwrap().count() - 1,
    };
    eprintln!(
        "{mode:?}: {ROTATIONS} logrotate runs, {} rotated files; {lines} lines written, {} in the files at the end, {} rows delivered, {} duplicates, {} lost ({} of them still in a file)",
        counts.rotated_files,
        in_files.len(),
        counts.delivered,
        counts.duplicates,
        counts.lost.len(),
        counts.lost_outside_window.len()
    );
    assert!(
        seen.keys().all(|s| (0..lines).contains(s)),
        "rows for steps never written"
    );
    if counts.duplicates > 0 || !counts.lost_outside_window.is_empty() {
        let keep = std::env::temp_dir().join(format!("mosaic-logrotate-{seed}"));
        let _ = Command::new("cp")
            .arg("-a")
            .arg(t.root())
            .arg(&keep)
            .status();
        eprintln!("{mode:?}: tree kept at {}", keep.display());
    }
    counts
}

#[test]
fn copytruncate_by_logrotate_repeats_nothing_and_loses_only_its_window() {
    let c = run(Mode::CopyTruncate);
    assert!(
        c.rotated_files >= 5,
        "logrotate made {} copies",
        c.rotated_files
    );
    assert_eq!(c.duplicates, 0, "rows delivered twice");
    assert!(
        c.lost_outside_window.is_empty(),
        "lines still in a file were never delivered: {:?}",
        &c.lost_outside_window[..c.lost_outside_window.len().min(20)]
    );
}

#[test]
fn create_by_logrotate_repeats_nothing_and_loses_nothing() {
    let c = run(Mode::Create);
    assert!(
        c.rotated_files >= 5,
        "logrotate made {} rotations",
        c.rotated_files
    );
    assert_eq!(c.duplicates, 0, "rows delivered twice");
    assert_eq!(c.lost, Vec::<i64>::new(), "lines never delivered");
}
