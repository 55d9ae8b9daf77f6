//! The embedded default rules read what real workers and logging libraries
//! write, with no configuration: tests/py/worker_logs.py writes the logs
//! with the real libraries (stdlib logging in CleanRL's format, upstream
//! CleanRL's prints, python-json-logger, structlog, Ray's json.dump, MOSAIC's
//! lifecycle JSON) and the rows expected of them; every file is fed line by
//! line through `Extractor` with one memo per file, and the rows must be
//! exactly those.

use std::path::Path;
use std::process::Command;

use mosaic_shipper::config::{Config, EMBEDDED_DEFAULT};
use mosaic_shipper::extract::{Extractor, Memo};
use mosaic_shipper::row::{Row, RunEvent};
use mosaic_shipper::stats::Counters;
use serde_json::Value;

const READ_TIME: f64 = 1.5e9;

fn python() -> String {
    std::env::var("MOSAIC_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "MOSAIC_TEST_PYTHON is not set: run the tests with scripts/test, which builds the \
             venv with python-json-logger and structlog"
        )
    })
}

fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "NaN" => f64::NAN,
        Value::String(s) if s == "Infinity" => f64::INFINITY,
        Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
        _ => v.as_f64().unwrap_or_else(|| panic!("not a number: {v}")),
    }
}

/// `got` against one expected row; NaN equals NaN, every other value
/// bit for bit.
fn check(file: &str, i: usize, got: &Row, want: &Value) {
    let ctx = format!("{file} row {i}: got {got:?}, want {want}");
    assert_eq!(got.run_id, want["run_id"].as_str().unwrap(), "{ctx}");
    assert_eq!(got.step, want["step"].as_i64().unwrap(), "{ctx}");
    let wall = want["wall_time"].as_f64().unwrap_or(READ_TIME);
    assert_eq!(got.wall_time.to_bits(), wall.to_bits(), "{ctx}");
    let values = want["values"].as_object().unwrap();
    assert_eq!(
        got.values.keys().collect::<Vec<_>>(),
        values.keys().collect::<Vec<_>>(),
        "{ctx}"
    );
    for (tag, v) in values {
        let (g, w) = (got.values[tag], number(v));
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{ctx}: {tag} {g} != {w}"
        );
    }
    match (&got.event, want.get("config"), want.get("finished")) {
        (None, None, None) => {}
        (Some(RunEvent::Config(text)), Some(config), None) => {
            let got: Value = serde_json::from_str(text).unwrap();
            assert_eq!(&got, config, "{ctx}");
        }
        (Some(RunEvent::Finished(code)), None, Some(want)) => {
            assert_eq!(i64::from(*code), want.as_i64().unwrap(), "{ctx}")
        }
        _ => panic!("{ctx}: wrong event"),
    }
}

#[test]
fn default_rules_read_real_worker_logs() {
    // A zone with a half-hour offset, so local times (asctime) are really
    // converted; the C library reads TZ on first use, which is after this
    // line (the only test here, before any thread of its own).
    std::env::set_var("TZ", "IST-5:30");
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/worker_logs.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .env("TZ", "IST-5:30")
        .output()
        .expect("run the Python fixture");
    assert!(
        out.status.success(),
        "worker_logs.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
    let config = Config::parse(EMBEDDED_DEFAULT, "<embedded default>").unwrap();
    let extractor = Extractor::new(&config.extract).unwrap();
    let files = expected["files"].as_array().unwrap();
    assert_eq!(files.len(), 11, "every shape is written");
    let mut total = Counters::default();
    for file in files {
        let rel = file["path"].as_str().unwrap();
        let path = dir.path().join(rel);
        let text = std::fs::read_to_string(&path).unwrap();
        let path = path.to_str().unwrap();
        let mut memo = Memo::default();
        let mut counters = Counters::default();
        let mut rows = Vec::new();
        let mut offset = 0;
        for line in text.lines() {
            extractor.extract(
                path,
                offset,
                line,
                READ_TIME,
                &mut memo,
                &mut counters,
                &mut rows,
            );
            offset += line.len() as u64 + 1;
        }
        let want = file["rows"].as_array().unwrap();
        assert!(!want.is_empty(), "{rel}: the fixture expects rows");
        assert_eq!(
            rows.len(),
            want.len(),
            "{rel}: got {rows:#?}\nwant {want:#?}"
        );
        for (i, (got, want)) in rows.iter().zip(want).enumerate() {
            check(rel, i, got, want);
        }
        assert_eq!(counters.rows, rows.len() as u64, "{rel}");
        assert_eq!(counters.invalid_json, 0, "{rel}");
        total.add(&counters);
    }
    // The fixture's lines without a step (SPS first in a file, or first in
    // a new run) are rejected; its ordinary lines are unmatched.
    assert_eq!(total.rejected, 3, "{total:?}");
    assert_eq!(total.unmatched, 16, "{total:?}");
}
