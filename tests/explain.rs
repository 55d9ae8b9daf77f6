//! Nothing silent: `mosaic-shipper explain` says what each record of a file
//! makes or why nothing, `run --once` warns once about a file that yields
//! lines but no rows, and `status` counts per source and kind. The inputs
//! are written by the real writers (tests/py/explain_inputs.py:
//! python-json-logger, the standard logging module in CleanRL's format,
//! TensorBoard's EventFileWriter, json.dump).

mod common;

use std::path::Path;
use std::process::Command;

use common::{python, Tree};
use serde_json::{json, Value};

const RUN: &str = "01JEXPLAINRUN";
/// The run of the event file: alone, so the text logs of RUN do not give
/// way to it.
const TB_RUN: &str = "01JEXPLAINTBRUN";
/// The run of the file that makes no row, alone.
const QUIET_RUN: &str = "01JEXPLAINQUIETRUN";

/// A tree holding every input, with the embedded default moved into it,
/// and what the script says each file holds.
fn inputs() -> (Tree, Value) {
    let tree = Tree::new();
    tree.write_config();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/explain_inputs.py");
    let out = Command::new(python())
        .arg(script)
        .arg(tree.root())
        .arg(RUN)
        .arg(TB_RUN)
        .arg(QUIET_RUN)
        .output()
        .expect("run tests/py/explain_inputs.py");
    assert!(
        out.status.success(),
        "explain_inputs.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = serde_json::from_slice(&out.stdout).unwrap();
    (tree, expected)
}

struct Said {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn explain(tree: &Tree, args: &[&str]) -> Said {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    let out = tree.shipper(&all).output().unwrap();
    Said {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `explain --json`: the file object, the records, the summary.
fn explain_json(tree: &Tree, file: &str, extra: &[&str]) -> (Value, Vec<Value>, Value) {
    let mut args = vec![file, "--json"];
    args.extend_from_slice(extra);
    let said = explain(tree, &args);
    assert_eq!(said.code, Some(0), "{file}: {}", said.stderr);
    let mut objects: Vec<Value> = said
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert!(objects.len() >= 2, "{}", said.stdout);
    let summary = objects.pop().unwrap()["summary"].clone();
    let head = objects.remove(0);
    (head, objects, summary)
}

fn logs(name: &str) -> String {
    format!("var/trainer/runs/{RUN}/logs/{name}")
}

#[test]
fn explain_names_the_rule_or_the_reason_for_every_kind_of_input() {
    let (tree, expected) = inputs();
    let root = tree.root().display().to_string();

    // (a) python-json-logger: its message is not "metrics" but in one record.
    let file = logs("worker.jsonl");
    let said = explain(&tree, &[&file]);
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let text = &said.stdout;
    assert!(text.contains("source  worker-logs (kind lines)"), "{text}");
    assert_eq!(
        text.matches(r#"closest rule "python-json-logger-metrics" missed:"#)
            .count(),
        3,
        "{text}"
    );
    assert!(
        text.contains(r#"message = "metrics" (the record has "epoch done")"#),
        "{text}"
    );
    assert!(
        text.contains(r#"1 row(s) (rule "python-json-logger-metrics")"#)
            && text.contains("charts/episodic_return=1.5"),
        "{text}"
    );
    let (head, records, summary) = explain_json(&tree, &file, &[]);
    assert_eq!(head["source"]["name"], "worker-logs");
    assert_eq!(head["kind"], "lines");
    assert_eq!(records.len(), 4);
    for r in &records[..3] {
        assert_eq!(r["outcome"], "no_match", "{r}");
        assert_eq!(r["closest"], "python-json-logger-metrics", "{r}");
        assert!(r["text"].as_str().unwrap().contains("epoch done"), "{r}");
    }
    let r = &records[3];
    assert_eq!(
        (&r["outcome"], &r["rule"]),
        (&json!("rows"), &json!("python-json-logger-metrics"))
    );
    assert_eq!(r["rows"][0]["run_id"], RUN);
    assert_eq!(r["rows"][0]["step"], 10);
    assert_eq!(
        r["rows"][0]["values"],
        json!({"charts/episodic_return": 1.5})
    );
    assert_eq!(
        summary,
        json!({"records": 4, "rows": 1, "more": false, "waiting": null})
    );
    // --lines limits, and says there is more.
    let (_, records, summary) = explain_json(&tree, &file, &["--lines", "2"]);
    assert_eq!(records.len(), 2);
    assert_eq!(summary["more"], true);

    // (b) CleanRL's text log.
    let (_, records, _) = explain_json(&tree, &logs("cleanrl.stderr.log"), &[]);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["outcome"], "no_match");
    assert_eq!(records[0]["closest"], "cleanrl-text");
    assert!(
        records[0]["missed"][0]
            .as_str()
            .unwrap()
            .contains("no metric key"),
        "{}",
        records[0]
    );
    assert_eq!(records[1]["rule"], "cleanrl-text");
    assert_eq!(records[1]["rows"][0]["step"], 44);
    assert_eq!(
        records[1]["rows"][0]["values"],
        json!({"charts/episodic_return": 11.0, "charts/episodic_length": 11.0})
    );

    // (c) TensorBoard's own writer: header, scalar, TF 1 and TF 2 histograms.
    let event_file = expected["event_file"].as_str().unwrap();
    let (head, records, summary) = explain_json(&tree, event_file, &[]);
    assert_eq!(head["source"]["name"], "worker-tensorboard");
    assert_eq!(records.len(), 4, "{records:?}");
    assert_eq!(records[0]["outcome"], "skipped");
    assert!(records[0]["why"].as_str().unwrap().starts_with("header"));
    assert_eq!(records[1]["outcome"], "rows");
    assert_eq!(records[1]["rows"][0]["step"], 5);
    assert_eq!(records[1]["rows"][0]["run_id"], TB_RUN);
    assert_eq!(
        records[1]["rows"][0]["values"],
        json!({"charts/episodic_return": 11.0})
    );
    for (r, tag, step) in [(&records[2], "weights", 6), (&records[3], "actions", 7)] {
        assert_eq!(r["outcome"], "skipped", "{r}");
        assert_eq!(
            r["why"],
            format!("step {step}: histogram {tag:?} (not a scalar)"),
            "{r}"
        );
    }
    assert_eq!(summary["rows"], 1);
    let text = explain(&tree, &[event_file]).stdout;
    assert!(text.contains("no row: header (brain.Event:2)"), "{text}");
    // A damaged copy outside every source: named as such, read as an event
    // file by its name, the damaged frame named with its offset, the
    // record after it still read.
    let mut bytes = std::fs::read(tree.root().join(event_file)).unwrap();
    let third = records[2]["offset"].as_u64().unwrap() as usize;
    bytes[third + 12 + 2] ^= 0xff; // inside the third record's data
    let damaged = tree.root().join("copies/events.out.tfevents.9.host");
    std::fs::create_dir_all(damaged.parent().unwrap()).unwrap();
    std::fs::write(&damaged, &bytes).unwrap();
    let (head, got, _) = explain_json(&tree, "copies/events.out.tfevents.9.host", &[]);
    assert_eq!(head["source"], Value::Null);
    assert_eq!(head["kind"], "tfevents");
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got[2]["outcome"], "skipped");
    assert_eq!(got[2]["offset"], third as u64);
    let why = got[2]["why"].as_str().unwrap();
    assert!(
        why.contains("damaged record") && why.contains(&format!("at byte {third}")),
        "{why}"
    );
    assert_eq!(got[3]["why"], records[3]["why"]);
    // Its scalar makes no row there: no run id in that path.
    assert_eq!(got[1]["outcome"], "rejected", "{}", got[1]);
    assert!(
        got[1]["why"].as_str().unwrap().contains("no run id"),
        "{}",
        got[1]
    );

    // (d) The run's configuration document.
    let doc = format!("var/trainer/configs/config-{RUN}.json");
    let (head, records, _) = explain_json(&tree, &doc, &[]);
    assert_eq!(head["source"]["name"], "run-configs");
    assert_eq!(head["kind"], "document");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["rule"], "mosaic-config-document");
    let written: Value =
        serde_json::from_slice(&std::fs::read(tree.root().join(&doc)).unwrap()).unwrap();
    assert_eq!(records[0]["rows"][0]["config"], written);
    assert_eq!(records[0]["rows"][0]["run_id"], RUN);

    // (e) A path no source lists: said so, with every pattern.
    let said = explain(&tree, &["notes.txt"]);
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let text = &said.stdout;
    assert!(
        text.contains("no source matches this path: it would not be read"),
        "{text}"
    );
    for pattern in [
        format!("{root}/var/trainer/runs/*/logs/*.log"),
        format!("{root}/var/trainer/runs/*/tensorboard/**/events.out.tfevents.*"),
        "var/trainer/configs/config-*.json".to_string(),
    ] {
        assert!(text.contains(&pattern), "{pattern} not in {text}");
    }
    // Read anyway, as a line file: the line itself would make no row
    // either (no run id in its path).
    assert!(
        text.contains(r#"rejected (rule "cleanrl-text"): no run id"#),
        "{text}"
    );
    let (head, _, _) = explain_json(&tree, "notes.txt", &[]);
    assert_eq!(head["source"], Value::Null);
    assert!(head["patterns"].as_array().unwrap().len() >= 5, "{head}");

    // The same file by another name (absolute) matches the same source.
    let abs = tree.root().join(logs("worker.jsonl"));
    let (head, _, _) = explain_json(&tree, abs.to_str().unwrap(), &["-n", "1"]);
    assert_eq!(head["source"]["name"], "worker-logs");

    // Unreadable: exit 2 with the path named.
    let said = explain(&tree, &["no/such/file.log"]);
    assert_eq!(said.code, Some(2));
    assert!(
        said.stderr.contains("cannot read no/such/file.log"),
        "{}",
        said.stderr
    );
    let said = explain(&tree, &["var"]);
    assert_eq!(said.code, Some(2));
    assert!(said.stderr.contains("is a directory"), "{}", said.stderr);
}

/// Log text without terminal colours.
fn plain(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The source each input belongs to under the embedded default.
fn source_of(rel: &str) -> &'static str {
    if rel.contains("/logs/") {
        "worker-logs"
    } else if rel.contains("/tensorboard/") {
        "worker-tensorboard"
    } else {
        "run-configs"
    }
}

#[test]
fn run_once_warns_once_about_a_silent_file_and_status_counts_per_source() {
    let (tree, expected) = inputs();
    let out = tree.run_once();
    let stderr = plain(&out.stderr);
    let said: Vec<&str> = stderr.lines().filter(|l| l.contains("no rows")).collect();
    let warnings: Vec<&str> = said
        .iter()
        .copied()
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert_eq!(said.len(), 2, "{stderr}");
    // setup.log is beside files of its run that make rows: only noted.
    let setup = tree.root().join(logs("setup.log"));
    let note = said.iter().find(|l| !l.contains(" WARN ")).unwrap();
    assert!(
        note.contains(" INFO ")
            && note.contains(&format!("3 lines but no rows from {}", setup.display()))
            && note.contains(&format!("Other files of run {RUN} made rows")),
        "{note}"
    );
    let w = warnings[0];
    let chatter = tree
        .root()
        .join(format!("var/trainer/runs/{QUIET_RUN}/logs/chatter.jsonl"));
    for part in [
        format!("200 lines but no rows from {}", chatter.display()),
        r#"source "worker-logs""#.to_string(),
        r#"closest rule "python-json-logger-metrics" missed: message = "metrics" (the record has "heartbeat")"#.to_string(),
    ] {
        assert!(w.contains(&part), "{part:?} not in {w}");
    }

    // status: per source, per kind, against what the script wrote.
    let mut want: std::collections::BTreeMap<&str, (u64, u64, u64, u64)> = Default::default();
    for (rel, f) in expected["files"].as_object().unwrap() {
        let e = want.entry(source_of(rel)).or_default();
        let (lines, rows) = (f["lines"].as_u64().unwrap(), f["rows"].as_u64().unwrap());
        e.0 += 1;
        e.1 += lines;
        e.2 += rows;
        e.3 += u64::from(rows == 0);
    }
    assert_eq!(want["worker-logs"], (4, 209, 2, 2));
    let status = tree.status_json();
    for (name, (files, lines, rows, silent)) in &want {
        let s = &status["sources"][name];
        assert_eq!(
            (
                &s["files"],
                &s["lines"],
                &s["rows"],
                &s["files_without_rows"],
                &s["ignored_files"]
            ),
            (
                &json!(files),
                &json!(lines),
                &json!(rows),
                &json!(silent),
                &json!(0)
            ),
            "{name}: {s}"
        );
    }
    assert_eq!(status["sources"]["worker-tensorboard"]["kind"], "tfevents");
    assert_eq!(status["kinds"]["lines"]["rows"], 2);
    assert_eq!(status["kinds"]["document"]["rows"], 1);
    assert_eq!(status["kinds"]["tfevents"]["lines"], 4);

    // A second run finds the agent's own event file (its TensorBoard sink
    // wrote it in the run's tensorboard/): ignored, not "no rows", and no
    // new warning for a file with nothing new.
    let out = tree.run_once();
    let stderr = plain(&out.stderr);
    assert!(!stderr.contains("no rows"), "{stderr}");
    let status = tree.status_json();
    let tb = &status["sources"]["worker-tensorboard"];
    assert_eq!(
        (&tb["files"], &tb["ignored_files"]),
        (&json!(2), &json!(1)),
        "{tb}"
    );
    assert_eq!(tb["files_without_rows"], 0, "{tb}");
    let own: Vec<&Value> = status["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["ignored"].is_string())
        .collect();
    assert_eq!(own.len(), 1, "{status}");
    assert_eq!(own[0]["source"], "worker-tensorboard");
    let text = tree.shipper(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("[ignored: written by mosaic-shipper]"),
        "{text}"
    );
    assert_eq!(
        text.matches("[lines but no rows").count(),
        2,
        "chatter.jsonl and setup.log: {text}"
    );
}
