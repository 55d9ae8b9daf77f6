//! `rows.bin`: a bundle's rows, as frames of journal blocks.
//!
//! ```text
//! frame := first_seq (u64, big-endian) | len (u32, big-endian) | block (len bytes)
//! ```
//!
//! `block` is a journal block value exactly as the journal stores it
//! (`journal::codec::encode_block`: row count, then a prost `StoredBlock`),
//! so rows keep their bits (NaN, -0.0, wall times) and the importing
//! journal can store a frame as it is. `first_seq` is the source sequence
//! number of the block's first row; frames follow each other without a
//! gap, which import checks.

use std::collections::BTreeSet;
use std::io::Write;

use crate::journal::codec::{block_len, decode_block, encode_block};
use crate::row::Row;

/// Rows per frame: the importing journal stores one frame as one block,
/// and a sink reading one row decodes its whole block, so blocks stay the
/// size an ingest commit makes, not the size of the bundle.
pub const FRAME_ROWS: usize = 4096;

const HEADER: usize = 12;

/// Appends one frame holding `rows` (at most [`FRAME_ROWS`]); returns the
/// bytes written.
pub fn write_frame(out: &mut impl Write, first_seq: u64, rows: &[Row]) -> std::io::Result<u64> {
    let block = encode_block(rows);
    let len = u32::try_from(block.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    out.write_all(&first_seq.to_be_bytes())?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&block)?;
    Ok((HEADER + block.len()) as u64)
}

/// One frame of a parsed `rows.bin`.
#[derive(Debug)]
pub struct Frame<'a> {
    pub first_seq: u64,
    pub count: u64,
    /// The journal block value.
    pub block: &'a [u8],
}

impl Frame<'_> {
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.count - 1
    }

    /// The frame's rows after source sequence number `after`, as a new
    /// block value (for a frame partly imported before).
    pub fn block_after(&self, after: u64) -> Vec<u8> {
        let rows = decode_block(self.block).expect("checked by parse");
        let skip = after.saturating_sub(self.first_seq - 1) as usize;
        encode_block(&rows[skip.min(rows.len())..])
    }
}

/// What a whole `rows.bin` holds.
#[derive(Debug)]
pub struct Parsed<'a> {
    pub frames: Vec<Frame<'a>>,
    pub rows: u64,
    pub runs: BTreeSet<String>,
}

/// A `rows.bin` that cannot be read, with the byte offset of the problem.
#[derive(Debug, PartialEq)]
pub struct FrameError {
    pub offset: u64,
    pub detail: String,
}

/// Reads every frame and decodes every row (which is dropped again: only
/// run ids and counts are kept). Frames must be contiguous.
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, FrameError> {
    let mut frames = Vec::new();
    let mut runs = BTreeSet::new();
    let mut rows = 0u64;
    let mut pos = 0usize;
    while pos < bytes.len() {
        let offset = pos as u64;
        let err = |detail: String| FrameError { offset, detail };
        let header = bytes.get(pos..pos + HEADER).ok_or_else(|| {
            err(format!(
                "{} bytes left, too few for a frame header",
                bytes.len() - pos
            ))
        })?;
        let first_seq = u64::from_be_bytes(header[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(header[8..].try_into().expect("4 bytes")) as usize;
        let block = bytes.get(pos + HEADER..pos + HEADER + len).ok_or_else(|| {
            err(format!(
                "the frame says {len} bytes follow, the file has {} left",
                bytes.len() - pos - HEADER
            ))
        })?;
        let decoded =
            decode_block(block).map_err(|e| err(format!("rows cannot be decoded: {e}")))?;
        let count = block_len(block).unwrap_or_default();
        if count == 0 {
            return Err(err("a frame without rows".into()));
        }
        if let Some(prev) = frames.last().map(|f: &Frame| f.last_seq()) {
            if first_seq != prev + 1 {
                return Err(err(format!(
                    "the frame starts at row #{first_seq}, the one before ends at #{prev}"
                )));
            }
        } else if first_seq == 0 {
            return Err(err("row #0 does not exist".into()));
        }
        for row in &decoded {
            if !runs.contains(&row.run_id) {
                runs.insert(row.run_id.clone());
            }
        }
        rows += count;
        frames.push(Frame {
            first_seq,
            count,
            block,
        });
        pos += HEADER + len;
    }
    Ok(Parsed { frames, rows, runs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::RunEvent;

    fn row(run: &str, step: i64, v: f64) -> Row {
        Row {
            run_id: run.into(),
            step,
            wall_time: 1_700_000_000.123_456_7,
            values: [("a".to_string(), v), ("b".to_string(), -0.0)]
                .into_iter()
                .collect(),
            event: None,
            origin: Default::default(),
        }
    }

    #[test]
    fn frames_round_trip_and_damage_is_located() {
        let mut finished = row("R2", 0, 0.0);
        finished.values.clear();
        finished.event = Some(RunEvent::Finished(3));
        let first = vec![row("R1", 1, f64::NAN), row("R1", 2, f64::INFINITY)];
        let second = vec![finished.clone()];
        let mut out = Vec::new();
        let n1 = write_frame(&mut out, 7, &first).unwrap();
        write_frame(&mut out, 9, &second).unwrap();
        let p = parse(&out).unwrap();
        assert_eq!((p.rows, p.frames.len()), (3, 2));
        assert_eq!(p.runs.into_iter().collect::<Vec<_>>(), ["R1", "R2"]);
        assert_eq!(p.frames[1].first_seq, 9);
        let back = decode_block(p.frames[0].block).unwrap();
        assert!(back[0].values["a"].is_nan());
        assert_eq!(back[0].values["b"].to_bits(), (-0.0f64).to_bits());
        assert_eq!(back[1].wall_time.to_bits(), first[1].wall_time.to_bits());
        assert_eq!(decode_block(p.frames[1].block).unwrap(), second);
        assert_eq!(
            decode_block(&p.frames[0].block_after(7)).unwrap()[0].step,
            2
        );

        assert_eq!(parse(&out[..out.len() - 1]).unwrap_err().offset, n1);
        assert!(parse(&out[..5])
            .unwrap_err()
            .detail
            .contains("frame header"));
        let mut gap = Vec::new();
        write_frame(&mut gap, 7, &first).unwrap();
        write_frame(&mut gap, 10, &second).unwrap();
        assert!(parse(&gap).unwrap_err().detail.contains("#10"));
        let mut bad = out.clone();
        bad[12] ^= 0xff; // the first block's row count
        assert!(parse(&bad).unwrap_err().detail.contains("decoded"));
    }
}
