//! W&B's transaction-log framing for `.wandb` files.
//!
//! A LevelDB-style block log as W&B core writes it
//! (`core/pkg/leveldb/record.go`, `core/internal/transactionlog/writer.go`;
//! docs/wandb-protocol.md section 4): a 7-byte file header, then records
//! split into chunks that never cross a 32 KiB block boundary. Each chunk
//! has a 7-byte header: CRC (u32 LE), length (u16 LE), type. The CRC is
//! plain CRC-32/IEEE over the type byte followed by the payload, not masked
//! (core opens the log with `CRCAlgoIEEE`; the masked CRC-32C in `crc.go`
//! is not used for `.wandb` files).
//!
//! The reader is what `mosaic-shipper sync` uploads offline directories
//! with (ours and the SDK's); it stops at the first incomplete record, and
//! tells a file still being written from a damaged one.
//!
//! Blocks are aligned to absolute file offsets, so the framing of the next
//! record depends only on the current file length: that length is all the
//! sink has to remember to continue a file after a restart.

/// `:W&B`, magic 0xBEE1 little-endian, version 0.
pub const FILE_HEADER: [u8; 7] = [0x3A, 0x57, 0x26, 0x42, 0xE1, 0xBE, 0x00];
/// Block size; chunks never cross a multiple of it.
pub const BLOCK: u64 = 32768;
/// Chunk header: checksum (4), length (2), type (1).
pub const CHUNK_HEADER: u64 = 7;

pub const FULL: u8 = 1;
pub const FIRST: u8 = 2;
pub const MIDDLE: u8 = 3;
pub const LAST: u8 = 4;

/// The chunk checksum: CRC-32/IEEE over `type` then `payload`.
pub fn checksum(typ: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[typ]);
    h.update(payload);
    h.finalize()
}

/// Appends the chunks of one record to `out`, for a file that is `*pos`
/// bytes long before them; advances `*pos`. Follows the Go writer: fewer
/// than 7 bytes left in a block are zero padding; exactly 7 left takes a
/// zero-length FIRST chunk when the record does not fit there.
pub fn append_record(pos: &mut u64, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(
        *pos >= FILE_HEADER.len() as u64,
        "write the file header first"
    );
    let mut left = payload;
    let mut first = true;
    loop {
        let space = BLOCK - *pos % BLOCK;
        if space < CHUNK_HEADER {
            out.resize(out.len() + space as usize, 0);
            *pos += space;
            continue;
        }
        let n = left.len().min((space - CHUNK_HEADER) as usize);
        let last = n == left.len();
        let typ = match (first, last) {
            (true, true) => FULL,
            (true, false) => FIRST,
            (false, true) => LAST,
            (false, false) => MIDDLE,
        };
        let (chunk, rest) = left.split_at(n);
        out.extend_from_slice(&checksum(typ, chunk).to_le_bytes());
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.push(typ);
        out.extend_from_slice(chunk);
        *pos += CHUNK_HEADER + n as u64;
        left = rest;
        first = false;
        if last {
            return;
        }
    }
}

/// Why reading a transaction log stopped before the end of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The data ends inside a record (a writer is still appending, or was
    /// killed mid-write), or runs into zero fill: what a reader expects at
    /// the tail of a live file.
    Truncated { offset: u64 },
    /// Bytes that no writer produces: a bad header, checksum or chunk type.
    Damaged { offset: u64, what: String },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Truncated { offset } => write!(f, "ends inside a record at byte {offset}"),
            Stop::Damaged { offset, what } => write!(f, "{what} at byte {offset}"),
        }
    }
}

/// Reads every complete record of a transaction log, in order; says where
/// and why it stopped if that was before the end of `data`.
pub fn read_records(data: &[u8]) -> (Vec<Vec<u8>>, Option<Stop>) {
    let mut out = Vec::new();
    if data.len() < FILE_HEADER.len() {
        return (out, Some(Stop::Truncated { offset: 0 }));
    }
    if data[..7] != FILE_HEADER {
        let what = "not a W&B transaction log (bad file header)".to_string();
        return (out, Some(Stop::Damaged { offset: 0, what }));
    }
    let mut pos = FILE_HEADER.len();
    let mut buf: Option<(usize, Vec<u8>)> = None;
    let damaged = |offset: usize, what: String| Stop::Damaged {
        offset: offset as u64,
        what,
    };
    while pos < data.len() {
        let space = (BLOCK - pos as u64 % BLOCK) as usize;
        if space < CHUNK_HEADER as usize {
            pos += space;
            continue;
        }
        // The record in progress starts here (or at its FIRST chunk).
        let record_start = buf.as_ref().map_or(pos, |(at, _)| *at) as u64;
        if data.len() - pos < 7 {
            return (
                out,
                Some(Stop::Truncated {
                    offset: record_start,
                }),
            );
        }
        let crc = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap());
        let len = u16::from_le_bytes([data[pos + 4], data[pos + 5]]) as usize;
        let typ = data[pos + 6];
        if crc == 0 && len == 0 && typ == 0 {
            // Zero fill past the last record (preallocated or a file
            // system's view of a torn write): the data ends here.
            return (
                out,
                Some(Stop::Truncated {
                    offset: record_start,
                }),
            );
        }
        let start = pos + 7;
        if data.len() < start + len {
            return (
                out,
                Some(Stop::Truncated {
                    offset: record_start,
                }),
            );
        }
        let chunk = &data[start..start + len];
        if checksum(typ, chunk) != crc {
            return (out, Some(damaged(pos, "checksum mismatch".into())));
        }
        match (typ, buf.as_mut()) {
            (FULL, None) => out.push(chunk.to_vec()),
            (FIRST, None) => buf = Some((pos, chunk.to_vec())),
            (MIDDLE, Some((_, b))) => b.extend_from_slice(chunk),
            (LAST, Some((_, b))) => {
                b.extend_from_slice(chunk);
                out.push(buf.take().unwrap().1);
            }
            _ => {
                return (
                    out,
                    Some(damaged(pos, format!("unexpected chunk type {typ}"))),
                )
            }
        }
        pos = start + len;
    }
    match buf {
        Some((at, _)) => (out, Some(Stop::Truncated { offset: at as u64 })),
        None => (out, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = FILE_HEADER.to_vec();
        let mut pos = out.len() as u64;
        for r in records {
            append_record(&mut pos, r, &mut out);
            assert_eq!(pos, out.len() as u64);
        }
        out
    }

    #[test]
    fn crc_is_plain_ieee_over_type_and_payload() {
        // zlib.crc32(b"\x01abc")
        assert_eq!(checksum(1, b"abc"), crc32fast::hash(b"\x01abc"));
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn record_ending_exactly_at_block_end() {
        let a = vec![1u8; (BLOCK - 7 - 7) as usize];
        let f = file(&[a.clone(), b"next".to_vec()]);
        assert_eq!(f[6 + 1 + 6], FULL);
        // The next record starts the second block with a FULL chunk.
        assert_eq!(f[BLOCK as usize + 6], FULL);
        assert_eq!(read_records(&f), (vec![a, b"next".to_vec()], None));
    }

    #[test]
    fn exactly_seven_bytes_left_gets_an_empty_first_chunk() {
        let a = vec![2u8; (BLOCK - 7 - 7 - 7) as usize];
        let b = vec![3u8; 20];
        let f = file(&[a.clone(), b.clone()]);
        let at = (BLOCK - 7) as usize;
        assert_eq!(&f[at + 4..at + 7], &[0, 0, FIRST]);
        assert_eq!(f[BLOCK as usize + 6], LAST);
        assert_eq!(read_records(&f), (vec![a, b], None));
    }

    #[test]
    fn fewer_than_seven_bytes_left_are_zero_padding() {
        let a = vec![4u8; (BLOCK - 7 - 7 - 3) as usize];
        let f = file(&[a.clone(), b"x".to_vec()]);
        assert_eq!(&f[(BLOCK - 3) as usize..BLOCK as usize], &[0, 0, 0]);
        assert_eq!(read_records(&f), (vec![a, b"x".to_vec()], None));
    }

    #[test]
    fn record_spanning_three_blocks() {
        let a: Vec<u8> = (0..(BLOCK as usize * 2 + 100)).map(|i| i as u8).collect();
        let f = file(&[b"h".to_vec(), a.clone()]);
        let types: Vec<u8> = [7 + 6, 7 + 8 + 6, BLOCK as usize + 6, 2 * BLOCK as usize + 6]
            .iter()
            .map(|&i| f[i])
            .collect();
        assert_eq!(types, [FULL, FIRST, MIDDLE, LAST]);
        assert_eq!(read_records(&f), (vec![b"h".to_vec(), a], None));
    }

    #[test]
    fn truncation_is_reported() {
        let f = file(&[vec![5u8; 100]]);
        let (recs, err) = read_records(&f[..f.len() - 1]);
        assert!(recs.is_empty());
        assert_eq!(err, Some(Stop::Truncated { offset: 7 }));
        // A record cut after its FIRST chunk is incomplete too.
        let a = vec![6u8; BLOCK as usize];
        let f = file(&[b"h".to_vec(), a]);
        let (recs, err) = read_records(&f[..BLOCK as usize + 10]);
        assert_eq!(recs, vec![b"h".to_vec()]);
        assert_eq!(err, Some(Stop::Truncated { offset: 15 }));
        // Zero fill after the last record ends the data.
        let mut f = file(&[b"h".to_vec()]);
        f.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            read_records(&f),
            (vec![b"h".to_vec()], Some(Stop::Truncated { offset: 15 }))
        );
    }

    #[test]
    fn damage_is_told_apart_from_truncation() {
        let mut f = file(&[b"hello".to_vec(), b"world".to_vec()]);
        f[7 + 7 + 1] ^= 1;
        let (recs, err) = read_records(&f);
        assert!(recs.is_empty());
        assert!(
            matches!(err, Some(Stop::Damaged { offset: 7, .. })),
            "{err:?}"
        );
        let (_, err) = read_records(b"PK\x03\x04 not a log");
        assert!(
            matches!(err, Some(Stop::Damaged { offset: 0, .. })),
            "{err:?}"
        );
    }
}
