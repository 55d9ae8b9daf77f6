//! TFRecord framing, the container format of TensorBoard event files.
//!
//! Each record is
//!
//! ```text
//!   u64 LE  length of data
//!   u32 LE  masked CRC-32C of those 8 length bytes
//!   [u8]    data
//!   u32 LE  masked CRC-32C of data
//! ```
//!
//! The CRC is "masked" (rotated and offset) because a CRC computed over
//! bytes that themselves contain CRCs is weak; TensorFlow's
//! `tensorflow/core/lib/hash/crc32c.h` defines the mask, and TensorBoard's
//! readers (`tensorboard/data/server/masked_crc.rs`,
//! `tensorboard/summary/writer/record_writer.py`) check it.
//!
//! The sink writes with [`append_record`]; the event-file source follows
//! files written by others with [`split`], which never trusts the bytes:
//! a record still being written waits, a damaged one is skipped and
//! reported once, and reading goes on after damage.

use std::ops::Range;

/// The constant TensorFlow adds after rotating a CRC.
const MASK_DELTA: u32 = 0xa282_ead8;

/// Bytes a record adds around its data.
pub const OVERHEAD: usize = 8 + 4 + 4;

/// Bytes of a record's header: the length and its checksum.
const HEADER: usize = 8 + 4;

/// The masked CRC-32C (Castagnoli) of `data`.
pub fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends one record holding `data` to `out`.
pub fn append_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.reserve(OVERHEAD + data.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// Why bytes are not a sequence of whole, valid records.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The bytes end inside a record: what a reader sees while a writer is
    /// mid-append, or after a crash tore the last record.
    #[error("truncated record at byte {offset}")]
    Truncated { offset: usize },
    #[error("bad length checksum at byte {offset}")]
    LengthCrc { offset: usize },
    #[error("bad data checksum in the record at byte {offset}")]
    DataCrc { offset: usize },
}

/// Splits `bytes` into the data of its records, checking both checksums.
/// The sink never reads its files back (recovery cuts to a committed
/// length); this exists for tests and diagnostics.
pub fn read_records(bytes: &[u8]) -> Result<Vec<&[u8]>, ReadError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let offset = at;
        let header = bytes
            .get(at..at + 12)
            .ok_or(ReadError::Truncated { offset })?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc(len_bytes).to_le_bytes() != len_crc {
            return Err(ReadError::LengthCrc { offset });
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len = usize::try_from(len).map_err(|_| ReadError::Truncated { offset })?;
        let data_end = (at + 12)
            .checked_add(len)
            .ok_or(ReadError::Truncated { offset })?;
        let data = bytes
            .get(at + 12..data_end)
            .ok_or(ReadError::Truncated { offset })?;
        let crc = bytes
            .get(data_end..data_end + 4)
            .ok_or(ReadError::Truncated { offset })?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(ReadError::DataCrc { offset });
        }
        out.push(data);
        at = data_end + 4;
    }
    Ok(out)
}

/// One complete record that [`split`] found, both checksums good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// File offset of the frame's first (length) byte.
    pub offset: u64,
    /// Where the record's data lies in the buffer given to [`split`].
    pub data: Range<usize>,
}

/// What was wrong with bytes that [`split`] skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The length's checksum does not match: the length cannot be trusted,
    /// so the bytes up to the next verified frame were skipped.
    LengthCrc,
    /// The length is good but the data's checksum is not: the bytes up to
    /// the next verified frame (that record, when the length was a real
    /// one) were skipped.
    DataCrc,
    /// The length is good but over the limit given to [`split`]: the record
    /// was skipped without being read (its length is checksummed, so where
    /// it ends is known).
    TooLong {
        /// The record's data length.
        len: u64,
    },
}

/// Bytes [`split`] skipped, reported once: the next call starts after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    /// File offset of the first skipped byte (where a frame was expected).
    pub offset: u64,
    /// File offset just after the skipped bytes: the next frame, or, for a
    /// long run of garbage, where a frame could still start. A run of
    /// garbage longer than the caller's buffer is reported in pieces, each
    /// starting where the previous one ended.
    pub end: u64,
    pub kind: DamageKind,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (start, end) = (self.offset, self.end);
        match self.kind {
            DamageKind::LengthCrc => write!(
                f,
                "bad length checksum at byte {start}: skipped bytes {start}..{end}"
            ),
            DamageKind::DataCrc => write!(
                f,
                "bad data checksum in the record at byte {start}: skipped bytes {start}..{end}"
            ),
            DamageKind::TooLong { len } => write!(
                f,
                "record of {len} bytes at byte {start} is over the limit: skipped bytes {start}..{end}"
            ),
        }
    }
}

/// What [`split`] found in a buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    /// The complete, verified records, in file order.
    pub frames: Vec<Frame>,
    /// Bytes from the buffer's start that are done with: the end of the
    /// last complete frame or of skipped damage. The next call starts at
    /// `base + consumed`. It exceeds the buffer's length only after a
    /// [`DamageKind::TooLong`] record whose end lies beyond the buffer (the
    /// caller seeks past it).
    pub consumed: u64,
    /// Skipped bytes, in file order; each is reported by exactly one call,
    /// the one that consumes it.
    pub damage: Vec<Damage>,
}

/// What a frame header at some position says.
enum Header {
    /// Fewer than [`HEADER`] bytes there.
    Short,
    /// The length's checksum does not match.
    Bad,
    /// A checksummed data length.
    Len(u64),
}

fn header_at(buf: &[u8], at: usize) -> Header {
    let Some(header) = buf.get(at..at.saturating_add(HEADER)) else {
        return Header::Short;
    };
    let (len, crc) = header.split_at(8);
    if masked_crc(len).to_le_bytes() != crc {
        return Header::Bad;
    }
    Header::Len(u64::from_le_bytes(len.try_into().expect("8 bytes")))
}

/// Whether the data of a frame at `at` with data length `len` (at most the
/// limit) is in `buf`, and if so whether its checksum matches. Returns the
/// data range and the frame's end.
fn data_at(buf: &[u8], at: usize, len: usize) -> Option<(bool, Range<usize>, usize)> {
    let start = at + HEADER;
    let end = start.checked_add(len)?;
    let frame_end = end.checked_add(4)?;
    let data = buf.get(start..end)?;
    let crc = buf.get(end..frame_end)?;
    Some((masked_crc(data).to_le_bytes() == crc, start..end, frame_end))
}

/// Splits `buf`, the bytes of a file from offset `base` on, into TFRecord
/// frames. Pure: what happens next is decided by the returned `consumed`
/// alone, so a reader that keeps nothing but its committed offset (and
/// restarts anywhere) sees every good record exactly once and every piece
/// of damage once.
///
/// - A frame whose bytes are not all in `buf` ends the split without being
///   consumed: a writer is appending it.
/// - Bad data checksum under a good length checksum: the bytes up to the
///   next verified frame are skipped, found as after a bad length
///   checksum (below), which for a real record with bad data is where its
///   length says it ends ([`DamageKind::DataCrc`]). A good length over
///   `max_record` skips that record ([`DamageKind::TooLong`]).
/// - Bad length checksum: the length cannot be trusted, so the following
///   positions are tried until one holds a frame whose length checksum is
///   good, whose length is within `max_record` and whose data checksum is
///   good; everything before it is skipped ([`DamageKind::LengthCrc`]). A
///   position whose header is good but whose data is not all in `buf`
///   stops the scan there (it is consumed up to, and checked next time).
///   When no position qualifies, the damage waits for more bytes unless
///   at least `max_record + OVERHEAD + 12` bytes follow the bad header:
///   then every position that was tried is consumed (a frame could still
///   start in the last 11 bytes) and the rest of the run is reported by
///   later calls, in adjacent pieces. So callers must offer at least
///   `max_record + OVERHEAD + 12` bytes from their offset when the file
///   has them (see [`min_window`]).
///
/// The work is linear in `buf.len()` plus one data checksum per position
/// with a good length checksum (rare in garbage: 2^-32 per position).
pub fn split(buf: &[u8], base: u64, max_record: usize) -> Split {
    let mut out = Split::default();
    let max_frame = max_record.saturating_add(OVERHEAD);
    let mut at = 0usize;
    let at_file = |at: usize| base.saturating_add(at as u64);
    loop {
        // What is wrong with the frame at `at` when it does not verify:
        // then the bytes up to the next verified frame are skipped.
        let damaged = match header_at(buf, at) {
            Header::Short => break,
            Header::Bad => DamageKind::LengthCrc,
            Header::Len(len) => match usize::try_from(len).ok().filter(|&l| l <= max_record) {
                Some(len) => {
                    let Some((good, data, end)) = data_at(buf, at, len) else {
                        break;
                    };
                    if good {
                        out.frames.push(Frame {
                            offset: at_file(at),
                            data,
                        });
                        at = end;
                        continue;
                    }
                    // A good length checksum is not proof that a frame
                    // starts here: the data and data checksum of an 8-byte
                    // record read as a valid header, so a resync can stop
                    // inside a damaged record. Skipping the whole claimed
                    // length would then swallow the good frame after it;
                    // the next verified frame is looked for instead (for a
                    // real record with bad data, that is where its length
                    // says it ends).
                    DamageKind::DataCrc
                }
                None => match too_long(&mut out, buf, base, at, len, max_record, max_frame) {
                    Next::At(end) => {
                        at = end;
                        continue;
                    }
                    Next::Beyond => return out,
                    Next::Wait => break,
                },
            },
        };
        match resync(buf, at, max_record, max_frame) {
            Some(next) => {
                out.damage.push(Damage {
                    offset: at_file(at),
                    end: at_file(next),
                    kind: damaged,
                });
                at = next;
            }
            None => break,
        }
    }
    out.consumed = at as u64;
    out
}

/// Where [`split`] goes on after skipped bytes.
enum Next {
    /// At this position of the buffer.
    At(usize),
    /// Past the buffer's end: `consumed` says where, and the split ends.
    Beyond,
    /// Nowhere yet: more bytes are needed.
    Wait,
}

/// A record at `at` whose checksummed length `len` is over the limit:
/// skipped whole and unread, and reported in `out`.
fn too_long(
    out: &mut Split,
    buf: &[u8],
    base: u64,
    at: usize,
    len: u64,
    max_record: usize,
    max_frame: usize,
) -> Next {
    // The length is checksummed, so the whole record is skipped unread;
    // unless its end is not even a file offset, which only garbage with a
    // lucky checksum can say.
    let end = (at as u64)
        .checked_add(OVERHEAD as u64)
        .and_then(|e| e.checked_add(len))
        .filter(|e| base.checked_add(*e).is_some());
    let end = match end.or_else(|| resync(buf, at, max_record, max_frame).map(|n| n as u64)) {
        Some(end) => end,
        None => return Next::Wait,
    };
    out.damage.push(Damage {
        offset: base.saturating_add(at as u64),
        end: base + end,
        kind: DamageKind::TooLong { len },
    });
    match usize::try_from(end).ok().filter(|&e| e <= buf.len()) {
        Some(end) => Next::At(end),
        None => {
            out.consumed = end;
            Next::Beyond
        }
    }
}

/// The fewest bytes from its offset a caller must give [`split`], when the
/// file has them, for it to make progress whatever the bytes are.
pub fn min_window(max_record: usize) -> usize {
    max_record.saturating_add(OVERHEAD + HEADER)
}

/// Whether a whole frame with good checksums starts at `at`.
fn frame_verifies(buf: &[u8], at: usize) -> bool {
    match header_at(buf, at) {
        Header::Len(len) => usize::try_from(len)
            .ok()
            .and_then(|len| data_at(buf, at, len))
            .is_some_and(|(good, _, _)| good),
        _ => false,
    }
}

/// After an untrustworthy header at `bad`: the position to go on from, or
/// `None` to wait for more bytes (see [`split`]).
fn resync(buf: &[u8], bad: usize, max_record: usize, max_frame: usize) -> Option<usize> {
    let mut at = bad + 1;
    loop {
        match header_at(buf, at) {
            Header::Short => break,
            Header::Bad => {}
            Header::Len(len) => {
                if let Some(len) = usize::try_from(len).ok().filter(|&l| l <= max_record) {
                    match data_at(buf, at, len) {
                        // Not all here yet: likely the next frame; checked
                        // when its bytes are in.
                        None => return Some(at),
                        // The payload and data checksum of a damaged 8-byte
                        // record always read as a good header (both
                        // checksums are the masked CRC of the same 8
                        // bytes), and when its payload says 8 the false
                        // frame there takes the next real header as its data
                        // and verifies too. The real frame is then the one
                        // 12 bytes on; a real 8-byte record whose bytes
                        // after it also verify as a frame is left to chance
                        // (2^-32).
                        Some((true, _, _)) if len == 8 && frame_verifies(buf, at + HEADER) => {}
                        Some((true, _, _)) => return Some(at),
                        Some((false, _, _)) => {}
                    }
                }
            }
        }
        at += 1;
    }
    // Every position before `at` was tried; `at` and later lack a header.
    // With this much after the bad header, a frame starting within a
    // maximal frame of it would have had its header checked: the bad
    // bytes are more than one record, and a lone damaged record is always
    // reported in one piece.
    (buf.len() - bad >= max_frame + HEADER).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_and_mask_match_published_values() {
        // RFC 3720 (iSCSI) B.4: CRC-32C of 32 zero bytes is 0x8a9136aa.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        // Masked values as tensorboard 2.21.0's own masked_crc32c
        // (tensorboard.compat.tensorflow_stub.pywrap_tensorflow) gives them.
        assert_eq!(masked_crc(&[0u8; 32]), 0x0fd7_fffa);
        assert_eq!(masked_crc(b"hello"), 0x191c_1fbb);
    }

    #[test]
    fn empty_record_known_bytes() {
        // A zero-length record: the length is 8 zero bytes, so both
        // checksums are masked CRCs of fixed inputs.
        let mut out = Vec::new();
        append_record(&mut out, b"");
        assert_eq!(out.len(), OVERHEAD);
        assert_eq!(&out[..8], &[0u8; 8]);
        assert_eq!(&out[8..12], &masked_crc(&[0u8; 8]).to_le_bytes());
        assert_eq!(&out[12..], &masked_crc(b"").to_le_bytes());
        assert_eq!(masked_crc(b""), MASK_DELTA, "CRC of nothing is 0");
    }

    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let mut out = Vec::new();
        append_record(&mut out, b"hello");
        append_record(&mut out, &[7u8; 300]);
        let first_len = OVERHEAD + 5;
        assert_eq!(
            read_records(&out).unwrap(),
            vec![&b"hello"[..], &[7u8; 300][..]]
        );
        for cut in [1, 11, 12, first_len + 13, out.len() - 1] {
            assert_eq!(
                read_records(&out[..cut]).err(),
                Some(ReadError::Truncated {
                    offset: if cut < first_len { 0 } else { first_len }
                }),
                "cut at {cut}"
            );
        }
        let mut bad = out.clone();
        bad[14] ^= 1;
        assert_eq!(read_records(&bad), Err(ReadError::DataCrc { offset: 0 }));
        let mut bad = out.clone();
        bad[0] ^= 1;
        assert_eq!(read_records(&bad), Err(ReadError::LengthCrc { offset: 0 }));
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const MAX: usize = 1024;

    /// Records of the given data lengths (distinct contents), and the file
    /// offset of each.
    fn file(lens: &[usize]) -> (Vec<u8>, Vec<u64>) {
        let mut out = Vec::new();
        let mut offsets = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            offsets.push(out.len() as u64);
            let data: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            append_record(&mut out, &data);
        }
        (out, offsets)
    }

    /// Checks what must hold for any input: frames and damage tile the
    /// consumed bytes in order, frames lie in the buffer and verify.
    fn check_tiling(buf: &[u8], base: u64, s: &Split) {
        let mut items: Vec<(u64, u64)> = s
            .frames
            .iter()
            .map(|f| (f.offset, base + f.data.end as u64 + 4))
            .chain(s.damage.iter().map(|d| (d.offset, d.end)))
            .collect();
        items.sort();
        let mut at = base;
        for (start, end) in items {
            assert_eq!(start, at, "gap or overlap in {s:?}");
            assert!(end > start, "{s:?}");
            at = end;
        }
        assert_eq!(at, base + s.consumed, "{s:?}");
        for f in &s.frames {
            assert!(f.data.end + 4 <= buf.len());
            let data = &buf[f.data.clone()];
            assert_eq!(
                &buf[f.data.end..f.data.end + 4],
                masked_crc(data).to_le_bytes()
            );
        }
        if s.consumed > buf.len() as u64 {
            assert!(matches!(
                s.damage.last().map(|d| d.kind),
                Some(DamageKind::TooLong { .. })
            ));
        }
    }

    #[test]
    fn whole_records_with_base_offset() {
        let (buf, offsets) = file(&[0, 5, 300, 1]);
        let s = split(&buf, 1000, MAX);
        check_tiling(&buf, 1000, &s);
        assert_eq!(s.consumed, buf.len() as u64);
        assert!(s.damage.is_empty());
        let got: Vec<u64> = s.frames.iter().map(|f| f.offset).collect();
        let want: Vec<u64> = offsets.iter().map(|o| o + 1000).collect();
        assert_eq!(got, want);
        assert_eq!(s.frames[2].data.len(), 300);
        assert_eq!(s.frames[2].data.start, offsets[2] as usize + 12);
    }

    #[test]
    fn a_cut_record_waits_at_every_cut() {
        let (buf, offsets) = file(&[5, 40, 7]);
        for cut in 0..=buf.len() {
            let s = split(&buf[..cut], 0, MAX);
            check_tiling(&buf[..cut], 0, &s);
            assert!(s.damage.is_empty(), "cut {cut}: {s:?}");
            let complete = offsets
                .iter()
                .chain(std::iter::once(&(buf.len() as u64)))
                .skip(1)
                .filter(|&&end| end <= cut as u64)
                .count();
            assert_eq!(s.frames.len(), complete, "cut {cut}");
            let consumed = if complete == 0 {
                0
            } else {
                offsets.get(complete).copied().unwrap_or(buf.len() as u64)
            };
            assert_eq!(s.consumed, consumed, "cut {cut}");
        }
    }

    #[test]
    fn bad_data_crc_skips_that_record_only() {
        let (mut buf, offsets) = file(&[5, 40, 7]);
        buf[offsets[1] as usize + 12 + 3] ^= 0x10;
        let s = split(&buf, 0, MAX);
        check_tiling(&buf, 0, &s);
        assert_eq!(
            s.damage,
            [Damage {
                offset: offsets[1],
                end: offsets[2],
                kind: DamageKind::DataCrc
            }]
        );
        let got: Vec<u64> = s.frames.iter().map(|f| f.offset).collect();
        assert_eq!(got, [offsets[0], offsets[2]]);
        // The data checksum itself damaged: the same.
        let (mut buf, offsets) = file(&[5, 40, 7]);
        buf[offsets[2] as usize - 1] ^= 1;
        let s = split(&buf, 0, MAX);
        assert_eq!(s.damage[0].kind, DamageKind::DataCrc);
        assert_eq!(s.frames.len(), 2);
    }

    /// An 8-byte record's data and data checksum form a valid header; a
    /// resync after damage before it stops there, and the false length
    /// must not swallow the good frame that follows, however the bytes
    /// arrive.
    #[test]
    fn a_false_header_inside_a_damaged_record_does_not_swallow_the_next_frame() {
        let mut buf = Vec::new();
        append_record(&mut buf, &[3, 0, 0, 0, 0, 0, 0, 0]);
        let good = buf.len();
        append_record(&mut buf, &[9; 16]);
        buf[0] ^= 1;
        for cut in 0..=buf.len() {
            let first = split(&buf[..cut], 0, MAX);
            let from = first.consumed as usize;
            let rest = split(&buf[from..], from as u64, MAX);
            check_tiling(&buf[from..], from as u64, &rest);
            let frames: Vec<u64> = first
                .frames
                .iter()
                .chain(&rest.frames)
                .map(|f| f.offset)
                .collect();
            assert_eq!(frames, [good as u64], "cut at {cut}");
        }
    }

    #[test]
    fn bad_length_crc_resyncs_on_the_next_frame() {
        for byte in 0..12 {
            let (mut buf, offsets) = file(&[5, 40, 7, 9]);
            buf[offsets[1] as usize + byte] ^= 0x80;
            let s = split(&buf, 10, MAX);
            check_tiling(&buf, 10, &s);
            assert_eq!(
                s.damage,
                [Damage {
                    offset: offsets[1] + 10,
                    end: offsets[2] + 10,
                    kind: DamageKind::LengthCrc
                }],
                "byte {byte}"
            );
            assert_eq!(s.frames.len(), 3);
            assert_eq!(s.consumed, buf.len() as u64);
        }
    }

    #[test]
    fn resync_waits_for_the_next_frame_then_reports_once() {
        let (mut buf, offsets) = file(&[5, 40, 7]);
        buf[offsets[1] as usize] ^= 1;
        // Nothing of the next frame yet: wait, report nothing.
        let upto = offsets[2] as usize + 5;
        let s = split(&buf[..upto], 0, MAX);
        assert_eq!((s.frames.len(), s.consumed), (1, offsets[1]));
        assert!(s.damage.is_empty());
        // The next frame's header is in, its data not: the damage is
        // consumed and reported, the frame waits.
        let upto = offsets[2] as usize + 14;
        let s = split(&buf[..upto], 0, MAX);
        assert_eq!(s.consumed, offsets[2]);
        assert_eq!(s.damage.len(), 1);
        // Resuming there yields the frame and no damage again.
        let s = split(&buf[offsets[2] as usize..], offsets[2], MAX);
        assert_eq!((s.frames.len(), s.damage.len()), (1, 0));
    }

    #[test]
    fn long_garbage_is_consumed_where_no_frame_can_start() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let garbage: Vec<u8> = (0..MAX + OVERHEAD + 100).map(|_| rng.gen()).collect();
        let s = split(&garbage, 0, MAX);
        check_tiling(&garbage, 0, &s);
        assert_eq!(s.consumed, (garbage.len() - 11) as u64);
        assert_eq!(s.damage.len(), 1);
        // Short garbage waits.
        let s = split(&garbage[..MAX], 0, MAX);
        assert_eq!((s.consumed, s.damage.len()), (0, 0));
        // Garbage then a frame: the frame is found.
        let mut buf = garbage[..50].to_vec();
        append_record(&mut buf, b"after");
        let s = split(&buf, 0, MAX);
        check_tiling(&buf, 0, &s);
        assert_eq!(s.frames.len(), 1);
        assert_eq!(&buf[s.frames[0].data.clone()], b"after");
        assert_eq!(s.damage[0].end, 50);
    }

    #[test]
    fn a_lone_damaged_record_of_maximal_size_is_one_piece() {
        let (mut buf, offsets) = file(&[MAX, 3]);
        buf[2] ^= 1;
        let b = offsets[1] as usize;
        // The next header not all visible: the bad record waits whole,
        // even though more than a maximal frame follows the bad header.
        for visible in b + 1..b + 12 {
            let s = split(&buf[..visible], 0, MAX);
            assert_eq!((s.consumed, s.damage.len()), (0, 0), "visible {visible}");
        }
        let s = split(&buf[..min_window(MAX)], 0, MAX);
        assert_eq!(
            s.damage,
            [Damage {
                offset: 0,
                end: b as u64,
                kind: DamageKind::LengthCrc
            }]
        );
    }

    #[test]
    fn too_long_records_are_skipped_unread() {
        let (buf, offsets) = file(&[5, 2000, 7]);
        let s = split(&buf, 0, MAX);
        check_tiling(&buf, 0, &s);
        assert_eq!(
            s.damage,
            [Damage {
                offset: offsets[1],
                end: offsets[2],
                kind: DamageKind::TooLong { len: 2000 }
            }]
        );
        assert_eq!(s.frames.len(), 2);
        // Only its header in the buffer: consumed points past it.
        let s = split(&buf[..offsets[1] as usize + 12], 0, MAX);
        assert_eq!(s.consumed, offsets[2]);
        assert_eq!(s.frames.len(), 1);
    }

    #[test]
    fn random_bytes_and_damaged_files_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for round in 0..3000 {
            let buf: Vec<u8> = if round % 2 == 0 {
                let n = rng.gen_range(0..600);
                (0..n).map(|_| rng.gen()).collect()
            } else {
                let lens: Vec<usize> = (0..rng.gen_range(0..8))
                    .map(|_| rng.gen_range(0..200))
                    .collect();
                let (mut buf, _) = file(&lens);
                for _ in 0..rng.gen_range(0..4) {
                    if !buf.is_empty() {
                        let i = rng.gen_range(0..buf.len());
                        buf[i] = rng.gen();
                    }
                }
                let cut = rng.gen_range(0..=buf.len());
                buf.truncate(cut);
                buf
            };
            let base = rng.gen_range(0..u64::MAX / 2);
            let max = rng.gen_range(0..300);
            let s = split(&buf, base, max);
            check_tiling(&buf, base, &s);
        }
        // Extreme lengths with good checksums.
        for len in [u64::MAX, u64::MAX - 15, 1 << 62, MAX as u64 + 1] {
            let mut buf = len.to_le_bytes().to_vec();
            buf.extend_from_slice(&masked_crc(&len.to_le_bytes()).to_le_bytes());
            buf.extend_from_slice(&[0u8; 64]);
            let s = split(&buf, u64::MAX - 1000, MAX);
            check_tiling(&buf, u64::MAX - 1000, &s);
            let s = split(&buf, 0, MAX);
            check_tiling(&buf, 0, &s);
        }
    }

    #[test]
    fn a_damaged_8_byte_record_saying_8_does_not_hide_the_next_frame() {
        // Its payload and data checksum form a good header of length 8,
        // whose "data" is the next frame's length, checksummed by that
        // frame's length checksum: a false frame that verifies.
        let mut f = Vec::new();
        append_record(&mut f, b"good one");
        let bad = f.len();
        append_record(&mut f, &8u64.to_le_bytes());
        f[bad] ^= 1;
        append_record(&mut f, b"the frame after it");
        let s = split(&f, 0, 1 << 20);
        let payloads: Vec<&[u8]> = s.frames.iter().map(|x| &f[x.data.clone()]).collect();
        assert_eq!(payloads, [&b"good one"[..], &b"the frame after it"[..]]);
        assert_eq!(s.damage.len(), 1, "{:?}", s.damage);
        assert_eq!(
            (s.damage[0].offset, s.damage[0].end),
            (bad as u64, bad as u64 + 24)
        );
        assert_eq!(s.consumed, f.len() as u64);
    }
}
