//! System metrics (W&B's System tab) in the two forms core gives them:
//! online a `wandb-events.jsonl` line (`core/internal/filestream/
//! updatestats.go`: `_wandb: true`, `_timestamp`, `_runtime` from the
//! run's start, each metric as `system.<name>`), offline a `stats`
//! record (`StatsRecord`: timestamp and items named without the
//! `system.` prefix, values as JSON), which `wandb sync` turns into the
//! same line. The samples are `RunEvent::System` rows (`src/sysmetrics/`).

use prost::Message;

use super::filestream::push_number;
use super::offline::records::{RecordInfo, Timestamp};
use crate::row::Row;

/// The run's `wandb-events.jsonl` line for a sample; `start` is the run's
/// start (`_runtime` counts from it; 0 before the run has one).
pub fn events_line(row: &Row, start: f64) -> String {
    let mut out = String::from("{\"_wandb\":true,\"_timestamp\":");
    push_number(&mut out, row.wall_time);
    out.push_str(",\"_runtime\":");
    let runtime = if start.is_finite() {
        (row.wall_time - start).max(0.0)
    } else {
        0.0
    };
    push_number(&mut out, runtime);
    for (k, v) in &row.values {
        out.push(',');
        out.push_str(&serde_json::to_string(&format!("system.{k}")).expect("strings serialise"));
        out.push(':');
        push_number(&mut out, *v);
    }
    out.push('}');
    out
}

/// `wandb_internal.Record` with only its `stats` member: wire-compatible
/// with the full message, so W&B's reader decodes it as a stats record.
#[derive(Clone, PartialEq, prost::Message)]
struct StatsEnvelope {
    #[prost(int64, tag = "1")]
    num: i64,
    #[prost(message, optional, tag = "7")]
    stats: Option<StatsRecord>,
    #[prost(message, optional, tag = "200")]
    info: Option<RecordInfo>,
}

/// `wandb_internal.StatsRecord` (stats_type 0: system).
#[derive(Clone, PartialEq, prost::Message)]
struct StatsRecord {
    #[prost(int32, tag = "1")]
    stats_type: i32,
    #[prost(message, optional, tag = "2")]
    timestamp: Option<Timestamp>,
    #[prost(message, repeated, tag = "3")]
    item: Vec<StatsItem>,
}

/// `wandb_internal.StatsItem`.
#[derive(Clone, PartialEq, prost::Message)]
struct StatsItem {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "16")]
    value_json: String,
}

/// The encoded stats record `num` of a sample. Values are written as the
/// SDK writes them (floats: `4.0`, not `4`); a non-finite one is left out
/// (a sample never holds one; JSON has none).
pub fn stats_record(num: i64, row: &Row) -> Vec<u8> {
    let secs = row.wall_time.floor();
    StatsEnvelope {
        num,
        stats: Some(StatsRecord {
            stats_type: 0,
            timestamp: Some(Timestamp {
                seconds: secs as i64,
                nanos: ((row.wall_time - secs) * 1e9) as i32,
            }),
            item: row
                .values
                .iter()
                .filter(|(_, v)| v.is_finite())
                .map(|(k, v)| StatsItem {
                    key: k.clone(),
                    value_json: serde_json::to_string(v).expect("finite floats serialise"),
                })
                .collect(),
        }),
        info: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::RunEvent;

    fn sample() -> Row {
        Row {
            run_id: "R".into(),
            step: 0,
            wall_time: 100.25,
            values: [
                ("cpu".to_string(), 0.5),
                ("proc.cpu.threads".to_string(), 4.0),
            ]
            .into(),
            event: Some(RunEvent::System),
            origin: Default::default(),
        }
    }

    #[test]
    fn a_sample_as_core_streams_it() {
        assert_eq!(
            events_line(&sample(), 100.0),
            r#"{"_wandb":true,"_timestamp":100.25,"_runtime":0.25,"system.cpu":0.5,"system.proc.cpu.threads":4}"#
        );
        assert!(events_line(&sample(), f64::INFINITY).contains("\"_runtime\":0,"));
    }

    #[test]
    fn a_sample_as_a_stats_record() {
        let raw = stats_record(7, &sample());
        let back = StatsEnvelope::decode(&raw[..]).unwrap();
        assert_eq!(back.num, 7);
        let s = back.stats.unwrap();
        assert_eq!(s.timestamp.unwrap().nanos, 250_000_000);
        assert_eq!(s.item[1].key, "proc.cpu.threads");
        assert_eq!(s.item[1].value_json, "4.0");
    }
}
