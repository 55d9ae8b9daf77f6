//! End-to-end behaviour of the real binary on MOSAIC-style logs: default
//! rules, exact resume, bad input, status, configuration errors, a broken
//! store, and the daemon's discovery and shutdown.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{gen_logs, key, read_jsonl, Tree};

const RUN: &str = "01JF3Q8ZK6T9V0W2X4Y5Z6A7B8";

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn default_rules_read_python_worker_logs_through_rotations() {
    let t = Tree::new();
    t.write_config();
    let expect = t.root().join("expect.jsonl");
    let e = expect.display().to_string();
    gen_logs(
        t.root(),
        &[
            "--rows",
            "3000",
            "--max-bytes",
            "40000",
            "--run-id",
            RUN,
            "--expect",
            &e,
        ],
    );
    let rotated = std::fs::read_dir(t.logs(RUN)).unwrap().count();
    assert!(
        rotated > 5,
        "the generator rotated the log ({rotated} files)"
    );
    t.run_once();
    let got: Vec<_> = t.delivered(RUN).iter().map(key).collect();
    let want: Vec<_> = read_jsonl(&expect).iter().map(key).collect();
    assert_eq!(got.len(), 2000);
    assert_eq!(
        got, want,
        "every metric record once, in order, exact values"
    );

    // A second run finds nothing new.
    t.run_once();
    assert_eq!(t.delivered(RUN).len(), 2000);
    let status = t.status_json();
    assert_eq!(status["counters"]["rows"], 2000);
    assert_eq!(
        status["counters"]["unmatched"],
        1000 + 7,
        "heartbeats + foreign lines"
    );
    assert_eq!(status["sinks"][0]["name"], "jsonl");
    assert_eq!(status["sinks"][0]["pending"], 0);
}

fn metric_line(step: i64, value: &str) -> String {
    format!(
        r#"{{"timestamp": "2026-11-27T10:00:00.000Z", "event": "metrics", "run_id": "{RUN}", "global_step": {step}, "episodic_return": {value}}}"#
    )
}

#[test]
fn restarts_resume_at_the_exact_byte_and_partial_lines_wait() {
    let t = Tree::new();
    t.write_config();
    let log = t.logs(RUN).join("w.log");
    append(&log, format!("{}\n", metric_line(1, "1.5")).as_bytes());
    let second = metric_line(2, "2.5");
    let (head, tail) = second.split_at(40);
    append(&log, head.as_bytes());
    t.run_once();
    assert_eq!(t.delivered(RUN).len(), 1, "the partial line is held back");
    let status = t.status_json();
    let offset = status["files"][0]["offset"].as_u64().unwrap();
    assert_eq!(offset as usize, metric_line(1, "1.5").len() + 1);

    append(
        &log,
        format!("{tail}\n{}\r\n", metric_line(3, "NaN")).as_bytes(),
    );
    t.run_once();
    let rows = t.delivered(RUN);
    let steps: Vec<i64> = rows.iter().map(|r| r["step"].as_i64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3]);
    assert_eq!(rows[1]["values"]["charts/episodic_return"], 2.5);
    assert_eq!(rows[2]["values"]["charts/episodic_return"], "NaN");
    assert_eq!(rows[0]["wall_time"], 1795773600.0);
    let status = t.status_json();
    assert_eq!(
        status["files"][0]["offset"].as_u64().unwrap(),
        std::fs::metadata(&log).unwrap().len()
    );
}

#[test]
fn bad_input_is_counted_and_every_good_row_arrives() {
    let t = Tree::new();
    t.write_config();
    let log = t.logs(RUN).join("mixed.log");
    let mut data = Vec::new();
    let good = |step: i64, v: &str| format!("{}\n", metric_line(step, v)).into_bytes();
    data.extend(good(1, "1.0"));
    data.extend(b"Traceback (most recent call last): not json\n");
    data.extend(b"{\"event\": \"metrics\", \"run_id\": \"x\", \"global_st\xff\xfe\"}\n");
    data.extend(good(2, "Infinity"));
    let mut huge = b"{\"event\": \"metrics\", \"blob\": \"".to_vec();
    huge.resize(5 * 1024 * 1024, b'x');
    huge.extend(b"\", \"global_step\": 99, \"episodic_return\": 1}\n");
    data.extend(huge);
    data.extend(good(3, "-Infinity"));
    data.extend(b"{\"event\": \"metrics\", \"global_step\": 4, \"episodic_ret\n");
    data.extend(b"{\"event\": \"metrics\", \"global_step\": 5, \"episodic_return\": \"n/a\", \"episodic_length\": null}\n");
    data.extend(b"{\"event\": \"metrics\", \"episodic_return\": 3}\n");
    data.extend(b"[1, 2, 3]\n");
    data.extend(good(6, "NaN"));
    append(&log, &data);

    t.run_once();
    let steps: Vec<i64> = t
        .delivered(RUN)
        .iter()
        .map(|r| r["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 6]);
    let c = &t.status_json()["counters"];
    assert_eq!(c["lines"], 11);
    assert_eq!(c["rows"], 4);
    assert_eq!(c["invalid_utf8"], 1);
    assert_eq!(c["oversized"], 1);
    assert_eq!(c["invalid_json"], 1);
    assert_eq!(c["rejected"], 2, "no numeric value; no step");
    assert_eq!(c["skipped_values"], 2, "a string and a null");
    assert_eq!(c["unmatched"], 2, "the traceback and the array");
}

#[test]
fn status_reports_files_identity_offsets_sinks_and_store() {
    let t = Tree::new();
    t.write_config();
    let log = t.logs(RUN).join("w.log");
    append(&log, format!("{}\n", metric_line(1, "1")).as_bytes());
    t.run_once();
    let s = t.status_json();
    let f = &s["files"][0];
    assert_eq!(f["path"], log.display().to_string());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&log).unwrap();
    assert_eq!(f["ino"], meta.ino());
    assert_eq!(f["dev"], meta.dev());
    assert_eq!(f["offset"], meta.len());
    assert!(f["fingerprint_crc32c"].is_u64());
    assert_eq!(s["sinks"][0]["cursor"], 1);
    assert!(s["store"]["size_on_disk"].as_u64().unwrap() > 0);
    assert_eq!(s["store"]["stored_bytes"], 0, "delivered rows are deleted");
    assert_eq!(s["source"], "store");

    let human = t.shipper(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("jsonl") && text.contains(&log.display().to_string()),
        "{text}"
    );
}

#[test]
fn configuration_errors_exit_2_naming_the_problem() {
    let t = Tree::new();
    let cases = [
        ("[tail]\nsorces = []\n", "sorces"),
        ("[tail]\nsources = [\"var/[x/*.log\"]\n", "var/[x/*.log"),
        (
            "[store]\npath = \"/proc/version/store\"\nmax_bytes = 1073741824\n",
            "/proc/version",
        ),
    ];
    for (text, needle) in cases {
        let path = t.root().join("bad.toml");
        let base = mosaic_shipper::config::EMBEDDED_DEFAULT;
        // Replace the section the case is about, keep the rest valid.
        let section = text.lines().next().unwrap();
        let start = base.find(section).unwrap();
        let end = base[start + 1..]
            .find("\n[")
            .map(|i| start + 1 + i + 1)
            .unwrap();
        let full = format!("{}{}\n{}", &base[..start], text, &base[end..]);
        std::fs::write(&path, full).unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{needle}: {err}");
        assert!(err.contains(needle), "error should name {needle:?}: {err}");
    }
    let out = std::process::Command::new(common::BIN)
        .args(["check-config", "--config", "/nonexistent/shipper.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shipper.toml"));

    // The embedded default is valid and printed.
    let out = std::process::Command::new(common::BIN)
        .arg("check-config")
        .env_remove("MOSAIC_SHIPPER_CONFIG")
        .current_dir(t.root())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("<embedded default>"));
}

#[test]
fn a_broken_store_is_a_startup_error_and_is_left_alone() {
    let t = Tree::new();
    t.write_config();
    let journal = t.store().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(journal.join("conf"), b"segment_size: nonsense\x00").unwrap();
    std::fs::write(journal.join("db"), vec![0x5a; 8192]).unwrap();
    let out = t.shipper(&["run", "--once"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&t.store().display().to_string()), "{err}");
    assert!(err.contains("move it aside"), "{err}");
    assert_eq!(std::fs::read(journal.join("db")).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn daemon_discovers_new_runs_and_stops_cleanly_on_sigterm() {
    let t = Tree::new();
    t.write_config();
    let agent = t.spawn_agent(&[], Stdio::null());
    std::thread::sleep(Duration::from_millis(300));
    // A run directory that did not exist when the agent started.
    let run2 = "01JF3QA2M8N4P6R8S0T2V4W6X8";
    let log = t.logs(run2).join("xuance.jsonl");
    append(
        &log,
        format!("{}\n", metric_line(7, "7.5").replace(RUN, run2)).as_bytes(),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while t.delivered(run2).is_empty() {
        assert!(Instant::now() < deadline, "new run not shipped within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // While it runs, status reads the agent's snapshot.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = t.status_json();
        if s["source"] == "snapshot" && s["counters"]["rows"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no live snapshot: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.terminate(), Some(0));
    assert_eq!(t.delivered(run2).len(), 1);
}

#[test]
fn a_full_journal_pauses_reading_and_drops_nothing() {
    let t = Tree::new();
    // The jsonl sink cannot write while `blocker` is a file where its
    // directory should be, so rows pile up in the journal.
    let out_dir = t.root().join("out");
    std::fs::write(&out_dir, b"not a directory").unwrap();
    t.write_config_with(&[
        ("max_bytes = 1073741824", "max_bytes = 1048576"),
        (
            "/var/trainer/runs/{run_id}/shipper/rows.jsonl\"",
            "/out/{run_id}/rows.jsonl\"",
        ),
    ]);
    let expect = t.root().join("expect.jsonl");
    let e = expect.display().to_string();
    gen_logs(
        t.root(),
        &[
            "--rows",
            "45000",
            "--max-bytes",
            "0",
            "--run-id",
            RUN,
            "--expect",
            &e,
        ],
    );
    let log_len = std::fs::metadata(t.logs(RUN).join("worker.log"))
        .unwrap()
        .len();

    let agent_log = t.root().join("agent.log");
    let agent = t.spawn_agent(&[], std::fs::File::create(&agent_log).unwrap().into());
    // Reading must stop short of the end with the journal at its cap.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = t.try_status_json();
        let full = s.as_ref().is_ok_and(|s| {
            s["source"] == "snapshot" && s["store"]["stored_bytes"].as_u64().unwrap() >= 1 << 20
        });
        if full {
            break;
        }
        assert!(Instant::now() < deadline, "journal never filled: {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let s = t.status_json();
    assert!(
        s["files"][0]["offset"].as_u64().unwrap() < log_len,
        "reading went on past the cap: {s}"
    );
    assert_eq!(s["sinks"][0]["cursor"], 0);
    assert!(std::fs::read_to_string(&agent_log)
        .unwrap()
        .contains("journal is full"));

    // The destination comes back: everything drains, nothing was dropped.
    std::fs::remove_file(&out_dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = t.root().join("out").join(RUN).join("rows.jsonl");
    loop {
        let n = std::fs::read_to_string(&delivered)
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 30_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} rows delivered after the sink recovered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.terminate(), Some(0));
    let got: Vec<_> = read_jsonl(&delivered).iter().map(key).collect();
    let want: Vec<_> = read_jsonl(&expect).iter().map(key).collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "rows differ after back-pressure");
}

#[test]
fn agent_logs_go_to_a_daily_file_in_the_store_and_env_config_is_honoured() {
    let t = Tree::new();
    let config = t.write_config();
    let log = t.logs(RUN).join("w.log");
    append(&log, format!("{}\n", metric_line(1, "1")).as_bytes());
    let out = std::process::Command::new(common::BIN)
        .args(["run", "--once"])
        .env("MOSAIC_SHIPPER_CONFIG", &config)
        .current_dir(t.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        t.delivered(RUN).len(),
        1,
        "the configuration from the environment was used"
    );
    let logs: Vec<_> = std::fs::read_dir(t.store().join("logs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        logs.iter()
            .any(|n| n.starts_with("mosaic-shipper.") && n.ends_with(".log")),
        "{logs:?}"
    );
}
