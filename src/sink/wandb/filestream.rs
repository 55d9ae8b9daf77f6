//! file_stream: history lines, the summary and run completion.
//!
//! Shapes follow W&B core (`core/internal/filestream/`, observed from
//! wandb 0.31.0; docs/wandb-protocol.md section 3):
//! `POST <base>/files/<entity>/<project>/<run>/file_stream` with
//! `{"files": {"wandb-history.jsonl": {"offset": N, "content": [line...]},
//! "wandb-summary.json": {"offset": 0, "content": [summary]}},
//! "complete": true, "exitcode": C}`. The server stores history lines by
//! offset, so re-sending the same lines at the same offset rewrites them:
//! that is what makes a retried or replayed request harmless.
//!
//! Lines use W&B's extended JSON: `NaN`, `Infinity` and `-Infinity` as
//! bare tokens (core's `simplejsonext`), integers without a fraction.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::http::{Http, Request, WandbError};

/// Appends `v` as W&B writes floats: integral values as integers, the
/// shortest round-trip form otherwise, non-finite values as bare tokens.
pub fn push_number(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        out.push_str(&format!("{}", v as i64));
    } else {
        out.push_str(&serde_json::to_string(&v).expect("finite floats serialise"));
    }
}

fn push_key(out: &mut String, k: &str) {
    out.push_str(&serde_json::to_string(k).expect("strings serialise"));
    out.push(':');
}

/// Keys a history line sets itself; a worker's values of the same name
/// are left out (W&B reserves the `_` names, and `global_step` carries the
/// row's own step).
fn reserved(k: &str) -> bool {
    matches!(k, "_step" | "_runtime" | "_timestamp" | "global_step")
}

/// One `wandb-history.jsonl` line: the row's values plus `global_step`
/// (the worker's step), `_step` (the line's number in the run, as W&B's
/// TensorBoard sync counts rows), `_runtime` (seconds since the run's
/// start) and `_timestamp` (the row's wall time).
pub fn history_line(
    line_step: i64,
    global_step: i64,
    runtime: f64,
    timestamp: f64,
    values: &BTreeMap<String, f64>,
) -> String {
    let mut out = String::from("{");
    push_values(&mut out, values);
    push_key(&mut out, super::step_metric::STEP_KEY);
    out.push_str(&global_step.to_string());
    out.push(',');
    push_key(&mut out, "_step");
    out.push_str(&line_step.to_string());
    out.push(',');
    push_key(&mut out, "_runtime");
    push_number(&mut out, runtime);
    out.push(',');
    push_key(&mut out, "_timestamp");
    push_number(&mut out, timestamp);
    out.push('}');
    out
}

fn push_values(out: &mut String, values: &BTreeMap<String, f64>) {
    for (k, v) in values {
        if reserved(k) {
            continue;
        }
        push_key(out, k);
        push_number(out, *v);
        out.push(',');
    }
}

/// What the summary says besides the latest values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryTimes {
    /// `_step` of the run's last line; `None` before the first.
    pub line_step: Option<i64>,
    /// `global_step` of the last row.
    pub global_step: Option<i64>,
    /// Seconds from the run's start to its latest row.
    pub runtime: f64,
    /// Wall time of the last row.
    pub timestamp: Option<f64>,
}

/// The `wandb-summary.json` line: the complete current summary (W&B
/// replaces it as a whole at offset 0). `_runtime` and `_wandb.runtime`
/// are the same whole seconds, as core's `updateRunTiming` writes both.
pub fn summary_line(times: &SummaryTimes, latest: &BTreeMap<String, f64>) -> String {
    let mut out = String::from("{");
    push_values(&mut out, latest);
    if let Some(g) = times.global_step {
        push_key(&mut out, super::step_metric::STEP_KEY);
        out.push_str(&g.to_string());
        out.push(',');
    }
    if let Some(s) = times.line_step {
        push_key(&mut out, "_step");
        out.push_str(&s.to_string());
        out.push(',');
    }
    if let Some(t) = times.timestamp {
        push_key(&mut out, "_timestamp");
        push_number(&mut out, t);
        out.push(',');
    }
    let secs = whole_seconds(times.runtime);
    push_key(&mut out, "_runtime");
    out.push_str(&secs.to_string());
    out.push(',');
    push_key(&mut out, "_wandb");
    out.push_str(&format!("{{\"runtime\":{secs}}}"));
    out.push('}');
    out
}

/// A runtime in whole seconds, as `_wandb.runtime` holds it: never
/// negative, truncated like core's `int(elapsed.Seconds())`.
pub fn whole_seconds(runtime: f64) -> i64 {
    if runtime.is_finite() {
        runtime.max(0.0) as i64
    } else {
        0
    }
}

/// One file_stream request body.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub history_offset: u64,
    pub history: Vec<String>,
    pub summary: Option<String>,
    /// Run files uploaded since the last request (reported as core does).
    pub uploaded: Vec<String>,
    /// `Some(code)`: the run is finished; sent only in the last request.
    pub exit_code: Option<i32>,
    /// `output.log` lines (the console, see `overview`) from this offset.
    pub console_offset: u64,
    pub console: Vec<String>,
    /// Other line files, by offset like the history: the system metrics
    /// (`wandb-events.jsonl`) and the console (`output.log`).
    pub streams: Vec<Stream>,
}

/// Lines of one of a run's line files, from `offset` on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stream {
    /// `wandb-events.jsonl` or `output.log`.
    pub name: &'static str,
    pub offset: u64,
    pub lines: Vec<String>,
}

/// The file of the run's system metrics (W&B's System tab).
pub const EVENTS_FILE: &str = "wandb-events.jsonl";

impl Update {
    pub fn body(&self) -> Vec<u8> {
        let mut files = serde_json::Map::new();
        if !self.console.is_empty() {
            files.insert(
                super::overview::OUTPUT_FILE.into(),
                json!({"offset": self.console_offset, "content": self.console}),
            );
        }
        if !self.history.is_empty() {
            files.insert(
                "wandb-history.jsonl".into(),
                json!({"offset": self.history_offset, "content": self.history}),
            );
        }
        if let Some(s) = &self.summary {
            files.insert(
                "wandb-summary.json".into(),
                json!({"offset": 0, "content": [s]}),
            );
        }
        for s in self.streams.iter().filter(|s| !s.lines.is_empty()) {
            files.insert(
                s.name.into(),
                json!({"offset": s.offset, "content": s.lines}),
            );
        }
        let mut body = serde_json::Map::new();
        if !files.is_empty() {
            body.insert("files".into(), Value::Object(files));
        }
        if !self.uploaded.is_empty() {
            body.insert("uploaded".into(), json!(self.uploaded));
        }
        if let Some(code) = self.exit_code {
            body.insert("complete".into(), Value::Bool(true));
            body.insert("exitcode".into(), json!(code));
        }
        serde_json::to_vec(&Value::Object(body)).expect("JSON values serialise")
    }
}

/// The file_stream URL of a run.
pub fn url(base_url: &str, entity: &str, project: &str, run: &str) -> String {
    format!("{base_url}/files/{entity}/{project}/{run}/file_stream")
}

/// Sends one update; returns once the server acknowledged it.
pub async fn send(
    http: &Http,
    url: &str,
    run: &str,
    update: &Update,
    gzip: bool,
) -> Result<(), WandbError> {
    let answer = http
        .post(&Request {
            url,
            what: "file_stream",
            run,
            body: update.body(),
            gzip,
            graphql: false,
            upload: None,
        })
        .await?;
    // Core only reads `stopped`; a non-JSON answer is not fatal there either.
    if let Ok(v) = serde_json::from_slice::<Value>(&answer) {
        if v.get("stopped").and_then(Value::as_bool) == Some(true) {
            tracing::warn!(
                run,
                "W&B reports the run as stopped from the UI; the agent keeps shipping its rows"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_use_wandb_extended_json() {
        let mut v = BTreeMap::new();
        v.insert("loss".to_string(), f64::NAN);
        v.insert("r".to_string(), f64::INFINITY);
        v.insert("n/x".to_string(), f64::NEG_INFINITY);
        v.insert("len".to_string(), 17.0);
        v.insert("lr".to_string(), 2.5e-4);
        v.insert("global_step".to_string(), 99.0);
        let line = history_line(3, 40, 1.5, 1795797757.088938, &v);
        assert_eq!(
            line,
            r#"{"len":17,"loss":NaN,"lr":0.00025,"n/x":-Infinity,"r":Infinity,"global_step":40,"_step":3,"_runtime":1.5,"_timestamp":1795797757.088938}"#
        );
        let times = SummaryTimes {
            line_step: Some(3),
            global_step: Some(40),
            runtime: 2.7,
            timestamp: Some(10.0),
        };
        let s = summary_line(&times, &v);
        assert!(
            s.ends_with(
                r#""global_step":40,"_step":3,"_timestamp":10,"_runtime":2,"_wandb":{"runtime":2}}"#
            ),
            "{s}"
        );
        let empty = SummaryTimes {
            line_step: None,
            global_step: None,
            runtime: f64::NAN,
            timestamp: None,
        };
        assert_eq!(
            summary_line(&empty, &BTreeMap::new()),
            r#"{"_runtime":0,"_wandb":{"runtime":0}}"#
        );
    }

    #[test]
    fn request_shapes() {
        let u = Update {
            history_offset: 5,
            history: vec!["{}".into()],
            summary: Some("{}".into()),
            uploaded: vec!["config.yaml".into()],
            exit_code: Some(0),
            console_offset: 7,
            console: vec!["ERROR 2026-12-02T05:06:35.632764 boom".into()],
            streams: vec![Stream {
                name: EVENTS_FILE,
                offset: 2,
                lines: vec!["{}".into()],
            }],
        };
        let v: Value = serde_json::from_slice(&u.body()).unwrap();
        assert_eq!(v["files"]["wandb-history.jsonl"]["offset"], 5);
        assert_eq!(v["files"]["wandb-summary.json"]["offset"], 0);
        assert_eq!(v["uploaded"], json!(["config.yaml"]));
        assert_eq!(v["files"]["wandb-events.jsonl"]["offset"], 2);
        assert_eq!(v["complete"], true);
        assert_eq!(v["exitcode"], 0);
        assert_eq!(v["files"]["output.log"]["offset"], 7);
        assert_eq!(
            v["files"]["output.log"]["content"],
            json!(["ERROR 2026-12-02T05:06:35.632764 boom"])
        );
        let v: Value = serde_json::from_slice(&Update::default().body()).unwrap();
        assert_eq!(v, json!({}));
    }
}
