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
    /// Set when what was skipped ends past the buffer: the offset reading
    /// goes on from.
    pub skip_to: Option<u64>,
    /// Skipped records, counted.
    pub delta: Counters,
    /// Skipped records, each with its offset and why (rare: bad lines,
    /// damaged frames), for `explain`.
    pub skipped: Vec<Skip>,
}

/// A record the framing skipped: where it starts and why, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub offset: u64,
    pub why: String,
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
            cut.skipped.push(Skip {
                offset,
                why: oversized(end - start, max_line),
            });
        } else if let Err(e) = std::str::from_utf8(&buf[start..end]) {
            cut.delta.invalid_utf8 += 1;
            tracing::warn!(file = path, offset, error = %e, "skipping line: invalid UTF-8");
            cut.skipped.push(Skip {
                offset,
                why: format!("invalid UTF-8 ({e}): skipped"),
            });
        } else {
            cut.records.push(Record { offset, start, end });
        }
    }
    cut.consumed = pos;
    cut
}

/// TensorBoard event files: TFRecord frames (`format::tfrecord`). A frame
/// whose checksums fail is counted, logged with file and offset and
/// skipped; reading goes on after it. `len` is the file's length: damage
/// whose end lies beyond it (an over-long record still being written) is
/// left for later, unconsumed.
pub fn tfrecords(buf: &[u8], base: u64, max_record: usize, len: u64, path: &str) -> Cut {
    let split = crate::format::tfrecord::split(buf, base, max_record);
    // Damage reaching past the end of the file is a record still being
    // written (or garbage still growing): stop before it for now.
    let limit = split.damage.iter().find(|d| d.end > len).map(|d| d.offset);
    let consumed = limit.map_or(split.consumed, |o| o - base);
    let mut cut = Cut {
        consumed: consumed as usize,
        skip_to: (consumed > buf.len() as u64).then_some(base + consumed),
        ..Cut::default()
    };
    let before = |offset: u64| limit.map_or(true, |l| offset < l);
    for frame in split.frames.into_iter().filter(|f| before(f.offset)) {
        cut.delta.lines += 1;
        cut.records.push(Record {
            offset: frame.offset,
            start: frame.data.start,
            end: frame.data.end,
        });
    }
    for damage in split.damage.iter().filter(|d| before(d.offset)) {
        cut.delta.lines += 1;
        cut.delta.damaged += 1;
        tracing::warn!(
            file = path,
            offset = damage.offset,
            "skipping damaged TensorBoard record: {damage}"
        );
        cut.skipped.push(Skip {
            offset: damage.offset,
            why: format!("damaged record: {damage}"),
        });
    }
    cut
}

/// Why a line of `bytes` is skipped, when the limit is `max_line`.
pub fn oversized(bytes: usize, max_line: usize) -> String {
    format!("a line of {bytes} bytes, longer than tail.max_line_bytes ({max_line}): skipped")
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
        let skipped: Vec<_> = cut.skipped.iter().map(|s| s.offset).collect();
        assert_eq!(skipped, [103, 105]);
        assert!(
            cut.skipped[1].why.contains("longer than"),
            "{:?}",
            cut.skipped
        );
    }
}
