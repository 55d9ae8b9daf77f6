//! On-disk encoding of journal values.
//!
//! Rows are prost messages (hand-derived, no protoc): compact, fast, and
//! new optional fields can be added without rewriting old journals.
//! Small, rarely written records (file checkpoints, counters) are JSON so
//! that a human can read them with any sled tool.

use std::collections::BTreeMap;

use crate::row::{Origin, Row, RunEvent};

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredRow {
    #[prost(string, tag = "1")]
    pub run_id: String,
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// `f64::to_bits`: proto3 omits a double equal to 0.0, which would
    /// turn -0.0 into 0.0; bits keep every value exact.
    #[prost(fixed64, tag = "3")]
    pub wall_time: u64,
    #[prost(message, repeated, tag = "4")]
    pub values: Vec<StoredValue>,
    /// A `RunEvent::Config`: the configuration as JSON text.
    #[prost(string, optional, tag = "5")]
    pub config: Option<String>,
    /// A `RunEvent::Finished`: the exit code.
    #[prost(int32, optional, tag = "6")]
    pub exit_code: Option<i32>,
    /// `Origin::code`; 0 (a log line) for rows stored before it existed.
    #[prost(uint32, tag = "7")]
    pub origin: u32,
    /// A `RunEvent::System` sample (its metrics are the values).
    #[prost(bool, tag = "11")]
    pub system: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// `f64::to_bits`, as for `wall_time`.
    #[prost(fixed64, tag = "2")]
    pub value: u64,
}

/// The rows of one ingest commit, stored under one key (the first row's
/// sequence number). One key per commit instead of one per row keeps
/// sled's per-entry cost (tree nodes, page-cache entries, transaction
/// bookkeeping) off the hot path; it was most of the ingest time.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredBlock {
    #[prost(message, repeated, tag = "1")]
    pub rows: Vec<StoredRow>,
}

/// A block value: the row count (u32, big-endian), so that compaction can
/// tell a block's last sequence number without decoding it, then the
/// prost-encoded [`StoredBlock`].
pub fn encode_block(rows: &[Row]) -> Vec<u8> {
    use prost::Message;
    let block = StoredBlock {
        rows: rows.iter().map(stored_row).collect(),
    };
    let mut out = Vec::with_capacity(4 + block.encoded_len());
    out.extend_from_slice(&(rows.len() as u32).to_be_bytes());
    block.encode(&mut out).expect("a Vec grows");
    out
}

/// The row count of a block value, read from its prefix.
pub fn block_len(value: &[u8]) -> Option<u64> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as u64)
}

pub fn decode_block(value: &[u8]) -> Result<Vec<Row>, String> {
    use prost::Message;
    let count = block_len(value).ok_or("block shorter than its count")?;
    let block = StoredBlock::decode(&value[4..]).map_err(|e| e.to_string())?;
    if block.rows.len() as u64 != count {
        return Err(format!(
            "block holds {} rows, its count says {count}",
            block.rows.len()
        ));
    }
    Ok(block.rows.into_iter().map(row_of).collect())
}

fn stored_row(row: &Row) -> StoredRow {
    StoredRow {
        run_id: row.run_id.clone(),
        step: row.step,
        wall_time: row.wall_time.to_bits(),
        values: row
            .values
            .iter()
            .map(|(tag, &value)| StoredValue {
                tag: tag.clone(),
                value: value.to_bits(),
            })
            .collect(),
        config: match &row.event {
            Some(RunEvent::Config(c)) => Some(c.clone()),
            _ => None,
        },
        exit_code: match &row.event {
            Some(RunEvent::Finished(code)) => Some(*code),
            _ => None,
        },
        origin: row.origin.code(),
        system: matches!(row.event, Some(RunEvent::System)),
    }
}

fn row_of(s: StoredRow) -> Row {
    Row {
        run_id: s.run_id,
        step: s.step,
        wall_time: f64::from_bits(s.wall_time),
        values: s
            .values
            .into_iter()
            .map(|v| (v.tag, f64::from_bits(v.value)))
            .collect::<BTreeMap<_, _>>(),
        event: match (s.config, s.exit_code) {
            (Some(c), _) => Some(RunEvent::Config(c)),
            (None, Some(code)) => Some(RunEvent::Finished(code)),
            (None, None) if s.system => Some(RunEvent::System),
            (None, None) => None,
        },
        origin: Origin::from_code(s.origin),
    }
}

pub fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn key_u64(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_bit_exactly() {
        let row = Row {
            run_id: "01J".into(),
            step: -3,
            wall_time: 1.25,
            values: [("a".to_string(), f64::NAN), ("b".to_string(), -0.0)]
                .into_iter()
                .collect(),
            event: None,
            origin: Origin::Tfevents,
        };
        let block = encode_block(&[row.clone(), row.clone()]);
        assert_eq!(block_len(&block), Some(2));
        let back = decode_block(&block).unwrap().pop().unwrap();
        assert_eq!(back.run_id, row.run_id);
        assert_eq!(back.step, -3);
        assert!(back.values["a"].is_nan());
        assert_eq!(back.values["b"].to_bits(), (-0.0f64).to_bits());
        assert_eq!(back.event, None);
        assert_eq!(back.origin, Origin::Tfevents);
        for event in [
            RunEvent::Config(r#"{"lr": 0.1}"#.into()),
            RunEvent::Finished(-3),
            RunEvent::System,
        ] {
            let mut r = row.clone();
            r.event = Some(event);
            assert_eq!(
                decode_block(&encode_block(&[r.clone()])).unwrap()[0].event,
                r.event
            );
        }
    }
}
