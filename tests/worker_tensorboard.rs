//! A worker that writes each point twice, as MOSAIC's CleanRL worker does:
//! a text log line and its own TensorBoard event file (written by
//! TensorBoard's real writer, tests/py/cleanrl_twin.py). With the embedded
//! default, jsonl gets every point once (from the event file, which has
//! them all), the text lines give way (counted as duplicates), and the
//! agent's TensorBoard sink writes nothing for that run; a run with only
//! a text log still gets its TensorBoard file.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::Tree;

const TWIN: &str = "01KKAQ6XP04TFF59TDWH9EDD1R";
const TEXT_ONLY: &str = "01KKAQ6XP04TFF59TDWH9EDD1S";

/// (tag, step) -> value of what the worker put in its event file.
fn write_twin(run_dir: &Path, steps: u32) -> BTreeMap<(String, i64), f64> {
    let out = Command::new(common::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/cleanrl_twin.py"))
        .arg(run_dir)
        .arg(steps.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: (String, i64, f64) = serde_json::from_str(l).unwrap();
            // simple_value is a float32, as the event file stores it.
            ((v.0, v.1), f64::from(v.2 as f32))
        })
        .collect()
}

/// Event files under a directory, recursively.
fn event_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(event_files(&p));
        } else if p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains("tfevents")
        {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_point_written_to_a_log_and_to_the_workers_event_file_arrives_once() {
    let t = Tree::new();
    t.write_config();
    let runs = t.root().join("var/trainer/runs");
    let want = write_twin(&runs.join(TWIN), 5);
    std::fs::write(
        t.logs(TEXT_ONLY).join("cleanrl.stderr.log"),
        "2026-03-10 01:54:05 | INFO     | __main__ | global_step=44, episodic_return=11.000, length=11\n",
    )
    .unwrap();
    let out = t.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut got: BTreeMap<(String, i64), Vec<f64>> = BTreeMap::new();
    for row in t.delivered(TWIN) {
        let step = row["step"].as_i64().unwrap();
        for (tag, v) in row["values"].as_object().unwrap() {
            got.entry((tag.clone(), step))
                .or_default()
                .push(v.as_f64().unwrap());
        }
    }
    let want: BTreeMap<_, _> = want.into_iter().map(|(k, v)| (k, vec![v])).collect();
    assert_eq!(
        got, want,
        "every point of the event file once, nothing else"
    );

    let status = t.status_json();
    assert_eq!(
        status["counters"]["duplicates"], 5,
        "the 5 text lines gave way"
    );

    // TensorBoard: the worker's file only, for the run that has one.
    let files = event_files(&runs.join(TWIN).join("tensorboard"));
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].to_string_lossy().contains("CartPole-v1__ppo__1__"),
        "{files:?}"
    );
    let text_only = event_files(&runs.join(TEXT_ONLY).join("tensorboard"));
    assert_eq!(
        text_only.len(),
        1,
        "the agent writes TensorBoard for a text-only run"
    );
    assert_eq!(t.delivered(TEXT_ONLY).len(), 1);
    let v = &t.delivered(TEXT_ONLY)[0]["values"];
    assert_eq!(v["charts/episodic_return"], 11.0);
    assert_eq!(v["charts/episodic_length"], 11.0);

    // A second pass reads nothing again: the agent's own event file is
    // known by its first record and left alone.
    let out = t.run_once();
    assert!(out.status.success());
    assert_eq!(t.delivered(TEXT_ONLY).len(), 1);
    let again = t.status_json();
    assert_eq!(again["counters"]["rows"], status["counters"]["rows"]);
}
