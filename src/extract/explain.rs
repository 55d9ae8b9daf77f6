//! Why a line made no row, in words a user can act on.

use std::fmt;

use super::rule::{Line, Rule};
use crate::row::{Row, RunEvent};

/// What the extractor makes of one line, for `mosaic-shipper explain` and
/// the "file yields lines but no rows" warning.
#[derive(Debug, PartialEq)]
pub struct Explanation {
    /// The rule that took the line (none: no rule did, or broken JSON).
    pub rule: Option<String>,
    pub outcome: Outcome,
}

/// The outcome of one line.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The rows it makes.
    Rows(Vec<Row>),
    /// Taken, but all it carries was already emitted: a configuration
    /// repeated in every record becomes one row.
    Repeated,
    /// No rule takes it: the rule that came closest (fewest missed
    /// conditions) and what it missed.
    NoMatch {
        closest: Option<String>,
        missed: Vec<String>,
    },
    /// A rule took it but it lacks what a row needs.
    Rejected(String),
    /// It starts like JSON but does not parse.
    Invalid(String),
    /// Taken, but its run's worker writes the same points to its own
    /// TensorBoard event files, which are read instead.
    GaveWay,
    /// A record that is not for rules and makes no row: an event-file
    /// record that holds no scalar, a damaged frame, a skipped line; what
    /// it is, in words.
    Skipped(String),
}

/// The rule nearest to taking `line` and what it missed.
pub(super) fn closest(
    rules: &[Rule],
    line: &Line,
    document: bool,
) -> (Option<String>, Vec<String>) {
    // The most conditions met, then the most of its fields present (with
    // other values), then the fewest missed; the first on a tie.
    type Score = (usize, usize, std::cmp::Reverse<usize>);
    let mut best: Option<(&Rule, Score, Vec<String>)> = None;
    for rule in rules.iter().filter(|r| r.reads(line, document)) {
        let missed = rule.misses(line);
        let met = rule.conditions().saturating_sub(missed.len());
        let score = (
            met,
            rule.fields_present(line),
            std::cmp::Reverse(missed.len()),
        );
        if best.as_ref().map_or(true, |(_, b, _)| score > *b) {
            best = Some((rule, score, missed));
        }
    }
    match best {
        Some((rule, _, missed)) => (Some(rule.name.clone()), missed),
        None => {
            let why = match line {
                Line::Json(_) => "the line is a JSON object and no rule reads JSON",
                Line::Text(_) => {
                    "the line is not a JSON object and no rule reads text (input = \"text\")"
                }
            };
            (None, vec![why.to_string()])
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = |f: &mut fmt::Formatter<'_>| match &self.rule {
            Some(rule) => write!(f, " (rule {rule:?})"),
            None => Ok(()),
        };
        match &self.outcome {
            Outcome::Rows(rows) => {
                write!(f, "{} row(s)", rows.len())?;
                by(f)?;
                for row in rows {
                    write!(f, "\n  {}", RowText(row))?;
                }
                Ok(())
            }
            Outcome::Repeated => {
                write!(f, "no new row")?;
                by(f)?;
                write!(f, ": the configuration was already emitted for this run")
            }
            Outcome::GaveWay => {
                write!(f, "no row")?;
                by(f)?;
                write!(f, ": the run's worker writes these points to its own TensorBoard event files, which are read instead")
            }
            Outcome::NoMatch { closest, missed } => {
                write!(f, "no rule takes the line (an ordinary log line)")?;
                if let Some(c) = closest {
                    write!(f, "; closest rule {c:?} missed:")?;
                } else {
                    write!(f, ":")?;
                }
                for m in missed {
                    write!(f, "\n  - {m}")?;
                }
                Ok(())
            }
            Outcome::Rejected(why) => {
                write!(f, "rejected")?;
                by(f)?;
                write!(f, ": {why}")
            }
            Outcome::Invalid(why) => write!(f, "{why}"),
            Outcome::Skipped(why) => write!(f, "no row: {why}"),
        }
    }
}

struct RowText<'a>(&'a Row);

impl fmt::Display for RowText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(
            f,
            "run {} step {} wall_time {}",
            r.run_id, r.step, r.wall_time
        )?;
        match &r.event {
            Some(RunEvent::Config(text)) => write!(f, " config {text}"),
            Some(RunEvent::Finished(code)) => write!(f, " finished, exit code {code}"),
            Some(RunEvent::Console { stderr, line }) => {
                let stream = if *stderr { "stderr" } else { "stdout" };
                write!(f, " console {stream} {line:?}")
            }
            Some(RunEvent::Machine(text)) => write!(f, " machine {text}"),
            Some(RunEvent::System) | None => {
                for (tag, v) in &r.values {
                    write!(f, " {tag}={v}")?;
                }
                Ok(())
            }
        }
    }
}
