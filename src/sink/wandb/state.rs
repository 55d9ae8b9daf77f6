//! The W&B sink's recovery state: per run, where it lives on the server and
//! the next history offset, committed with the cursor.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::filestream;
use super::graphql::Bucket;
use crate::row::Row;
use crate::sink::SinkError;

/// Everything recovery needs, by MOSAIC run id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub runs: BTreeMap<String, RunState>,
    /// Runs not opened on W&B yet: what arrived for them before their
    /// first metric row, console line or end.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waiting: BTreeMap<String, Waiting>,
    /// Runs left to the worker's own W&B run (`worker_tracks`), with
    /// the SDK run directory that told.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub worker_tracked: BTreeMap<String, String>,
}

/// What a run not opened yet has received: a run is opened only once it
/// has more than a configuration (see `worker_tracks`: whether the worker
/// tracks W&B itself is known by then).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    #[serde(default)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub machine: Option<crate::machine::MachineFacts>,
}

impl State {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("state serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<State, SinkError> {
        if bytes.is_empty() {
            return Ok(State::default());
        }
        serde_json::from_slice(bytes)
            .map_err(|e| SinkError::Io(format!("wandb sink: damaged saved state: {e}")))
    }
}

/// One W&B run as the sink knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// W&B run id (file_stream path segment).
    pub name: String,
    /// The MOSAIC run id, shown as the display name.
    pub display: String,
    pub entity: String,
    pub project: String,
    pub storage_id: String,
    /// The run's start: the earliest wall time of its metric rows so far
    /// (`+inf` before the first), `_runtime` counts from it. Run events
    /// (config, finish) do not count: with no time of their own they are
    /// stamped with the time the agent read them.
    #[serde(with = "exact")]
    pub start: f64,
    /// Offset the next history line gets; also its `_step`, so `_step`
    /// counts the run's lines 0, 1, 2, ... as W&B's TensorBoard sync does.
    pub next_offset: u64,
    /// `global_step` of the last row (the worker's step).
    pub last_step: i64,
    /// Wall time of the last row (the summary's `_timestamp`).
    #[serde(with = "exact")]
    pub last_time: f64,
    /// The latest wall time of the run's metric rows: the summary's
    /// `_runtime` is `end - start`.
    #[serde(default, with = "exact")]
    pub end: f64,
    /// Offset the next `wandb-events.jsonl` line (system sample) gets.
    #[serde(default)]
    pub events_offset: u64,
    /// Whether any history line was made (the summary has `_step` then).
    #[serde(default)]
    pub has_rows: bool,
    /// Latest value of every key: the summary.
    #[serde(serialize_with = "ser_values", deserialize_with = "de_values")]
    pub latest: BTreeMap<String, f64>,
    /// Exit code once `complete` was acknowledged.
    pub finished: Option<i32>,
    /// The configuration the worker logged (its keys and values, merged
    /// over earlier ones), sent with `UpsertBucket` in W&B's form.
    #[serde(default)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
    /// A run-finished record's exit code, waiting to be sent as
    /// `complete`. Committed with the cursor, so a crash between the
    /// record's acknowledgement and `complete` does not lose the code.
    #[serde(default)]
    pub finish_requested: Option<i32>,
    /// When (the agent's clock, Unix seconds) a row or record of the run
    /// last reached the sink; 0: not known (a state saved before this was
    /// kept). Saved so that the idle rule spans agent restarts: an agent
    /// restarted in a loop must not keep a dead worker's run "running".
    #[serde(default)]
    pub active_at: f64,
    /// Offset the next `output.log` line (a console row) gets.
    #[serde(default)]
    pub console_offset: u64,
    /// Bytes of the run's `output.log` file so far (its console lines'
    /// texts, each with a newline): where the next line goes in the
    /// sink's copy (`output_file`).
    #[serde(default)]
    pub console_bytes: u64,
    /// What the machine that produced the rows said about itself and the
    /// worker (the run's host, `wandb-metadata.json`, `_wandb.e`).
    #[serde(default)]
    pub machine: Option<crate::machine::MachineFacts>,
    /// Whether `wandb-metadata.json` went up with the facts and start
    /// the run has now (they change: uploaded again).
    #[serde(default)]
    pub metadata_sent: bool,
}

impl RunState {
    /// A run the state does not know yet; its start is set by its first
    /// metric row.
    pub fn new(bucket: &Bucket, display: &str) -> RunState {
        RunState {
            name: bucket.name.clone(),
            display: display.to_string(),
            entity: bucket.entity.clone(),
            project: bucket.project.clone(),
            storage_id: bucket.id.clone(),
            start: f64::INFINITY,
            next_offset: bucket.history_line_count,
            last_step: 0,
            last_time: 0.0,
            end: 0.0,
            has_rows: false,
            events_offset: 0,
            latest: BTreeMap::new(),
            finished: None,
            config: None,
            finish_requested: None,
            active_at: 0.0,
            console_offset: 0,
            console_bytes: 0,
            machine: None,
            metadata_sent: false,
        }
    }

    /// Takes a console line: its `output.log` offset and text.
    pub fn take_console(&mut self, stderr: bool, line: &str, wall_time: f64) -> (u64, String) {
        let offset = self.console_offset;
        self.console_offset += 1;
        self.console_bytes += super::overview::output_file_len(line);
        (
            offset,
            super::overview::output_line(stderr, line, wall_time),
        )
    }

    /// Takes the producing machine's facts; true if they are new. A
    /// worker start known from init mode is the run's start.
    pub fn take_machine(&mut self, facts: crate::machine::MachineFacts) -> bool {
        if let Some(t) = facts.worker.as_ref().map(|w| w.started_at) {
            if t.is_finite() && t < self.start {
                self.start = t;
                self.metadata_sent = false;
            }
        }
        if self.machine.as_ref().is_some_and(|m| m.same_as(&facts)) {
            return false;
        }
        self.machine = Some(facts);
        self.metadata_sent = false;
        true
    }

    /// Whether the run is open: not completed and no end waiting to be
    /// sent. Open runs are the ones the sink keeps alive with heartbeats.
    pub fn is_open(&self) -> bool {
        self.finished.is_none() && self.finish_requested.is_none()
    }

    /// Takes the metric row `row`: fixes its line's offset (= `_step`) and
    /// makes the line, with `_runtime` from the start as moved back to the
    /// row's own time if that is earlier (never negative; lines made
    /// before are not rewritten). Returns the offset and the line.
    pub fn take_row(&mut self, row: &Row) -> (u64, String) {
        let offset = self.next_offset;
        self.next_offset += 1;
        if row.wall_time.is_finite() {
            if row.wall_time < self.start {
                // The metadata's start moves with it.
                self.metadata_sent = false;
            }
            self.start = self.start.min(row.wall_time);
            self.end = if self.has_rows {
                self.end.max(row.wall_time)
            } else {
                row.wall_time
            };
        }
        self.has_rows = true;
        self.last_step = row.step;
        self.last_time = row.wall_time;
        for (k, v) in &row.values {
            self.latest.insert(k.clone(), *v);
        }
        let line = filestream::history_line(
            offset as i64,
            row.step,
            self.runtime(row.wall_time),
            row.wall_time,
            &row.values,
        );
        (offset, line)
    }

    /// Seconds since the run's start; never negative, 0 before a start is
    /// known.
    fn runtime(&self, wall_time: f64) -> f64 {
        let r = wall_time - self.start;
        if r.is_finite() {
            r.max(0.0)
        } else {
            0.0
        }
    }

    pub fn summary(&self) -> String {
        let times = filestream::SummaryTimes {
            line_step: self.has_rows.then(|| self.next_offset as i64 - 1),
            global_step: self.has_rows.then_some(self.last_step),
            runtime: self.runtime(self.end),
            timestamp: self.has_rows.then_some(self.last_time),
        };
        filestream::summary_line(&times, &self.latest)
    }
}

// Floats are saved as Rust's shortest round-trip text, which parses back
// to the same bits (serde_json's default float parser may be 1 ULP off, and
// JSON has no NaN/Infinity): a replay must rebuild identical lines.
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

fn ser_values<S: Serializer>(m: &BTreeMap<String, f64>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(k, &v.to_string())?;
    }
    map.end()
}

fn de_values<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let raw: BTreeMap<String, String> = BTreeMap::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| Ok((k, v.parse::<f64>().map_err(serde::de::Error::custom)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_non_finite_values() {
        let mut s = State::default();
        let b = Bucket {
            id: "i".into(),
            name: "r".into(),
            project: "p".into(),
            entity: "e".into(),
            history_line_count: 0,
        };
        let mut r = RunState::new(&b, "R");
        assert_eq!(
            State::decode(&{
                let mut t = State::default();
                t.runs.insert("R".into(), r.clone());
                t.encode()
            })
            .unwrap()
            .runs["R"]
                .start,
            f64::INFINITY
        );
        r.latest.insert("a".into(), f64::NAN);
        r.latest.insert("b".into(), f64::NEG_INFINITY);
        r.latest.insert("c".into(), 2.5);
        r.latest.insert("d".into(), 0.1 + 0.2);
        r.start = 1795799699.1729999;
        s.runs.insert("R".into(), r);
        let back = State::decode(&s.encode()).unwrap();
        let r = &back.runs["R"];
        assert!(r.latest["a"].is_nan());
        assert_eq!(r.latest["b"], f64::NEG_INFINITY);
        assert_eq!(r.latest["c"], 2.5);
        assert_eq!(r.latest["d"].to_bits(), (0.1f64 + 0.2).to_bits());
        assert_eq!(r.start.to_bits(), 1795799699.1729999f64.to_bits());
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;

    fn row(step: i64, wall_time: f64) -> Row {
        Row {
            run_id: "R".into(),
            step,
            wall_time,
            values: [("x".to_string(), 1.0)].into(),
            event: None,
            origin: Default::default(),
        }
    }

    fn field(line: &str, key: &str) -> f64 {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v[key].as_f64().unwrap_or_else(|| panic!("{key} in {line}"))
    }

    #[test]
    fn steps_count_lines_and_runtime_counts_from_the_earliest_row() {
        let b = Bucket {
            id: "i".into(),
            name: "r".into(),
            project: "p".into(),
            entity: "e".into(),
            history_line_count: 0,
        };
        let mut r = RunState::new(&b, "R");
        // No rows: the summary has no time to count from.
        assert_eq!(r.summary(), r#"{"_runtime":0,"_wandb":{"runtime":0}}"#);
        let rows = [
            row(0, 100.0),
            row(5, 102.5),
            row(5, 103.0),
            row(3, 99.0),
            row(10, 110.0),
        ];
        let lines: Vec<(u64, String)> = rows.iter().map(|x| r.take_row(x)).collect();
        let steps: Vec<f64> = lines.iter().map(|(_, l)| field(l, "_step")).collect();
        assert_eq!(steps, [0.0, 1.0, 2.0, 3.0, 4.0]);
        let offsets: Vec<u64> = lines.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [0, 1, 2, 3, 4]);
        let gs: Vec<f64> = lines.iter().map(|(_, l)| field(l, "global_step")).collect();
        assert_eq!(gs, [0.0, 5.0, 5.0, 3.0, 10.0]);
        let rt: Vec<f64> = lines.iter().map(|(_, l)| field(l, "_runtime")).collect();
        // The row at 99 moves the start back: 0 for it, 11 for the next.
        assert_eq!(rt, [0.0, 2.5, 3.0, 0.0, 11.0]);
        let s = r.summary();
        assert_eq!(field(&s, "_runtime"), 11.0);
        assert_eq!(field(&s, "_step"), 4.0);
        assert_eq!(field(&s, "global_step"), 10.0);
    }
}
