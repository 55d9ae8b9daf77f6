//! Cutting a file's bytes into records.
//!
//! The follower reads a buffer of bytes starting at the checkpoint's offset
//! and asks the framing of the file's kind where the complete records in it
//! are. What is not consumed (a line without its newline yet, a TFRecord
//! frame cut at the end of the file) is read again next time, from the
//! same offset: a record is taken whole or not at all.

use crate::stats::Counters;

/// A complete record in a batch buffer: its byte offset in the file and its
/// range in the buffer (for a line: without `\n` or a trailing `\r`; for a
/// TFRecord frame: the payload; for a document: the whole file).
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: u64,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// The records found in a buffer and how far they reach.
#[derive(Debug, Default)]
pub struct Cut {
    pub records: Vec<Record>,
    /// Bytes of the buffer taken: past the last complete record, or past
    /// damage that was skipped.
    pub consumed: usize,
    /// Past `consumed`, what the next record needs before it can be cut
    /// (a frame's announced length), when more than the buffer holds.
    pub need: Option<usize>,
    /// Skipped records, counted.
    pub delta: Counters,
}

/// Lines: every `\n`-terminated line of at most `max_line` bytes that is
/// valid UTF-8; longer and invalid ones are counted and logged with file
/// and offset, and skipped. An unterminated tail is left unconsumed.
pub fn lines(buf: &[u8], base: u64, max_line: usize, path: &str) -> Cut {
    let mut cut = Cut::default();
    let mut pos = 0;
    while let Some(i) = memchr::memchr(b'\n', &buf[pos..]) {
        let start = pos;
        let mut end = pos + i;
        pos = end + 1;
        if end > start && buf[end - 1] == b'\r' {
            end -= 1;
        }
        let offset = base + start as u64;
        cut.delta.lines += 1;
        if end - start > max_line {
            cut.delta.oversized += 1;
            tracing::warn!(
                file = path,
                offset,
                bytes = end - start,
                max_line,
                "skipping line longer than tail.max_line_bytes"
            );
        } else if let Err(e) = std::str::from_utf8(&buf[start..end]) {
            cut.delta.invalid_utf8 += 1;
            tracing::warn!(file = path, offset, error = %e, "skipping line: invalid UTF-8");
        } else {
            cut.records.push(Record { offset, start, end });
        }
    }
    cut.consumed = pos;
    cut
}

/// TensorBoard event files: TFRecord frames (see
/// `format::tfrecord`). A frame whose checksums fail is counted, logged
/// with file and offset and skipped; reading goes on after it.
pub fn tfrecords(buf: &[u8], base: u64, max_record: usize, path: &str) -> Cut {
    let split = split_frames(buf, base, max_record);
    let mut cut = Cut {
        consumed: split.consumed,
        need: split.need,
        ..Cut::default()
    };
    for frame in split.frames {
        cut.delta.lines += 1;
        cut.records.push(Record {
            offset: frame.offset,
            start: frame.start,
            end: frame.end,
        });
    }
    for damage in split.damage {
        cut.delta.lines += 1;
        cut.delta.damaged += 1;
        tracing::warn!(
            file = path,
            offset = damage.offset,
            "skipping damaged TFRecord frame: {}",
            damage.what
        );
    }
    cut
}

/// A frame found by [`split_frames`].
struct Frame {
    offset: u64,
    start: usize,
    end: usize,
}

/// A frame that could not be read, by file offset.
struct Damage {
    offset: u64,
    what: String,
}

struct Split {
    frames: Vec<Frame>,
    damage: Vec<Damage>,
    consumed: usize,
    need: Option<usize>,
}

/// TFRecord framing: u64 length (LE), masked CRC-32C of the length, data,
/// masked CRC-32C of the data.
fn split_frames(buf: &[u8], base: u64, max_record: usize) -> Split {
    let mut out = Split {
        frames: Vec::new(),
        damage: Vec::new(),
        consumed: 0,
        need: None,
    };
    let mut pos = 0;
    while buf.len() - pos >= 12 {
        let len_bytes = &buf[pos..pos + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let len_crc = u32::from_le_bytes(buf[pos + 8..pos + 12].try_into().expect("4 bytes"));
        if masked_crc(len_bytes) != len_crc {
            out.damage.push(Damage {
                offset: base + pos as u64,
                what: "length checksum mismatch; the rest of the file is not trusted".into(),
            });
            out.consumed = buf.len();
            return out;
        }
        let total = 16 + len as usize;
        if len as usize > max_record {
            out.damage.push(Damage {
                offset: base + pos as u64,
                what: format!("record of {len} bytes is over the limit of {max_record}"),
            });
            out.consumed = pos;
            out.need = Some(total);
            return out;
        }
        if buf.len() - pos < total {
            out.need = Some(total);
            break;
        }
        let data = &buf[pos + 12..pos + 12 + len as usize];
        let data_crc = u32::from_le_bytes(buf[pos + total - 4..pos + total].try_into().expect("4"));
        if masked_crc(data) == data_crc {
            out.frames.push(Frame {
                offset: base + pos as u64,
                start: pos + 12,
                end: pos + 12 + len as usize,
            });
        } else {
            out.damage.push(Damage {
                offset: base + pos as u64,
                what: "data checksum mismatch".into(),
            });
        }
        pos += total;
        out.consumed = pos;
    }
    out
}

fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_leave_the_unterminated_tail_and_skip_bad_ones() {
        let buf = b"a\r\n\xff\nlong-line\nb\npart";
        let cut = lines(buf, 100, 4, "f");
        let got: Vec<_> = cut
            .records
            .iter()
            .map(|r| (r.offset, &buf[r.start..r.end]))
            .collect();
        assert_eq!(got, [(100, &b"a"[..]), (115, &b"b"[..])]);
        assert_eq!(cut.consumed, buf.len() - 4);
        assert_eq!(
            (cut.delta.lines, cut.delta.invalid_utf8, cut.delta.oversized),
            (4, 1, 1)
        );
    }
}
