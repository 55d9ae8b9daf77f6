//! The reference the agent's hot path is measured against: how fast this
//! machine reads the same worker logs and parses each line into a
//! `serde_json::Value`, with nothing else done.
//!
//! `scripts/bench-tensorboard` runs it on the logs it generated, right
//! after the agent, so that both figures come from the same files under
//! the same load:
//!
//! ```text
//! cargo bench --bench parse_reference -- DIR...
//! ```
//!
//! Every `*.log` and `*.jsonl` file under each DIR is read whole once per
//! pass (the page cache is warm after the first), then:
//!
//! - `split`: lines counted (what reading and framing alone cost);
//! - `value`: each line that starts with `{` parsed into a `Value`, the
//!   others counted as text (what a parse-everything design costs).
//!
//! Prints one JSON object: lines, JSON objects, and seconds per pass (the
//! best of three, as the agent's runs are single).

use std::path::{Path, PathBuf};
use std::time::Instant;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "log" || e == "jsonl") {
            out.push(path);
        }
    }
}

fn best_of_three(mut pass: impl FnMut() -> (u64, u64)) -> (f64, u64, u64) {
    let mut best = f64::INFINITY;
    let mut counts = (0, 0);
    for _ in 0..3 {
        let start = Instant::now();
        counts = pass();
        best = best.min(start.elapsed().as_secs_f64());
    }
    (best, counts.0, counts.1)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs
    // this target too, without it and without logs to read: nothing to
    // measure then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("parse_reference: a benchmark; run it with `cargo bench --bench parse_reference -- DIR...`");
        return;
    }
    let mut paths = Vec::new();
    for dir in std::env::args().skip(1).filter(|a| !a.starts_with("--")) {
        files(Path::new(&dir), &mut paths);
    }
    if paths.is_empty() {
        eprintln!("usage: parse_reference DIR... (no *.log or *.jsonl file found)");
        std::process::exit(2);
    }
    let read = |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (split_s, lines, _) = best_of_three(|| {
        let mut lines = 0;
        for p in &paths {
            let data = read(p);
            lines += data
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as u64;
        }
        (lines, 0)
    });
    let (value_s, _, objects) = best_of_three(|| {
        let (mut lines, mut objects) = (0, 0);
        for p in &paths {
            let data = read(p);
            for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                lines += 1;
                if line.first() == Some(&b'{') {
                    if let Ok(serde_json::Value::Object(map)) =
                        serde_json::from_slice::<serde_json::Value>(line)
                    {
                        objects += 1;
                        std::hint::black_box(map);
                    }
                }
            }
        }
        (lines, objects)
    });
    println!(
        "{{\"files\": {}, \"lines\": {lines}, \"json_objects\": {objects}, \"split_seconds\": {split_s:.6}, \"value_seconds\": {value_s:.6}}}",
        paths.len()
    );
}
