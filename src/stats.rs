//! Counters of what the agent read, took and skipped.

use serde::{Deserialize, Serialize};

/// What happened to the lines read, kept per file and in total.
///
/// They are committed in the same journal transaction as the rows and the
/// offsets they describe, so after a crash they are exact, not approximate:
/// a line is counted once, however often the agent restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Complete lines taken from the file (good or bad).
    pub lines: u64,
    /// Rows produced.
    pub rows: u64,
    /// Valid JSON (or foreign text) that no rule matched: ordinary log lines.
    pub unmatched: u64,
    /// Lines that look like JSON objects but do not parse (torn, truncated).
    pub invalid_json: u64,
    /// Lines that are not valid UTF-8.
    pub invalid_utf8: u64,
    /// Lines longer than `tail.max_line_bytes`, skipped.
    pub oversized: u64,
    /// Metric fields whose value was a string, null or array, skipped.
    pub skipped_values: u64,
    /// Matched records without a usable step or run id, skipped.
    pub rejected: u64,
    /// Times a file shrank below its offset (copytruncate) and was re-read from 0.
    pub truncations: u64,
    /// Unterminated last lines of deleted files, which can never complete.
    pub unterminated: u64,
    /// Records whose framing checksums failed (TensorBoard event files).
    pub damaged: u64,
    /// Points dropped because another source of the same run already
    /// delivered them (a worker's text log and its own event file).
    pub duplicates: u64,
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.lines += o.lines;
        self.rows += o.rows;
        self.unmatched += o.unmatched;
        self.invalid_json += o.invalid_json;
        self.invalid_utf8 += o.invalid_utf8;
        self.oversized += o.oversized;
        self.skipped_values += o.skipped_values;
        self.rejected += o.rejected;
        self.truncations += o.truncations;
        self.unterminated += o.unterminated;
        self.damaged += o.damaged;
        self.duplicates += o.duplicates;
    }

    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}
