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

/// One `wandb-history.jsonl` line: the row's values plus `_step`,
/// `_runtime` (seconds since the run's first row) and `_timestamp`.
pub fn history_line(
    step: i64,
    runtime: f64,
    timestamp: f64,
    values: &BTreeMap<String, f64>,
) -> String {
    let mut out = String::from("{");
    for (k, v) in values {
        if k.starts_with('_') && matches!(k.as_str(), "_step" | "_runtime" | "_timestamp") {
            continue; // ours win: W&B reserves these names
        }
        push_key(&mut out, k);
        push_number(&mut out, *v);
        out.push(',');
    }
    push_key(&mut out, "_step");
    out.push_str(&step.to_string());
    out.push(',');
    push_key(&mut out, "_runtime");
    push_number(&mut out, runtime);
    out.push(',');
    push_key(&mut out, "_timestamp");
    push_number(&mut out, timestamp);
    out.push('}');
    out
}

/// The `wandb-summary.json` line: the complete current summary (W&B
/// replaces it as a whole at offset 0), with `_wandb.runtime` in whole
/// seconds as core writes it.
pub fn summary_line(
    step: i64,
    runtime: f64,
    timestamp: f64,
    latest: &BTreeMap<String, f64>,
) -> String {
    let mut out = history_line(step, runtime, timestamp, latest);
    out.pop();
    out.push(',');
    push_key(&mut out, "_wandb");
    out.push_str(&format!("{{\"runtime\":{}}}", runtime.max(0.0) as i64));
    out.push('}');
    out
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
}

impl Update {
    pub fn body(&self) -> Vec<u8> {
        let mut files = serde_json::Map::new();
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
        let line = history_line(3, 1.5, 1795797757.088938, &v);
        assert_eq!(
            line,
            r#"{"len":17,"loss":NaN,"lr":0.00025,"n/x":-Infinity,"r":Infinity,"_step":3,"_runtime":1.5,"_timestamp":1795797757.088938}"#
        );
        let s = summary_line(3, 2.7, 10.0, &v);
        assert!(
            s.ends_with(r#""_timestamp":10,"_wandb":{"runtime":2}}"#),
            "{s}"
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
        };
        let v: Value = serde_json::from_slice(&u.body()).unwrap();
        assert_eq!(v["files"]["wandb-history.jsonl"]["offset"], 5);
        assert_eq!(v["files"]["wandb-summary.json"]["offset"], 0);
        assert_eq!(v["uploaded"], json!(["config.yaml"]));
        assert_eq!(v["complete"], true);
        assert_eq!(v["exitcode"], 0);
        let v: Value = serde_json::from_slice(&Update::default().body()).unwrap();
        assert_eq!(v, json!({}));
    }
}
