//! Turning log lines into rows.
//!
//! A line that looks like a JSON object is parsed as JSON (accepting
//! Python's `NaN`/`Infinity`) and offered to the JSON rules in order; any
//! other line is offered to the text rules. The first rule that takes the
//! line makes its rows (one record can make several: RLlib's result is a
//! metrics row and, once, the run's configuration). Everything else is
//! counted, never fatal: a worker's log is full of ordinary lines, and a
//! torn line must not stop the ones after it.
//!
//! Lines are not read alone: a file's [`Memo`] carries its latest step and
//! run id to the lines after them. [`Extractor::explain`] runs the same
//! path and says why a line made no row.

pub mod console;
pub mod events;
mod explain;
pub mod json;
pub mod patterns;
pub mod pyjson;
mod rule;
pub mod silence;
mod text;
mod time;

pub use self::explain::{Explanation, Outcome};
pub use self::time::{parse_timestamp, parse_timestamp_as};
pub use crate::journal::Memo;
pub use pyjson::parse as parse_python_json;
pub use rule::{Applied, Line, Rule};

use std::borrow::Cow;

use crate::config::ExtractConfig;
use crate::row::Row;
use crate::stats::Counters;

/// The compiled rule set.
#[derive(Debug)]
pub struct Extractor {
    rules: Vec<Rule>,
    /// Runs whose worker-written TensorBoard event files are being read:
    /// rows of rules that yield to them are dropped (the ingest loop keeps
    /// this up to date, from the checkpoints and as event files are read).
    worker_tensorboard: std::collections::HashSet<String>,
}

/// What became of one line: which rule took it (by index) and how, or
/// that none did, or that it is broken JSON.
#[derive(Debug)]
enum Verdict {
    Taken(usize, Applied),
    NoMatch,
}

impl Extractor {
    pub fn new(config: &ExtractConfig) -> Result<Extractor, String> {
        let rules = config
            .rules
            .iter()
            .map(|r| Rule::compile(r).map_err(|e| format!("extract rule {:?}: {e}", r.name)))
            .collect::<Result<_, _>>()?;
        Ok(Extractor {
            rules,
            worker_tensorboard: Default::default(),
        })
    }

    /// Notes that `run_id`'s worker writes TensorBoard event files that
    /// are being read: from now on they are the run's copy of the points
    /// that rules with `yields_to_tensorboard` read from its logs.
    pub fn note_worker_tensorboard(&mut self, run_id: &str) {
        if !self.worker_tensorboard.contains(run_id) {
            tracing::debug!(
                run = run_id,
                "run's worker writes TensorBoard event files; its text twins give way"
            );
            self.worker_tensorboard.insert(run_id.to_string());
        }
    }

    /// Whether `run_id`'s worker-written event files are being read (see
    /// [`note_worker_tensorboard`](Self::note_worker_tensorboard)).
    pub fn worker_writes_tensorboard(&self, run_id: &str) -> bool {
        self.worker_tensorboard.contains(run_id)
    }

    /// Drops the rows `out[from..]` that rule `i` made, when it yields to
    /// the worker's own event files of their run; returns how many.
    fn give_way(&self, i: usize, out: &mut Vec<Row>, from: usize) -> usize {
        if !self.rules[i].yields_to_tensorboard || self.worker_tensorboard.is_empty() {
            return 0;
        }
        let before = out.len();
        let mut k = 0;
        out.retain(|row| {
            k += 1;
            k <= from || !self.worker_tensorboard.contains(&row.run_id)
        });
        before - out.len()
    }

    /// Extracts the rows in one complete line (without its newline) read
    /// from `path` at byte `offset`, appending them to `out` and counting
    /// what the line is. `memo` is the file's: read for what the line
    /// lacks, updated with what it carries.
    #[allow(clippy::too_many_arguments)]
    pub fn extract(
        &self,
        path: &str,
        offset: u64,
        line: &str,
        read_time: f64,
        memo: &mut Memo,
        counters: &mut Counters,
        out: &mut Vec<Row>,
    ) {
        self.take(false, path, offset, line, read_time, memo, counters, out)
    }

    /// [`extract`](Self::extract) for a whole JSON document (a `document`
    /// source's file): only `input = "document"` rules read it.
    #[allow(clippy::too_many_arguments)]
    pub fn extract_document(
        &self,
        path: &str,
        text: &str,
        read_time: f64,
        memo: &mut Memo,
        counters: &mut Counters,
        out: &mut Vec<Row>,
    ) {
        self.take(true, path, 0, text, read_time, memo, counters, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn take(
        &self,
        document: bool,
        path: &str,
        offset: u64,
        line: &str,
        read_time: f64,
        memo: &mut Memo,
        counters: &mut Counters,
        out: &mut Vec<Row>,
    ) {
        let text = prepare(line);
        let parsed = match parse_line(&text) {
            Ok(parsed) => parsed,
            Err(e) => {
                counters.invalid_json += 1;
                tracing::warn!(file = path, offset, error = %e, "skipping line: invalid JSON");
                return;
            }
        };
        let from = out.len();
        match self.run(&parsed, document, path, read_time, memo, counters, out) {
            Verdict::NoMatch | Verdict::Taken(_, Applied::NoMatch) => counters.unmatched += 1,
            Verdict::Taken(i, Applied::Rows(n)) => {
                let dropped = self.give_way(i, out, from);
                counters.duplicates += dropped as u64;
                counters.rows += (n - dropped) as u64;
            }
            // Nothing new, nothing wrong: a repeated configuration.
            Verdict::Taken(_, Applied::Repeated) => {}
            Verdict::Taken(i, Applied::Rejected(why)) => {
                counters.rejected += 1;
                let rule = &self.rules[i].name;
                tracing::warn!(file = path, offset, rule = %rule, "skipping record: {why}");
            }
        }
    }

    /// The time a line says it was written, as far as the rules can read
    /// one: the first rule's `wall_time` field or group that the line
    /// carries, else (text) a timestamp it starts with
    /// ([`time::leading_timestamp`], read as the first text rule reads
    /// times without a zone, local when there is none). `None`: the line
    /// carries no time (console lines then get one from the file, see
    /// [`console::line_times`]).
    pub fn line_time(&self, line: &str) -> Option<f64> {
        let text = prepare(line);
        let parsed = parse_line(&text).ok()?;
        if let Some(t) = self.rules.iter().find_map(|r| r.line_time(&parsed)) {
            return Some(t);
        }
        match parsed {
            Line::Text(s) => {
                let naive = self
                    .rules
                    .iter()
                    .find_map(Rule::text_naive_time)
                    .unwrap_or(crate::config::NaiveTime::Local);
                time::leading_timestamp(s, naive)
            }
            Line::Json(_) => None,
        }
    }

    /// Says what [`extract`](Self::extract) makes of a line, and if no
    /// row, why: the rule that took it and its reason, or the rule that
    /// came closest and what it missed. It takes the same path as
    /// `extract` and updates `memo` the same way, so a file explained line
    /// by line with one memo is explained as it is extracted.
    pub fn explain(&self, path: &str, line: &str, read_time: f64, memo: &mut Memo) -> Explanation {
        self.explain_as(false, path, line, read_time, memo)
    }

    /// [`explain`](Self::explain) for a whole JSON document.
    pub fn explain_document(
        &self,
        path: &str,
        text: &str,
        read_time: f64,
        memo: &mut Memo,
    ) -> Explanation {
        self.explain_as(true, path, text, read_time, memo)
    }

    fn explain_as(
        &self,
        document: bool,
        path: &str,
        line: &str,
        read_time: f64,
        memo: &mut Memo,
    ) -> Explanation {
        let text = prepare(line);
        let parsed = match parse_line(&text) {
            Ok(parsed) => parsed,
            Err(e) => {
                return Explanation {
                    rule: None,
                    outcome: Outcome::Invalid(format!("invalid JSON: {e}")),
                }
            }
        };
        let mut counters = Counters::default();
        let mut rows = Vec::new();
        let taken = |i: usize, outcome| Explanation {
            rule: Some(self.rules[i].name.clone()),
            outcome,
        };
        match self.run(
            &parsed,
            document,
            path,
            read_time,
            memo,
            &mut counters,
            &mut rows,
        ) {
            Verdict::Taken(i, Applied::Rows(_)) => taken(i, Outcome::Rows(rows)),
            Verdict::Taken(i, Applied::Repeated) => taken(i, Outcome::Repeated),
            Verdict::Taken(i, Applied::Rejected(why)) => taken(i, Outcome::Rejected(why)),
            Verdict::NoMatch | Verdict::Taken(_, Applied::NoMatch) => {
                let (closest, missed) = explain::closest(&self.rules, &parsed, document);
                Explanation {
                    rule: None,
                    outcome: Outcome::NoMatch { closest, missed },
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        line: &Line,
        document: bool,
        path: &str,
        read_time: f64,
        memo: &mut Memo,
        counters: &mut Counters,
        out: &mut Vec<Row>,
    ) -> Verdict {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.reads(line, document) {
                continue;
            }
            match rule.apply(line, path, read_time, memo, counters, out) {
                Applied::NoMatch => continue,
                applied => return Verdict::Taken(i, applied),
            }
        }
        Verdict::NoMatch
    }
}

/// The text a line is parsed from: a line that starts like a JSON
/// object with Python's `NaN`/`Infinity` tokens rewritten (see
/// [`pyjson`]), any other line as it is. The parsed [`Line`] borrows from
/// it.
fn prepare(line: &str) -> Cow<'_, str> {
    if line.trim_start().starts_with('{') {
        pyjson::rewrite_non_finite(line)
    } else {
        Cow::Borrowed(line)
    }
}

/// A line that starts like a JSON object is JSON (or broken JSON: a torn
/// write); any other line is text. `line` comes from [`prepare`].
fn parse_line(line: &str) -> Result<Line<'_>, serde_json::Error> {
    let trimmed = line.trim_start();
    if !trimmed.starts_with('{') {
        return Ok(Line::Text(line));
    }
    match json::parse(trimmed)? {
        json::Json::Object(obj) => Ok(Line::Json(obj)),
        // Unreachable (`{` opens an object or nothing valid); text is the
        // harmless answer.
        _ => Ok(Line::Text(line)),
    }
}

#[cfg(test)]
mod tests;
