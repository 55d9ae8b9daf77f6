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

use std::io::Read as _;

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

/// What [`Reader::next_record`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record(Vec<u8>),
    /// The data ends cleanly after the last record.
    End,
    /// Reading stopped before the end of the data, and why.
    Stopped(Stop),
}

/// Reads records one at a time from any byte source, holding one block:
/// a log of any size is read in constant memory.
pub struct Reader<R> {
    src: R,
    block: Vec<u8>,
    /// Position in `block`.
    at: usize,
    /// File offset of `block[0]`.
    base: u64,
    started: bool,
    /// The source is exhausted; `block` is the last (possibly short) one.
    eof: bool,
}

impl<R: std::io::Read> Reader<R> {
    pub fn new(src: R) -> Reader<R> {
        Reader {
            src,
            block: Vec::with_capacity(BLOCK as usize),
            at: 0,
            base: 0,
            started: false,
            eof: false,
        }
    }

    /// Loads the next block; `false` when there is none.
    fn load(&mut self) -> std::io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.base += self.block.len() as u64;
        self.block.clear();
        self.at = 0;
        let mut limited = (&mut self.src).take(BLOCK);
        limited.read_to_end(&mut self.block)?;
        if (self.block.len() as u64) < BLOCK {
            self.eof = true;
        }
        Ok(!self.block.is_empty())
    }

    /// The next complete record, the clean end, or why reading stopped.
    /// After `End` or `Stopped` it keeps returning `End`.
    pub fn next_record(&mut self) -> std::io::Result<Next> {
        let damaged = |offset: u64, what: String| Next::Stopped(Stop::Damaged { offset, what });
        if !self.started {
            self.started = true;
            if !self.load()? || self.block.len() < FILE_HEADER.len() {
                self.eof = true;
                self.block.clear();
                return Ok(Next::Stopped(Stop::Truncated { offset: 0 }));
            }
            if self.block[..7] != FILE_HEADER {
                self.finish();
                let what = "not a W&B transaction log (bad file header)".to_string();
                return Ok(damaged(0, what));
            }
            self.at = FILE_HEADER.len();
        }
        // The record in progress: its file offset and bytes so far.
        let mut partial: Option<(u64, Vec<u8>)> = None;
        loop {
            let record_start = partial.as_ref().map_or(self.base + self.at as u64, |p| p.0);
            if self.at >= self.block.len() || BLOCK as usize - self.at < CHUNK_HEADER as usize {
                // Block trailer (fewer than 7 bytes: zero padding) or end
                // of this block: on to the next one.
                if self.block.len() < BLOCK as usize || !self.load()? {
                    self.finish();
                    return Ok(match partial {
                        Some((at, _)) => Next::Stopped(Stop::Truncated { offset: at }),
                        None => Next::End,
                    });
                }
                continue;
            }
            let at = self.at;
            let data = &self.block[at..];
            let Some(ChunkHeader { crc, len, typ }) = ChunkHeader::at(data) else {
                self.finish();
                return Ok(Next::Stopped(Stop::Truncated {
                    offset: record_start,
                }));
            };
            if crc == 0 && len == 0 && typ == 0 {
                // Zero fill past the last record (preallocated, or a file
                // system's view of a torn write): the data ends here,
                // unless records follow it.
                return Ok(self.cut_short(at, record_start));
            }
            let offset = self.base + at as u64;
            if at + 7 + len > BLOCK as usize {
                // No writer makes a chunk that crosses its block's end, so
                // this length is damage, not a file cut short: reporting
                // it as truncation would pass a damaged file as one still
                // being written.
                self.finish();
                let what = format!("chunk length {len} runs past the end of its 32 KiB block");
                return Ok(damaged(offset, what));
            }
            let Some(chunk) = data.get(7..7 + len) else {
                return Ok(self.cut_short(at, record_start));
            };
            if checksum(typ, chunk) != crc {
                self.finish();
                return Ok(damaged(offset, "checksum mismatch".into()));
            }
            let chunk = chunk.to_vec();
            self.at = at + 7 + len;
            match (typ, partial.as_mut()) {
                (FULL, None) => return Ok(Next::Record(chunk)),
                (FIRST, None) => partial = Some((offset, chunk)),
                (MIDDLE, Some((_, b))) => b.extend_from_slice(&chunk),
                (LAST, Some((_, b))) => {
                    b.extend_from_slice(&chunk);
                    return Ok(Next::Record(partial.take().expect("matched").1));
                }
                _ => {
                    self.finish();
                    return Ok(damaged(offset, format!("unexpected chunk type {typ}")));
                }
            }
        }
    }

    /// The stop for data that seems to end inside the chunk at `at` of
    /// the last block. A writer still appending (or killed mid-write)
    /// leaves a prefix of one chunk there and nothing else; a damaged
    /// length or zeroed bytes leave whole chunks after it, whose checksums
    /// still match. Checksums are only computed on this path, once per
    /// file, over at most one block.
    fn cut_short(&mut self, at: usize, record_start: u64) -> Next {
        let rest = &self.block[at..];
        let offset = self.base + at as u64;
        let follows =
            (1..rest.len()).find(|&i| whole_chunk_at(&rest[i..], (at + i) % BLOCK as usize));
        let stop = if let Some(i) = follows {
            Stop::Damaged {
                offset,
                what: format!(
                    "bad chunk header (a whole chunk follows at byte {})",
                    self.base + (at + i) as u64
                ),
            }
        } else if let Some(len) = shorter_payload_matches(rest) {
            Stop::Damaged {
                offset,
                what: format!("bad chunk length (its checksum matches a length of {len})"),
            }
        } else {
            Stop::Truncated {
                offset: record_start,
            }
        };
        self.finish();
        Next::Stopped(stop)
    }

    /// Nothing more is read after a stop.
    fn finish(&mut self) {
        self.eof = true;
        self.block.clear();
        self.at = 0;
    }
}

/// The 7 bytes before each chunk's payload.
struct ChunkHeader {
    crc: u32,
    len: usize,
    typ: u8,
}

impl ChunkHeader {
    /// The header `data` starts with, if it holds one.
    fn at(data: &[u8]) -> Option<ChunkHeader> {
        let h = data.get(..CHUNK_HEADER as usize)?;
        Some(ChunkHeader {
            crc: u32::from_le_bytes(h[..4].try_into().expect("4 bytes")),
            len: u16::from_le_bytes([h[4], h[5]]) as usize,
            typ: h[6],
        })
    }

    /// A type a writer gives chunks.
    fn known_type(&self) -> bool {
        (FULL..=LAST).contains(&self.typ)
    }
}

/// Whether `data` starts with a chunk a writer could have made at
/// position `in_block` of a block: a known type, inside the block and the
/// data, with a matching checksum.
fn whole_chunk_at(data: &[u8], in_block: usize) -> bool {
    let Some(h) = ChunkHeader::at(data).filter(ChunkHeader::known_type) else {
        return false;
    };
    let end = 7 + h.len;
    end <= data.len() && in_block + end <= BLOCK as usize && checksum(h.typ, &data[7..end]) == h.crc
}

/// For a chunk header at the start of `data` whose length runs past the
/// data's end: the payload length, shorter than that, for which its
/// checksum holds. A torn write leaves a payload prefix whose checksum
/// matches by chance only (about once in 2^32); a damaged length field
/// leaves the whole payload, found here.
fn shorter_payload_matches(data: &[u8]) -> Option<usize> {
    let header = ChunkHeader::at(data).filter(ChunkHeader::known_type)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&[header.typ]);
    for (k, byte) in data[7..].iter().enumerate() {
        if h.clone().finalize() == header.crc {
            return Some(k);
        }
        h.update(std::slice::from_ref(byte));
    }
    (h.finalize() == header.crc).then_some(data.len() - 7)
}

/// Reads every complete record of a transaction log held in memory, in
/// order; says where and why it stopped if that was before the end.
pub fn read_records(data: &[u8]) -> (Vec<Vec<u8>>, Option<Stop>) {
    let mut reader = Reader::new(data);
    let mut out = Vec::new();
    loop {
        match reader.next_record().expect("reading memory cannot fail") {
            Next::Record(r) => out.push(r),
            Next::End => return (out, None),
            Next::Stopped(stop) => return (out, Some(stop)),
        }
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

    #[test]
    fn one_flipped_byte_is_damage_or_harmless_never_truncation() {
        // Records of varied sizes over more than one block, so that flips
        // land in headers, payloads, block padding and chunks that
        // continue a record.
        let records: Vec<Vec<u8>> = (0..40u32)
            .map(|i| vec![i as u8; (i as usize * 211) % 3000 + 1])
            .collect();
        let f = file(&records);
        assert!(f.len() as u64 > BLOCK + 1000, "{}", f.len());
        let headers: Vec<usize> = {
            let mut at = FILE_HEADER.len();
            let mut v = Vec::new();
            while at + 7 <= f.len() {
                if BLOCK as usize - at % BLOCK as usize <= 6 {
                    at += BLOCK as usize - at % BLOCK as usize;
                    continue;
                }
                v.extend(at..at + 7);
                at += 7 + u16::from_le_bytes([f[at + 4], f[at + 5]]) as usize;
            }
            v
        };
        let positions = (FILE_HEADER.len()..f.len())
            .step_by(13)
            .chain(headers.iter().copied());
        for at in positions {
            let mut bad = f.clone();
            bad[at] ^= 0x55;
            let (got, stop) = read_records(&bad);
            match stop {
                Some(Stop::Damaged { .. }) => {}
                None => assert_eq!(got, records, "flip at {at} changed records silently"),
                Some(Stop::Truncated { .. }) => panic!("flip at {at} read as truncation"),
            }
        }
    }

    #[test]
    fn a_file_cut_anywhere_is_truncated_never_damaged() {
        let records: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                (0..(i as usize * 211) % 3000 + 1)
                    .map(|j| (i as usize * 7 + j) as u8)
                    .collect()
            })
            .collect();
        let f = file(&records);
        for cut in (FILE_HEADER.len()..f.len()).step_by(11) {
            let (got, stop) = read_records(&f[..cut]);
            assert!(
                !matches!(stop, Some(Stop::Damaged { .. })),
                "cut at {cut}: {stop:?}"
            );
            assert_eq!(got[..], records[..got.len()], "cut at {cut}");
        }
    }

    /// A source that hands out a few bytes per read, as pipes and network
    /// file systems may.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(997);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_give_the_same_records() {
        let records: Vec<Vec<u8>> = (0..300)
            .map(|i| vec![i as u8; (i * 37) % 5000 + (i % 3) * 40000])
            .collect();
        let f = file(&records);
        let mut r = Reader::new(Trickle(&f));
        let mut got = Vec::new();
        loop {
            match r.next_record().unwrap() {
                Next::Record(rec) => got.push(rec),
                Next::End => break,
                Next::Stopped(s) => panic!("{s}"),
            }
        }
        assert_eq!(got, records);
        assert_eq!(r.next_record().unwrap(), Next::End);
    }
}
