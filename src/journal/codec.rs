//! On-disk encoding of journal values.
//!
//! Rows are prost messages (hand-derived, no protoc): compact, fast, and
//! new optional fields can be added without rewriting old journals.
//! Small, rarely written records (file checkpoints, counters) are JSON so
//! that a human can read them with any sled tool.

use std::collections::BTreeMap;

use crate::row::Row;

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
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoredValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    /// `f64::to_bits`, as for `wall_time`.
    #[prost(fixed64, tag = "2")]
    pub value: u64,
}

pub fn encode_row(row: &Row) -> Vec<u8> {
    use prost::Message;
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
    }
    .encode_to_vec()
}

pub fn decode_row(bytes: &[u8]) -> Result<Row, prost::DecodeError> {
    use prost::Message;
    let s = StoredRow::decode(bytes)?;
    Ok(Row {
        run_id: s.run_id,
        step: s.step,
        wall_time: f64::from_bits(s.wall_time),
        values: s
            .values
            .into_iter()
            .map(|v| (v.tag, f64::from_bits(v.value)))
            .collect::<BTreeMap<_, _>>(),
    })
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
        };
        let back = decode_row(&encode_row(&row)).unwrap();
        assert_eq!(back.run_id, row.run_id);
        assert_eq!(back.step, -3);
        assert!(back.values["a"].is_nan());
        assert_eq!(back.values["b"].to_bits(), (-0.0f64).to_bits());
    }
}
