//! On-disk encoding of journal values.
//!
//! Rows are prost messages (hand-derived, no protoc): compact, fast, and
//! new optional fields can be added without rewriting old journals.
//! Small, rarely written records (file checkpoints, counters) are JSON so
//! that a human can read them with any sled tool.
//!
//! Every value the journal stores is sealed ([`seal`]): a crc32c of its key
//! and bytes follows it. sled's own checks have let damage through (a
//! flipped byte in its `db` file read back as an empty store), so the
//! journal checks what it reads itself ([`unseal`]).

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
    /// A `RunEvent::Console`: the line.
    #[prost(string, optional, tag = "8")]
    pub console: Option<String>,
    /// A `RunEvent::Console`: whether the line went to stderr.
    #[prost(bool, tag = "9")]
    pub console_stderr: bool,
    /// A `RunEvent::Machine`: the facts as JSON text.
    #[prost(string, optional, tag = "10")]
    pub machine: Option<String>,
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
///
/// Written in one pass straight from the rows, byte for byte what prost
/// makes of a `StoredBlock` (a test holds the two together; the decoder
/// stays prost's). Going through `StoredBlock` cloned the run id and
/// every tag of every row, and prost computes a nested message's length
/// again at each level it is written at: the two were 9% of a
/// `run --once`'s instructions, on the ingest thread.
pub fn encode_block(rows: &[Row]) -> Vec<u8> {
    let body: usize = rows
        .iter()
        .map(|r| {
            let n = row_len(r);
            1 + varint_len(n as u64) + n
        })
        .sum();
    let mut out = Vec::with_capacity(4 + body);
    out.extend_from_slice(&(rows.len() as u32).to_be_bytes());
    for row in rows {
        key(&mut out, 1, LEN);
        varint(&mut out, row_len(row) as u64);
        encode_row(&mut out, row);
    }
    out
}

// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a length-delimited field of `n` bytes (keys here are 1 byte:
/// every field number is below 16).
fn len_field(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn value_len(tag: &str, bits: u64) -> usize {
    let tag = if tag.is_empty() {
        0
    } else {
        len_field(tag.len())
    };
    tag + if bits == 0 { 0 } else { 9 }
}

/// The `RunEvent` parts of a [`StoredRow`], borrowed.
struct EventFields<'r> {
    config: Option<&'r str>,
    exit_code: Option<i32>,
    console: Option<&'r str>,
    console_stderr: bool,
    machine: Option<&'r str>,
    system: bool,
}

fn event_fields(row: &Row) -> EventFields<'_> {
    let mut f = EventFields {
        config: None,
        exit_code: None,
        console: None,
        console_stderr: false,
        machine: None,
        system: false,
    };
    match &row.event {
        None => {}
        Some(RunEvent::Config(c)) => f.config = Some(c),
        Some(RunEvent::Finished(code)) => f.exit_code = Some(*code),
        Some(RunEvent::Console { stderr, line }) => {
            f.console = Some(line);
            f.console_stderr = *stderr;
        }
        Some(RunEvent::Machine(m)) => f.machine = Some(m),
        Some(RunEvent::System) => f.system = true,
    }
    f
}

/// The encoded length of a row's [`StoredRow`], fields at their proto3
/// defaults left out as prost leaves them out.
fn row_len(row: &Row) -> usize {
    let mut n = 0;
    if !row.run_id.is_empty() {
        n += len_field(row.run_id.len());
    }
    if row.step != 0 {
        n += 1 + varint_len(row.step as u64);
    }
    if row.wall_time.to_bits() != 0 {
        n += 9;
    }
    for (tag, value) in &row.values {
        n += len_field(value_len(tag, value.to_bits()));
    }
    let e = event_fields(row);
    if let Some(c) = e.config {
        n += len_field(c.len());
    }
    if let Some(code) = e.exit_code {
        // int32 is a sign-extended varint.
        n += 1 + varint_len(i64::from(code) as u64);
    }
    if row.origin.code() != 0 {
        n += 1 + varint_len(u64::from(row.origin.code()));
    }
    if let Some(line) = e.console {
        n += len_field(line.len());
    }
    if e.console_stderr {
        n += 2;
    }
    if let Some(m) = e.machine {
        n += len_field(m.len());
    }
    if e.system {
        n += 2;
    }
    n
}

fn string_field(out: &mut Vec<u8>, field: u32, s: &str) {
    key(out, field, LEN);
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A row's [`StoredRow`], in field order as prost writes it.
fn encode_row(out: &mut Vec<u8>, row: &Row) {
    if !row.run_id.is_empty() {
        string_field(out, 1, &row.run_id);
    }
    if row.step != 0 {
        key(out, 2, VARINT);
        varint(out, row.step as u64);
    }
    let wall = row.wall_time.to_bits();
    if wall != 0 {
        key(out, 3, FIXED64);
        out.extend_from_slice(&wall.to_le_bytes());
    }
    for (tag, value) in &row.values {
        let bits = value.to_bits();
        key(out, 4, LEN);
        varint(out, value_len(tag, bits) as u64);
        if !tag.is_empty() {
            string_field(out, 1, tag);
        }
        if bits != 0 {
            key(out, 2, FIXED64);
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
    let e = event_fields(row);
    if let Some(c) = e.config {
        string_field(out, 5, c);
    }
    if let Some(code) = e.exit_code {
        key(out, 6, VARINT);
        varint(out, i64::from(code) as u64);
    }
    if row.origin.code() != 0 {
        key(out, 7, VARINT);
        varint(out, u64::from(row.origin.code()));
    }
    if let Some(line) = e.console {
        string_field(out, 8, line);
    }
    if e.console_stderr {
        key(out, 9, VARINT);
        out.push(1);
    }
    if let Some(m) = e.machine {
        string_field(out, 10, m);
    }
    if e.system {
        key(out, 11, VARINT);
        out.push(1);
    }
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

/// The `StoredRow` prost would be given for `row`: what [`encode_block`]
/// must match byte for byte (tests).
#[cfg(test)]
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
        console: match &row.event {
            Some(RunEvent::Console { line, .. }) => Some(line.clone()),
            _ => None,
        },
        console_stderr: matches!(&row.event, Some(RunEvent::Console { stderr: true, .. })),
        machine: match &row.event {
            Some(RunEvent::Machine(m)) => Some(m.clone()),
            _ => None,
        },
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
        event: match (s.config, s.exit_code, s.console, s.machine) {
            (Some(c), ..) => Some(RunEvent::Config(c)),
            (None, Some(code), ..) => Some(RunEvent::Finished(code)),
            (None, None, Some(line), _) => Some(RunEvent::Console {
                stderr: s.console_stderr,
                line,
            }),
            (None, None, None, Some(m)) => Some(RunEvent::Machine(m)),
            (None, None, None, None) if s.system => Some(RunEvent::System),
            (None, None, None, None) => None,
        },
        origin: Origin::from_code(s.origin),
    }
}

/// A value as stored: `value`, then crc32c(key, value) as a big-endian
/// u32. The key is covered so that a value read under the wrong key (a
/// damaged index) is caught too. A block keeps its row count in front
/// ([`block_len`] reads it from a sealed value as well).
pub fn seal(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    out.extend_from_slice(value);
    out.extend_from_slice(&checksum(key, value).to_be_bytes());
    out
}

/// The value of a sealed `stored` value, if its checksum matches.
pub fn unseal<'a>(key: &[u8], stored: &'a [u8]) -> Result<&'a [u8], String> {
    let Some(split) = stored.len().checked_sub(4) else {
        return Err(format!("{} bytes, shorter than its checksum", stored.len()));
    };
    let (value, sum) = stored.split_at(split);
    let sum = u32::from_be_bytes(sum.try_into().expect("4 bytes"));
    let want = checksum(key, value);
    if sum != want {
        return Err(format!(
            "checksum mismatch (stored {sum:08x}, computed {want:08x} over {} bytes)",
            value.len()
        ));
    }
    Ok(value)
}

fn checksum(key: &[u8], value: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&(key.len() as u32).to_be_bytes());
    let crc = crc32c::crc32c_append(crc, key);
    crc32c::crc32c_append(crc, value)
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
    fn a_sealed_value_catches_any_flipped_bit_and_a_wrong_key() {
        let block = encode_block(&[Row {
            run_id: "r".into(),
            step: 7,
            wall_time: 1.0,
            values: [("x".to_string(), 2.0)].into_iter().collect(),
            event: None,
            origin: Origin::Log,
        }]);
        let key = u64_key(5);
        let sealed = seal(&key, &block);
        assert_eq!(unseal(&key, &sealed).unwrap(), block.as_slice());
        assert_eq!(block_len(&sealed), Some(1), "the count stays in front");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(unseal(&key, &bad).is_err(), "bit {i} flipped went unseen");
        }
        assert!(unseal(&u64_key(6), &sealed).is_err());
        assert!(unseal(&key, &sealed[..3]).is_err());
        assert!(unseal(&key, &sealed[..sealed.len() - 1]).is_err());
    }

    /// What prost writes for the same rows, through `StoredBlock`.
    fn prost_block(rows: &[Row]) -> Vec<u8> {
        use prost::Message;
        let block = StoredBlock {
            rows: rows.iter().map(stored_row).collect(),
        };
        let mut out = (rows.len() as u32).to_be_bytes().to_vec();
        block.encode(&mut out).unwrap();
        out
    }

    #[test]
    fn the_one_pass_encoder_writes_what_prost_writes() {
        let long = "x".repeat(300);
        let mut rows = Vec::new();
        for (i, run_id) in ["", "r", long.as_str()].into_iter().enumerate() {
            for step in [0, 1, -1, 127, 128, i64::MAX, i64::MIN] {
                for wall_time in [0.0, -0.0, 1.7e9, f64::NAN] {
                    for origin in [Origin::Log, Origin::Tfevents, Origin::LogBesideEvents] {
                        rows.push(Row {
                            run_id: run_id.to_string(),
                            step,
                            wall_time,
                            values: [
                                (String::new(), 0.0),
                                ("a".to_string(), -0.0),
                                (long.clone(), f64::INFINITY),
                                (format!("t{i}"), 2.5),
                            ]
                            .into_iter()
                            .take(step.unsigned_abs() as usize % 5)
                            .collect(),
                            event: None,
                            origin,
                        });
                    }
                }
            }
        }
        for event in [
            RunEvent::Config(String::new()),
            RunEvent::Config(long.clone()),
            RunEvent::Finished(0),
            RunEvent::Finished(-3),
            RunEvent::Finished(i32::MAX),
            RunEvent::Console {
                stderr: true,
                line: long.clone(),
            },
            RunEvent::Console {
                stderr: false,
                line: String::new(),
            },
            RunEvent::Machine("{}".into()),
            RunEvent::System,
        ] {
            let mut r = rows[5].clone();
            r.event = Some(event);
            rows.push(r);
        }
        assert_eq!(encode_block(&rows), prost_block(&rows));
        for row in &rows {
            let one = std::slice::from_ref(row);
            assert_eq!(encode_block(one), prost_block(one), "{row:?}");
        }
        assert_eq!(encode_block(&[]), prost_block(&[]));
        let back = decode_block(&encode_block(&rows)).unwrap();
        assert_eq!(back.len(), rows.len());
    }

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
            RunEvent::Console {
                stderr: true,
                line: "Traceback".into(),
            },
            RunEvent::Console {
                stderr: false,
                line: String::new(),
            },
            RunEvent::Machine(r#"{"host": "h"}"#.into()),
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
