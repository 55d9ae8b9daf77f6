//! The `wandb-offline` sink against W&B's own tools: its `.wandb` files are
//! read record by record with the W&B SDK's own reader, `DataStore`
//! (`open_for_scan`, `scan_data`) and `Record` protobuf, by
//! tests/py/wandb_datastore_read.py; the real `wandb sync` (0.31.0) uploads
//! its directories to the stand-in; SIGKILLs during writing leave files
//! that read to the end with every row exactly once.
//!
//! Two venvs, both prepared by scripts/test: `MOSAIC_TEST_PYTHON` (.venv,
//! wandb 0.31.0: `wandb sync`, the log generator) and
//! `MOSAIC_TEST_DATASTORE_PYTHON` (.venv-datastore, wandb 0.29.0): wandb
//! 0.30.0 removed `wandb/sdk/internal/datastore.py`, and 0.29.0 is the last
//! release that ships it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::harness::{self, Expected};
use support::standin::StandIn;

/// The test venv's Python (wandb 0.31.0 installed); these tests cannot run
/// without it.
fn python() -> PathBuf {
    match std::env::var_os("MOSAIC_TEST_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "MOSAIC_TEST_PYTHON is not set: run the suite with scripts/test, which prepares \
             the Python venv (wandb 0.31.0) these tests need"
        ),
    }
}

/// Worker logs for `run_id` under `dir` (config record first, then `rows`
/// records, optionally a run-finished record); returns the metric rows.
fn logs(dir: &Path, run_id: &str, rows: usize, seed: u64, finish: Option<i32>) -> Vec<Expected> {
    let expect = dir.join(format!("expect-{run_id}.jsonl"));
    let out = Command::new(python())
        .arg(harness::repo().join("scripts/gen-worker-logs.py"))
        .arg(dir)
        .args(["--rows", &rows.to_string(), "--run-id", run_id])
        .args(["--seed", &seed.to_string(), "--max-bytes", "0"])
        .arg("--expect")
        .arg(&expect)
        .output()
        .expect("run scripts/gen-worker-logs.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = dir.join(format!("var/trainer/runs/{run_id}/logs/worker.log"));
    let mut text = format!(
        "{{\"timestamp\": \"2026-11-27T18:00:00.000Z\", \"event\": \"config\", \"run_id\": \"{run_id}\", \"config\": {{\"lr\": 0.001, \"algo\": \"ppo\"}}}}\n"
    );
    text.push_str(&std::fs::read_to_string(&log).unwrap());
    if let Some(code) = finish {
        // Twice: a repeated run-finished record must not add a second exit.
        for _ in 0..2 {
            text.push_str(&format!(
                "{{\"timestamp\": \"2026-11-27T18:30:00.000Z\", \"event\": \"run_finished\", \"run_id\": \"{run_id}\", \"exit_code\": {code}}}\n"
            ));
        }
    }
    std::fs::write(&log, text).unwrap();
    harness::read_expected(&expect)
}

/// An agent config in `dir` with the W&B sink in offline mode.
fn config(dir: &Path) -> PathBuf {
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"",
        dir.join("wandb").display()
    );
    harness::write_config(dir, "http://127.0.0.1:9", &extra)
}

/// The run directories under `dir/wandb`.
fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join("wandb"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The second venv's Python (wandb 0.29.0, the last release with the
/// SDK's `DataStore` reader); these tests cannot run without it.
fn datastore_python() -> PathBuf {
    match std::env::var_os("MOSAIC_TEST_DATASTORE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "MOSAIC_TEST_DATASTORE_PYTHON is not set: run the suite with scripts/test, which \
             prepares .venv-datastore (wandb 0.29.0, whose DataStore reads .wandb files; \
             0.30+ no longer ships it)"
        ),
    }
}

/// tests/py/wandb_datastore_read.py on `file`: the SDK's `DataStore` reads
/// it record by record to its end, one JSON line per record.
fn datastore_read(file: &Path) -> std::process::Output {
    let py = datastore_python();
    Command::new(&py)
        .arg(harness::repo().join("tests/py/wandb_datastore_read.py"))
        .arg(file)
        // DataStore checks CRCs with `assert`: never optimized away.
        .env_remove("PYTHONOPTIMIZE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()))
}

/// The last record's type, or None while the file is mid-write (the
/// agent may be appending while a waiting test reads).
fn last_type(file: &Path) -> Option<String> {
    let text = String::from_utf8(datastore_read(file).stdout).ok()?;
    let last: Value = serde_json::from_str(text.lines().last()?).ok()?;
    Some(last["type"].as_str()?.to_string())
}

/// Every record of a `.wandb` file as W&B's `DataStore` reads it; the
/// reader must reach the end of the file without an error.
fn read(file: &Path) -> Vec<Value> {
    let out = datastore_read(file);
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

/// Checks one W&B value_json against a generator value (a number, or
/// "NaN" / "Infinity" / "-Infinity"): exact.
fn same(got: &str, want: &Value) -> bool {
    match want {
        Value::String(s) => got == s,
        v => got.parse::<f64>().ok() == v.as_f64(),
    }
}

/// The decoded history equals the rows, in order, with `global_step` (the
/// row's step), `_step` (the record's number among the run's history
/// records, also `step.num`), `_runtime` and `_timestamp` items; the run
/// declares `global_step` the x-axis of every metric in a metric record
/// right after the run record, as the SDK writes
/// `define_metric("*", step_metric="global_step")`; record numbers run
/// 1, 2, 3, ...
fn assert_records(records: &[Value], expected: &[Expected], exit: Option<i32>) {
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["num"].as_i64(), Some(i as i64 + 1), "record {r}");
    }
    assert_eq!(records[0]["type"], "header");
    // Record._info.stream_id on header, run and exit records, as the SDK.
    let with_stream: Vec<&str> = records
        .iter()
        .filter(|r| r["stream_id"] != "")
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    let want: &[&str] = if exit.is_some() {
        &["header", "run", "exit"]
    } else {
        &["header", "run"]
    };
    assert_eq!(with_stream, want);
    assert_eq!(records[1]["type"], "run");
    assert!(records[1]["run"]["start_time"].as_i64().unwrap() > 1_000_000_000);
    assert_eq!(records[2]["type"], "metric", "{}", records[2]);
    assert_eq!(
        records[2]["metric"],
        serde_json::json!({"name": "", "glob_name": "*", "step_metric": "global_step", "step_sync": true, "defined": true})
    );
    assert_eq!(
        records.iter().filter(|r| r["type"] == "metric").count(),
        1,
        "one declaration per run directory"
    );
    let history: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "history")
        .map(|r| &r["history"])
        .collect();
    assert_eq!(history.len(), expected.len(), "one history record per row");
    for (i, (h, exp)) in history.iter().zip(expected).enumerate() {
        assert_eq!(h["step"].as_i64(), Some(i as i64), "{h}");
        let items = h["items"].as_object().unwrap();
        assert_eq!(items["_step"], i.to_string(), "{h}");
        assert_eq!(items["global_step"], exp.step.to_string(), "{h}");
        assert!(items["_runtime"].as_str().unwrap().parse::<f64>().unwrap() >= 0.0);
        assert!(
            items["_timestamp"]
                .as_str()
                .unwrap()
                .parse::<f64>()
                .unwrap()
                > 1e9
        );
        assert_eq!(items.len(), exp.values.len() + 4, "{h} vs {:?}", exp.values);
        for (k, want) in &exp.values {
            let got = items[k]
                .as_str()
                .unwrap_or_else(|| panic!("{k} missing in {h}"));
            assert!(same(got, want), "{k}: {got} != {want}");
        }
    }
    let config: Vec<&Value> = records.iter().filter(|r| r["type"] == "config").collect();
    assert_eq!(config.len(), 1);
    assert_eq!(config[0]["config"]["algo"], "\"ppo\"");
    let exits: Vec<i64> = records
        .iter()
        .filter(|r| r["type"] == "exit")
        .map(|r| r["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(exits, exit.map(i64::from).into_iter().collect::<Vec<_>>());
    if exit.is_some() {
        assert_eq!(records.last().unwrap()["type"], "exit");
    }
}

fn the_file(dir: &Path, run_id: &str) -> (PathBuf, PathBuf) {
    let id = harness::wandb_id(run_id);
    let dirs = run_dirs(dir);
    if dirs.len() != 1 {
        for d in &dirs {
            let list: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| (e.file_name(), e.metadata().unwrap().len()))
                .collect();
            eprintln!("{}: {list:?}", d.display());
        }
        eprintln!("{}", harness::stderr_logs(dir));
    }
    assert_eq!(dirs.len(), 1, "one run directory: {dirs:?}");
    let name = dirs[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with("offline-run-") && name.ends_with(&format!("-{id}")),
        "{name}"
    );
    assert!(dirs[0].join("files").is_dir());
    let file = dirs[0].join(format!("run-{id}.wandb"));
    (dirs[0].clone(), file)
}

/// The chunks of a `.wandb` file: (offset of the payload, its length, type).
fn chunks(data: &[u8]) -> Vec<(usize, usize, u8)> {
    use mosaic_shipper::sink::wandb::offline::txlog::{BLOCK, CHUNK_HEADER, FILE_HEADER};
    let (block, header) = (BLOCK as usize, CHUNK_HEADER as usize);
    let mut out = Vec::new();
    let mut pos = FILE_HEADER.len();
    while pos < data.len() {
        if block - pos % block < header {
            pos += block - pos % block;
            continue;
        }
        let len = u16::from_le_bytes([data[pos + 4], data[pos + 5]]) as usize;
        out.push((pos + header, len, data[pos + 6]));
        pos += header + len;
    }
    out
}

/// The reader is not a rubber stamp: copies of `file` with one payload
/// byte flipped, or cut after a FIRST chunk, make it exit non-zero.
fn damaged_copies_fail_to_read(file: &Path, dir: &Path) {
    use mosaic_shipper::sink::wandb::offline::txlog::FIRST;
    let data = std::fs::read(file).unwrap();
    let chunks = chunks(&data);
    // A byte in the middle of the payload of the chunk at mid-file.
    let &(start, len, _) = chunks
        .iter()
        .find(|&&(start, len, _)| len > 0 && start + len > data.len() / 2)
        .unwrap();
    let mut flipped = data.clone();
    flipped[start + len / 2] ^= 0xff;
    // A record cut between its chunks: DataStore itself stops there
    // quietly, the script must not.
    let &(start, len, _) = chunks
        .iter()
        .find(|&&(_, len, typ)| typ == FIRST && len > 0)
        .expect("a record that spans blocks");
    let cut = data[..start + len].to_vec();
    for (what, bytes, says) in [
        ("a flipped payload byte", flipped, "checksum"),
        ("a record cut after its FIRST chunk", cut, "inside a record"),
    ] {
        let copy = dir.join("damaged.wandb");
        std::fs::write(&copy, bytes).unwrap();
        let out = datastore_read(&copy);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: the reader accepted it");
        assert!(stderr.contains(says), "{what}: {stderr}");
    }
}

#[test]
fn offline_run_reads_back_and_wandb_sync_uploads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9V0W";
    // Enough rows for a file of several 32 KiB blocks.
    let expected = logs(dir, run, 1500, 11, Some(0));
    let cfg = config(dir);
    harness::run_once(dir, &cfg);
    let (run_dir, file) = the_file(dir, run);
    assert!(std::fs::metadata(&file).unwrap().len() > 3 * 32768);
    assert_records(&read(&file), &expected, Some(0));
    damaged_copies_fail_to_read(&file, dir);

    // The real `wandb sync` uploads it to the stand-in.
    let standin = StandIn::start();
    support::sdk::wandb_sync(dir, &run_dir, &standin);
    let runs = standin.runs();
    let got = runs
        .get(&harness::wandb_id(run))
        .unwrap_or_else(|| panic!("no run uploaded: {:?}", runs.keys().collect::<Vec<_>>()));
    harness::assert_history(got, &expected);
    assert_eq!(got.exit_code, Some(0));
    // The summary records reach W&B: the last row's values are the summary.
    let summary = support::standin::parse_extended_json(got.summary.as_deref().unwrap_or("{}"));
    let last = expected.last().unwrap();
    eprintln!("summary after sync: {summary}");
    assert_eq!(
        summary["_step"].as_i64(),
        Some(expected.len() as i64 - 1),
        "{summary}"
    );
    assert_eq!(
        summary["global_step"].as_i64(),
        Some(last.step),
        "{summary}"
    );
    for (k, want) in &last.values {
        let got = &summary[k];
        match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => assert_eq!(a, b, "summary {k}"),
            _ => assert_eq!(got, want, "summary {k}"),
        }
    }
    // The config record reaches UpsertBucket.
    let configs: Vec<String> = standin
        .requests()
        .iter()
        .filter(|r| r.operation().as_deref() == Some("UpsertBucket"))
        .filter_map(|r| r.json()["variables"]["config"].as_str().map(str::to_string))
        .collect();
    assert!(
        configs
            .iter()
            .any(|c| c.contains("\"algo\"") && c.contains("ppo")),
        "config not sent: {configs:?}"
    );
    assert!(
        file.with_extension("wandb.synced").exists(),
        "wandb sync did not mark {} synced",
        file.display()
    );
}

#[test]
fn sigkill_during_offline_writing_leaves_each_row_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9CRA";
    let expected = logs(dir, run, 6000, 5, Some(3));
    let cfg = config(dir);
    // The worker "logs" while agents come and go: the log is fed in
    // chunks, each while an agent runs, and that agent is killed once the
    // offline file has grown (mid-batch or between flushes).
    let log = dir.join(format!("var/trainer/runs/{run}/logs/worker.log"));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let chunks: Vec<&[&str]> = lines.chunks(lines.len().div_ceil(14)).collect();
    std::fs::write(&log, "").unwrap();
    let id = harness::wandb_id(run);
    let size = || -> u64 {
        run_dirs(dir)
            .iter()
            .filter_map(|d| std::fs::metadata(d.join(format!("run-{id}.wandb"))).ok())
            .map(|m| m.len())
            .sum()
    };
    let mut kills = 0;
    let mut torn = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let mut child = harness::spawn(harness::agent(dir, &cfg, &[]).current_dir(dir));
        let before = size();
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        for l in chunk.iter() {
            std::io::Write::write_all(&mut f, format!("{l}\n").as_bytes()).unwrap();
        }
        drop(f);
        harness::wait_for(
            dir,
            Duration::from_secs(30),
            "the offline file to grow",
            || size() > before,
        );
        // Vary the moment of the kill after the first write.
        std::thread::sleep(Duration::from_millis((i as u64 * 17) % 60));
        unsafe {
            libc::kill(child.0.id() as i32, libc::SIGKILL);
        }
        let _ = child.0.wait();
        kills += 1;
        // The window between the sink's write and the journal commit is
        // short; every other kill also gets the torn tail such a kill
        // leaves (a chunk header and part of its payload), which the
        // next start must cut back.
        if i % 2 == 1 {
            let file = run_dirs(dir)
                .iter()
                .map(|d| d.join(format!("run-{id}.wandb")))
                .find(|f| f.exists())
                .unwrap();
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .unwrap();
            std::io::Write::write_all(&mut f, &[0x11, 0x22, 0x33, 0x44, 0xff, 0x00, 0x01, 0x08])
                .unwrap();
            torn += 1;
        }
    }
    assert!(kills >= 10, "{kills} kills");
    harness::run_once(dir, &cfg);
    // Restarts that cut uncommitted records: at least the torn tails.
    let cuts = harness::stderr_logs(dir)
        .matches("cutting uncommitted records")
        .count();
    eprintln!("{kills} kills; {cuts} recoveries cut uncommitted records");
    assert!(cuts >= torn, "{torn} torn tails, {cuts} cut");
    let (_, file) = the_file(dir, run);
    assert_records(&read(&file), &expected, Some(3));
}

/// A history record whose encoding is exactly `size` bytes (padded with a
/// string item), numbered `num`.
fn sized_record(num: i64, size: usize) -> Vec<u8> {
    use mosaic_shipper::sink::wandb::offline::records::{
        record::RecordType, HistoryRecord, HistoryStep, Item, Record,
    };
    use prost::Message;
    let make = |pad: usize| Record {
        num,
        record_type: Some(RecordType::History(HistoryRecord {
            item: vec![Item {
                key: String::new(),
                nested_key: vec!["pad".into()],
                value_json: format!("\"{}\"", "x".repeat(pad)),
            }],
            step: Some(HistoryStep { num }),
        })),
        info: None,
    };
    // Varint lengths make some sizes unreachable with one pad; search down.
    for pad in (0..size).rev() {
        let r = make(pad);
        if r.encoded_len() == size {
            return r.encode_to_vec();
        }
    }
    panic!("no padding gives a {size}-byte record");
}

#[test]
fn block_edges_decode_with_wandbs_datastore_reader() {
    use mosaic_shipper::sink::wandb::offline::txlog::{append_record, BLOCK, FILE_HEADER};
    let tmp = tempfile::tempdir().unwrap();
    let block = BLOCK as usize;
    let cases: [(&str, usize); 4] = [
        ("ends exactly at the block end", block - 7 - 7),
        ("leaves exactly 7 bytes", block - 7 - 7 - 7),
        ("leaves 3 bytes of padding", block - 7 - 7 - 3),
        ("spans 3 blocks", 2 * block + 100),
    ];
    for (what, size) in cases {
        let mut out = FILE_HEADER.to_vec();
        let mut pos = out.len() as u64;
        append_record(&mut pos, &sized_record(1, size), &mut out);
        append_record(&mut pos, &sized_record(2, 40), &mut out);
        append_record(&mut pos, &sized_record(3, 70000), &mut out);
        let file = tmp.path().join("edge.wandb");
        std::fs::write(&file, &out).unwrap();
        let records = read(&file);
        let steps: Vec<i64> = records
            .iter()
            .map(|r| r["history"]["step"].as_i64().unwrap_or(0))
            .collect();
        assert_eq!(steps, [1, 2, 3], "{what}: {records:?}");
        let nums: Vec<i64> = records.iter().map(|r| r["num"].as_i64().unwrap()).collect();
        assert_eq!(nums, [1, 2, 3], "{what}");
        // The file ending right there, also 3 bytes before a block end
        // (where `scan_data` called at EOF fails "invalid padding").
        let mut pos = FILE_HEADER.len() as u64;
        let mut only = FILE_HEADER.to_vec();
        append_record(&mut pos, &sized_record(1, size), &mut only);
        std::fs::write(&file, &only).unwrap();
        let records = read(&file);
        assert_eq!(records.len(), 1, "{what}, alone: {records:?}");
        assert_eq!(records[0]["history"]["step"], 1, "{what}, alone");
    }
}

#[test]
fn a_file_cut_short_by_hand_continues_in_a_new_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9SHT";
    logs(dir, run, 30, 2, None);
    let cfg = config(dir);
    harness::run_once(dir, &cfg);
    let (_, file) = the_file(dir, run);
    let first_lines = read(&file)
        .iter()
        .filter(|r| r["type"] == "history")
        .count() as i64;
    // Someone cuts the committed file short (a damaged copy, an editor).
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    // The worker logs more rows (a second generator pass, later steps).
    let more = dir.join("more");
    let out = Command::new(python())
        .arg(harness::repo().join("scripts/gen-worker-logs.py"))
        .arg(&more)
        .args([
            "--rows",
            "9",
            "--run-id",
            run,
            "--seed",
            "4",
            "--max-bytes",
            "0",
        ])
        .args(["--start-step", "100000"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = dir.join(format!("var/trainer/runs/{run}/logs/worker.log"));
    let extra =
        std::fs::read_to_string(more.join(format!("var/trainer/runs/{run}/logs/worker.log")))
            .unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut f, extra.as_bytes()).unwrap();
    drop(f);
    harness::run_once(dir, &cfg);
    let dirs = run_dirs(dir);
    assert_eq!(dirs.len(), 2, "a new directory for the new rows: {dirs:?}");
    assert!(
        harness::stderr_logs(dir).contains("shorter than committed"),
        "the agent must say why"
    );
    let id = harness::wandb_id(run);
    let new = dirs
        .iter()
        .map(|d| d.join(format!("run-{id}.wandb")))
        .find(|f| *f != file)
        .unwrap();
    let records = read(&new);
    assert_eq!(records[1]["type"], "run");
    let history: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "history")
        .map(|r| &r["history"])
        .collect();
    let global: Vec<i64> = history
        .iter()
        .map(|h| h["items"]["global_step"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        !global.is_empty() && global.iter().all(|&s| s >= 100000),
        "{global:?}"
    );
    // `_step` goes on counting after the first directory's lines.
    let steps: Vec<i64> = history
        .iter()
        .map(|h| h["step"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (0..steps.len() as i64).map(|i| i + first_lines).collect();
    assert_eq!(steps, want, "after {first_lines} lines");
}

/// A run without rows for longer than `idle_finish_secs` is not known to
/// have ended: it gets no exit record (real `wandb sync` would mark it
/// failed, and rows arriving later would have to start a new directory).
/// The worker's `run_failed` then writes the exit record with its code.
#[test]
fn an_idle_run_gets_no_exit_record_until_the_worker_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9IDL";
    let expected = logs(dir, run, 40, 6, None);
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"\nidle_finish_secs = 1",
        dir.join("wandb").display()
    );
    let cfg = harness::write_config(dir, "http://127.0.0.1:9", &extra);
    let mut agent = harness::spawn(harness::agent(dir, &cfg, &[]).current_dir(dir));
    let id = harness::wandb_id(run);
    let history = |dir: &Path| {
        run_dirs(dir)
            .iter()
            .map(|d| d.join(format!("run-{id}.wandb")))
            .filter(|f| f.exists())
            .map(|f| read(&f).iter().filter(|r| r["type"] == "history").count())
            .sum::<usize>()
    };
    harness::wait_for(dir, Duration::from_secs(60), "every row", || {
        history(dir) == expected.len()
    });
    // Several idle periods (and ticks) pass: still no exit record.
    std::thread::sleep(Duration::from_secs(3));
    let (_, file) = the_file(dir, run);
    assert_eq!(last_type(&file).as_deref(), Some("history"));
    harness::lifecycle(
        dir,
        run,
        "run_failed",
        Some(serde_json::json!({"exit_code": 2})),
    );
    harness::wait_for(dir, Duration::from_secs(60), "the exit record", || {
        last_type(&file).as_deref() == Some("exit")
    });
    unsafe {
        libc::kill(agent.0.id() as i32, libc::SIGTERM);
    }
    harness::wait_child(&mut agent.0, Duration::from_secs(30));
    assert_eq!(run_dirs(dir).len(), 1, "the run continued in its directory");
    assert_records(&read(&file), &expected, Some(2));
}

/// Daemon mode, offline: a worker killed by SIGKILL after logging, with no
/// run-finished record, is found holding its run's log and watched; once
/// it is gone for `worker_gone_secs` the run gets an exit record with
/// exit code -1 (failed, cause unknown) that W&B's own reader decodes,
/// never an exit 0.
#[test]
fn a_worker_killed_silently_gets_a_failed_exit_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JD9X2K7M3N4P5Q6R7S8T9KIL";
    let logs = dir.join(format!("var/trainer/runs/{run}/logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"\nworker_gone_secs = 1",
        dir.join("wandb").display()
    );
    let cfg = harness::write_config(dir, "http://127.0.0.1:9", &extra);
    let mut agent = harness::spawn(harness::agent(dir, &cfg, &[]).current_dir(dir));
    let go = dir.join("go");
    let script = format!(
        "import json, os, signal, time\nf = open({log:?}, 'a')\nfor i in range(20):\n    f.write(json.dumps({{'event': 'metrics', 'run_id': {run:?}, 'global_step': i, 'episodic_return': 1.0 / (i + 1)}}) + '\\n')\n    f.flush()\nfor _ in range(600):\n    if os.path.exists({go:?}):\n        break\n    time.sleep(0.1)\nos.kill(os.getpid(), signal.SIGKILL)\n",
        log = logs.join("worker.log").display().to_string(),
        go = go.display().to_string(),
    );
    let mut worker = Command::new(python())
        .arg("-c")
        .arg(&script)
        .spawn()
        .unwrap();
    harness::wait_for(dir, Duration::from_secs(60), "the worker found", || {
        harness::stderr_logs(dir).contains("worker process found for the run")
    });
    let id = harness::wandb_id(run);
    let history = |dir: &Path| {
        run_dirs(dir)
            .iter()
            .map(|d| d.join(format!("run-{id}.wandb")))
            .filter(|f| f.exists())
            .map(|f| read(&f).iter().filter(|r| r["type"] == "history").count())
            .sum::<usize>()
    };
    harness::wait_for(dir, Duration::from_secs(60), "every row", || {
        history(dir) == 20
    });
    let (_, file) = the_file(dir, run);
    assert_eq!(last_type(&file).as_deref(), Some("history"), "alive: open");
    std::fs::write(&go, "").unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(worker.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
    harness::wait_for(dir, Duration::from_secs(60), "the exit record", || {
        last_type(&file).as_deref() == Some("exit")
    });
    unsafe {
        libc::kill(agent.0.id() as i32, libc::SIGTERM);
    }
    harness::wait_child(&mut agent.0, Duration::from_secs(30));
    let records = read(&file);
    let exits: Vec<i64> = records
        .iter()
        .filter(|r| r["type"] == "exit")
        .map(|r| r["exit_code"].as_i64().unwrap())
        .collect();
    assert_eq!(exits, [-1], "{}", harness::stderr_logs(dir));
    assert_eq!(
        records.iter().filter(|r| r["type"] == "history").count(),
        20
    );
}
