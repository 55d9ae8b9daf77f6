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
    /// Wall time of the run's first row: `_runtime` counts from it.
    #[serde(with = "exact")]
    pub start: f64,
    /// Offset the next history line gets.
    pub next_offset: u64,
    pub last_step: i64,
    #[serde(with = "exact")]
    pub last_time: f64,
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
}

impl RunState {
    pub fn new(bucket: &Bucket, display: &str, start: f64) -> RunState {
        RunState {
            name: bucket.name.clone(),
            display: display.to_string(),
            entity: bucket.entity.clone(),
            project: bucket.project.clone(),
            storage_id: bucket.id.clone(),
            start,
            next_offset: bucket.history_line_count,
            last_step: 0,
            last_time: start,
            latest: BTreeMap::new(),
            finished: None,
            config: None,
            finish_requested: None,
        }
    }

    /// Takes `row` into the summary; returns the offset of its line.
    pub fn take_row(&mut self, row: &Row) -> u64 {
        let offset = self.next_offset;
        self.next_offset += 1;
        self.last_step = row.step;
        self.last_time = row.wall_time;
        for (k, v) in &row.values {
            self.latest.insert(k.clone(), *v);
        }
        offset
    }

    pub fn history_line(&self, row: &Row) -> String {
        filestream::history_line(
            row.step,
            row.wall_time - self.start,
            row.wall_time,
            &row.values,
        )
    }

    /// Seconds since the run's first row; never negative (a worker's
    /// clock may step back).
    fn runtime(&self, wall_time: f64) -> f64 {
        (wall_time - self.start).max(0.0)
    }

    pub fn summary(&self) -> String {
        filestream::summary_line(
            self.last_step,
            self.runtime(self.last_time),
            self.last_time,
            &self.latest,
        )
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
        let mut r = RunState::new(&b, "R", 1.0);
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
