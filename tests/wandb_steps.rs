//! Steps and time in W&B, as W&B's own TensorBoard sync does it: every row
//! its own history line, `_step` counting lines, the worker's step as
//! `global_step` (declared every metric's x-axis as the SDK's
//! `define_metric("*", step_metric="global_step")` sends it, from the
//! recording tests/fixtures/wandb-sdk-steps.json), `_runtime` from the
//! earliest wall time of the run's metric rows. Online (and `sync` of
//! staged journal rows, the same sink), offline through the real
//! `wandb sync` and through `mosaic-shipper sync`.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::harness::{self, write_config};
use support::sdk;
use support::standin::{parse_extended_json, RunRecord, StandIn};

const T0: f64 = 1_795_773_600.0; // 2026-11-27T10:00:00Z

/// `T0 + secs` as the ISO time the default rules read.
fn iso(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as i64;
    format!(
        "2026-11-27T10:{:02}:{:02}.{:03}Z",
        ms / 60_000,
        (ms / 1000) % 60,
        ms % 1000
    )
}

/// One metric line of the default `mosaic-metrics` rule.
fn metric(run: &str, step: i64, secs: f64, value: f64) -> String {
    format!(
        "{{\"timestamp\": \"{}\", \"event\": \"metrics\", \"run_id\": \"{run}\", \"global_step\": {step}, \"episodic_return\": {value}}}\n",
        iso(secs)
    )
}

fn append(dir: &Path, run: &str, file: &str, text: &str) {
    let logs = dir.join(format!("var/trainer/runs/{run}/logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(file))
        .unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
}

/// Each history line of a run, parsed, in offset order.
fn lines(run: &RunRecord) -> Vec<Value> {
    run.history
        .values()
        .map(|l| parse_extended_json(l))
        .collect()
}

fn column(lines: &[Value], key: &str) -> Vec<f64> {
    lines
        .iter()
        .map(|l| l[key].as_f64().unwrap_or_else(|| panic!("{key} in {l}")))
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

/// Rows of one run from two files read at different times (a text log at
/// once, an event-file-like second file later): steps [0, 5, 5, 3, 10]
/// are 5 lines, `_step` 0..4, `global_step` as logged; `_runtime` counts
/// from the earliest metric row (not the config record, not read time).
#[test]
fn rows_from_two_files_are_lines_in_delivery_order() {
    let fixture = sdk::steps_fixture();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JDAS000000000000000STEPS";
    let id = harness::wandb_id(run);
    let standin = StandIn::start();
    let cfg = write_config(dir, &standin.base_url(), "");
    // A config record stamped long before the first metric row: run
    // events never set the run's start.
    append(
        dir,
        run,
        "worker.log",
        &format!(
            "{{\"timestamp\": \"2026-11-27T09:00:00.000Z\", \"event\": \"config\", \"run_id\": \"{run}\", \"config\": {{\"lr\": 0.00025}}}}\n"
        ),
    );
    let text: String = [(0, 1.0), (5, 5.0), (5, 5.5)]
        .iter()
        .enumerate()
        .map(|(i, (s, t))| metric(run, *s, *t, i as f64))
        .collect();
    append(dir, run, "worker.log", &text);
    harness::run_once(dir, &cfg);
    // The second file arrives later: a point at a smaller step, then more.
    append(
        dir,
        run,
        "events.log",
        &(metric(run, 3, 3.0, 3.0) + &metric(run, 10, 10.0, 4.0)),
    );
    harness::run_once(dir, &cfg);

    let got = standin.runs()[&id].clone();
    let l = lines(&got);
    assert_eq!(l.len(), 5, "one line per row: {:?}", got.history);
    assert_eq!(
        got.history.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(column(&l, "_step"), [0.0, 1.0, 2.0, 3.0, 4.0]);
    assert_eq!(column(&l, "global_step"), [0.0, 5.0, 5.0, 3.0, 10.0]);
    assert_eq!(
        column(&l, "charts/episodic_return"),
        [0.0, 1.0, 2.0, 3.0, 4.0]
    );
    let start = T0 + 1.0;
    for line in &l {
        let (rt, ts) = (
            line["_runtime"].as_f64().unwrap(),
            line["_timestamp"].as_f64().unwrap(),
        );
        assert!(rt >= 0.0, "{line}");
        assert!(
            close(rt, ts - start),
            "_runtime = wall time - start: {line}"
        );
    }
    // The summary: latest values, whole seconds in both runtimes.
    let summary = parse_extended_json(got.summary.as_deref().unwrap());
    assert_eq!(summary["_step"], 4, "{summary}");
    assert_eq!(summary["global_step"], 10, "{summary}");
    assert_eq!(summary["_runtime"], 9, "{summary}");
    assert_eq!(summary["_wandb"]["runtime"], 9, "{summary}");
    // `global_step` is every metric's x-axis, as the SDK declares it.
    assert_eq!(
        sdk::config_m(&standin.requests()),
        fixture["online"]["config_m"],
        "the agent's define_metric differs from the SDK's recording"
    );
    // The recording's lines count the same way.
    let recorded: Vec<(Value, Value)> = fixture["online"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["_step"].clone(), h["global_step"].clone()))
        .collect();
    let ours: Vec<(Value, Value)> = l
        .iter()
        .map(|h| (h["_step"].clone(), h["global_step"].clone()))
        .collect();
    assert_eq!(ours, recorded);

    // A row older than every row before moves the start back: its own
    // `_runtime` is 0, lines already sent keep theirs, the summary counts
    // from the new start.
    append(dir, run, "events.log", &metric(run, 1, 0.25, 5.0));
    harness::run_once(dir, &cfg);
    let got = standin.runs()[&id].clone();
    let l = lines(&got);
    assert_eq!(l.len(), 6);
    assert_eq!(l[5]["_runtime"].as_f64(), Some(0.0), "{}", l[5]);
    assert!(close(l[4]["_runtime"].as_f64().unwrap(), 9.0), "{}", l[4]);
    let summary = parse_extended_json(got.summary.as_deref().unwrap());
    assert_eq!(summary["_runtime"], 9, "{summary}"); // 10.0 - 0.25, whole seconds
    assert_eq!(summary["global_step"], 1, "latest row: {summary}");
}

/// A CartPole-like run: several envs finish episodes at one global step,
/// and a second file delivers earlier steps late. Offline, the real
/// `wandb sync` uploads every point at its logged `global_step`, none
/// renumbered or dropped, with the SDK's define_metric; `mosaic-shipper
/// sync` of the same directory sends the same lines and definitions.
#[test]
fn offline_points_keep_their_steps_through_wandb_sync() {
    let fixture = sdk::steps_fixture();
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JDAS00000000000CARTPOLE1";
    let id = harness::wandb_id(run);
    // 4 envs; at each step of 128 some finish at once.
    let mut rows: Vec<(i64, f64, f64)> = Vec::new();
    let mut t = 2.0;
    for k in 1..=40i64 {
        let finishing = [3, 1, 4, 2][k as usize % 4];
        for e in 0..finishing {
            t += 0.01;
            rows.push((k * 128, t, (k * 10 + e) as f64 + 0.5));
        }
    }
    let text: String = rows
        .iter()
        .map(|(s, t, v)| metric(run, *s, *t, *v))
        .collect();
    append(dir, run, "worker.log", &text);
    let cfg_text = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"",
        dir.join("wandb").display()
    );
    let cfg = write_config(dir, "http://127.0.0.1:9", &cfg_text);
    harness::run_once(dir, &cfg);
    // The late file: steps the text log never had, earlier in time.
    let late: Vec<(i64, f64, f64)> = (0..5)
        .map(|i| (64 + i * 128, 1.0 + i as f64 * 0.1, 0.25))
        .collect();
    // ...and then the worker's end, after them in the same file.
    let mut late_text: String = late
        .iter()
        .map(|(s, t, v)| metric(run, *s, *t, *v))
        .collect();
    late_text.push_str(&format!(
        "{{\"event\": \"run_completed\", \"run_id\": \"{run}\", \"timestamp\": {}}}\n",
        T0 + 10.0
    ));
    append(dir, run, "late.log", &late_text);
    // Runs until the run-finished record writes the exit record.
    let mut child = harness::spawn(harness::agent(dir, &cfg, &[]).current_dir(dir));
    let run_dir = wait_for_exit(dir, &id);
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(harness::wait_child(&mut child.0, Duration::from_secs(60)).success());
    rows.extend(late);

    // W&B's reader decodes the metric record as the SDK writes it.
    let records = sdk::datastore_read(&sdk::log_in(&run_dir));
    assert_eq!(
        sdk::metric_records(&records),
        fixture["offline"]["metric_records"],
        "the offline define_metric differs from the SDK's recording"
    );

    for (who, standin) in [
        ("wandb sync", {
            let s = StandIn::start();
            sdk::wandb_sync(dir, &run_dir, &s);
            s
        }),
        ("mosaic-shipper sync", {
            let s = StandIn::start();
            let cfg = write_config(dir, &s.base_url(), "");
            let out = harness::shipper(dir, "sync", &cfg, &["--include-synced"])
                .arg(&run_dir)
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", harness::stderr_logs(dir));
            s
        }),
    ] {
        let got = standin
            .runs()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| panic!("{who}: no run"));
        let l = lines(&got);
        assert_eq!(l.len(), rows.len(), "{who}: every point, once");
        let steps: Vec<f64> = (0..rows.len()).map(|i| i as f64).collect();
        assert_eq!(
            column(&l, "_step"),
            steps,
            "{who}: _step counts lines, none renumbered"
        );
        let want: Vec<f64> = rows.iter().map(|r| r.0 as f64).collect();
        assert_eq!(
            column(&l, "global_step"),
            want,
            "{who}: each point at its logged step"
        );
        let values: Vec<f64> = rows.iter().map(|r| r.2).collect();
        assert_eq!(column(&l, "charts/episodic_return"), values, "{who}");
        // Each line counts from the start known when it was made: the
        // earliest row so far, in delivery order.
        let mut start = f64::INFINITY;
        for (line, row) in l.iter().zip(&rows) {
            start = start.min(T0 + row.1);
            let rt = line["_runtime"].as_f64().unwrap();
            assert!(rt >= 0.0, "{who}: {line}");
            assert!(close(rt, T0 + row.1 - start), "{who}: {line}");
        }
        assert_eq!(got.exit_code, Some(0), "{who}");
        assert_eq!(
            sdk::config_m(&standin.requests()),
            fixture["wandb_sync"]["config_m"],
            "{who}: define_metric as wandb sync sends the SDK's"
        );
        let counts: BTreeMap<i64, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.0).or_default() += 1;
            m
        });
        assert!(
            counts.values().any(|&n| n > 1),
            "the case has repeated steps"
        );
    }
}

/// Waits (bounded) for the offline run's exit record; returns its
/// directory.
fn wait_for_exit(dir: &Path, id: &str) -> PathBuf {
    let mut found = None;
    harness::wait_for(dir, Duration::from_secs(60), "the exit record", || {
        let Ok(entries) = std::fs::read_dir(dir.join("wandb")) else {
            return false;
        };
        for e in entries.flatten() {
            let file = e.path().join(format!("run-{id}.wandb"));
            if let Ok(data) = std::fs::read(&file) {
                let (records, _) = mosaic_shipper::sink::wandb::offline::txlog::read_records(&data);
                let exit = records.iter().any(|r| {
                    use prost::Message;
                    matches!(
                        mosaic_shipper::sink::wandb::offline::records::Record::decode(r.as_slice())
                            .ok()
                            .and_then(|r| r.record_type),
                        Some(
                            mosaic_shipper::sink::wandb::offline::records::record::RecordType::Exit(
                                _
                            )
                        )
                    )
                });
                if exit {
                    found = Some(e.path());
                    return true;
                }
            }
        }
        false
    });
    found.unwrap()
}
