//! The "file yields lines but no rows" warning.
//!
//! A worker whose lines no rule reads ships nothing, and nothing fails:
//! the lines are ordinary log lines as far as the agent can tell. The one
//! way to tell the user is to notice that a followed file has yielded
//! lines (records) but never a row, and say so once, naming the file, its
//! source, how many lines, and the rule that came closest with what it
//! missed, as `mosaic-shipper explain` would say it.
//!
//! When a file counts as silent (thresholds, per file, in this process):
//! - it has never made a row (nor a point dropped as a duplicate of
//!   another source's), neither in this process nor according to its
//!   checkpoint's counters, and it is not ignored (the agent's own event
//!   files);
//! - and it was first followed at least [`MIN_AGE`] (30 s) ago, so a
//!   worker's start-up lines are not taken for a format problem;
//! - and either it has yielded at least [`MIN_RECORDS`] (100) records, or
//!   every file is read to its end and it was first followed at least
//!   [`SHORT_FILE_AGE`] (5 min) ago (a short file: a few start-up lines of
//!   a worker whose first metric is slow to come do not warn at once);
//! - or the agent is reading everything to its end and stopping (`run
//!   --once`, init mode after CMD exits): then every file that yielded a
//!   record and no row is named, whatever its age.
//!
//! One warning per file per process: a file warned about is not watched
//! again until a restart. When other files of the same run (by the run id
//! in the path) have made rows, the dashboard is not empty and the file
//! most likely holds no metrics at all (XuanCe's and RLlib's text logs:
//! their metrics are in event files): the same message is then logged at
//! info level, not as a warning. The bookkeeping is per batch, not per record: a
//! file that makes rows is dropped at its first batch with rows; a silent
//! one keeps its counters and explanations of its last few lines
//! ([`SAMPLES`], each line cut to [`SAMPLE_BYTES`] for display) or, for an
//! event file, a tally of what its records held.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use super::events::Readers;
use super::{Explanation, Extractor, Outcome};
use crate::config::SourceKind;
use crate::journal::FileState;
use crate::source::tfevents::{self, Plugins};
use crate::source::Batch;
use crate::stats::Counters;

/// Records a file must have yielded without a row to be warned about
/// before it is read to its end.
pub const MIN_RECORDS: u64 = 100;
/// How long a file must have been followed before it is warned about.
pub const MIN_AGE: Duration = Duration::from_secs(30);
/// How long a file with fewer than [`MIN_RECORDS`] records, read to its
/// end, must have been followed without a row before it is warned about.
pub const SHORT_FILE_AGE: Duration = Duration::from_secs(300);
/// Lines kept (explained) per silent file: the most recent ones.
pub const SAMPLES: usize = 3;
/// Bytes of a sampled line shown in the warning.
pub const SAMPLE_BYTES: usize = 300;
/// Kinds of event-file content tallied per file (more go under "other").
const MAX_KINDS: usize = 8;
/// Example tags kept per event file.
const MAX_TAGS: usize = 4;

/// Per-file bookkeeping of the ingest loop for the warning (see the
/// module documentation).
#[derive(Default)]
pub struct Silence {
    files: HashMap<u64, Watch>,
    /// Files still silent and not yet warned about: `idle` has nothing to
    /// look at when this is 0.
    waiting: usize,
    /// Runs (by the run id in their files' paths) some file of which made
    /// rows.
    productive: HashSet<String>,
}

enum Watch {
    Silent(Box<Quiet>),
    /// Made a row, is ignored, or was warned about.
    Done,
}

/// What is known of a file that has made no row yet.
struct Quiet {
    path: String,
    /// The run id in the path, if any.
    run: Option<String>,
    source: String,
    kind: SourceKind,
    since: Instant,
    /// What this process read of the file.
    counters: Counters,
    /// The latest lines that made no row, explained when read.
    samples: VecDeque<Sample>,
    /// Event files: what their records held, by kind, and a few tags.
    held: BTreeMap<String, u64>,
    tags: Vec<String>,
    /// Event files: which plugin owns each tag (as the reader keeps it).
    plugins: Plugins,
}

struct Sample {
    offset: u64,
    text: String,
    explanation: Explanation,
}

/// One warning: a file that yielded records but no rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Warning {
    pub file: String,
    pub source: String,
    pub kind: SourceKind,
    /// Records (lines) read from it by this process.
    pub lines: u64,
    /// The rule that came closest (lines and documents).
    pub closest: Option<String>,
    /// Why no row: what the closest rule missed, or what the records held.
    pub why: String,
    /// The latest line that made no row, cut to [`SAMPLE_BYTES`], and its
    /// offset.
    pub sample: Option<(u64, String)>,
    /// The file's run, when other files of it made rows (then this is
    /// logged at info level: the run's metrics arrive by another path).
    pub run_with_rows: Option<String>,
}

impl Silence {
    /// Notes a committed batch, and logs the warning if it makes the file
    /// one to warn about.
    pub fn observe(&mut self, batch: &Batch, extractor: &Extractor, readers: &Readers) {
        let records: Vec<(u64, &[u8])> = match self.files.get(&batch.state.id) {
            // The hot path: a file that makes rows costs one lookup.
            Some(Watch::Done) if !batch.forget => return,
            _ => batch
                .records
                .iter()
                .map(|r| (r.offset, batch.bytes(r)))
                .collect(),
        };
        let found = self.note(
            &batch.state,
            &batch.delta,
            batch.forget,
            &records,
            extractor,
            readers,
            Instant::now(),
        );
        if let Some(w) = found {
            w.log();
        }
    }

    /// Every file is read to its current end: logs the warnings that are
    /// due (all of them when `to_end`, the agent stopping after reading
    /// everything).
    pub fn idle(&mut self, to_end: bool) {
        for w in self.due(Instant::now(), to_end) {
            w.log();
        }
    }

    /// [`observe`](Self::observe) without the logging, at `now`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn note(
        &mut self,
        state: &FileState,
        delta: &Counters,
        forget: bool,
        records: &[(u64, &[u8])],
        extractor: &Extractor,
        readers: &Readers,
        now: Instant,
    ) -> Option<Warning> {
        let productive = &mut self.productive;
        let watch = self.files.entry(state.id).or_insert_with(|| {
            let made_rows = state.counters.rows > 0 || state.counters.duplicates > 0;
            if made_rows {
                productive.extend(readers.run_of(state));
            }
            if made_rows || state.ignored.is_some() {
                Watch::Done
            } else {
                self.waiting += 1;
                Watch::Silent(Box::new(Quiet::new(state, readers.run_of(state), now)))
            }
        });
        let quiet = match watch {
            Watch::Silent(q) => q,
            Watch::Done => {
                if forget {
                    self.files.remove(&state.id);
                }
                return None;
            }
        };
        if delta.rows > 0 || delta.duplicates > 0 || state.ignored.is_some() {
            if state.ignored.is_none() {
                productive.extend(quiet.run.take());
            }
            *watch = Watch::Done;
            self.waiting -= 1;
            if forget {
                self.files.remove(&state.id);
            }
            return None;
        }
        quiet.path.clone_from(&state.path);
        quiet.counters.add(delta);
        match state.kind {
            SourceKind::Lines | SourceKind::Document => {
                let document = state.kind == SourceKind::Document;
                let start = records.len().saturating_sub(SAMPLES);
                for &(offset, bytes) in &records[start..] {
                    quiet.sample(extractor, state, document, offset, bytes);
                }
            }
            SourceKind::Tfevents => {
                let has_run_id = readers.get(&state.source).run_of(&state.path).is_some();
                for &(_, payload) in records {
                    quiet.tally(payload, has_run_id);
                }
            }
        }
        // A file that is gone was read to its end.
        let due = quiet.due(now, forget, false);
        let warning = due.then(|| quiet.warning(productive));
        if warning.is_some() || forget {
            self.waiting -= 1;
            *watch = Watch::Done;
        }
        if forget {
            self.files.remove(&state.id);
        }
        warning
    }

    /// The warnings due now that every file is read to its end.
    pub(crate) fn due(&mut self, now: Instant, to_end: bool) -> Vec<Warning> {
        if self.waiting == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for watch in self.files.values_mut() {
            let Watch::Silent(quiet) = watch else {
                continue;
            };
            if quiet.due(now, true, to_end) {
                out.push(quiet.warning(&self.productive));
                *watch = Watch::Done;
                self.waiting -= 1;
            }
        }
        out.sort_by(|a, b| a.file.cmp(&b.file));
        out
    }
}

impl Quiet {
    fn new(state: &FileState, run: Option<String>, now: Instant) -> Quiet {
        Quiet {
            path: state.path.clone(),
            run,
            source: state.source.clone(),
            kind: state.kind,
            since: now,
            counters: Counters::default(),
            samples: VecDeque::with_capacity(SAMPLES),
            held: BTreeMap::new(),
            tags: Vec::new(),
            plugins: Plugins::default(),
        }
    }

    /// Whether to warn now: see the module documentation. `at_end`: the
    /// file is read to its end; `to_end`: the agent is stopping so.
    fn due(&self, now: Instant, at_end: bool, to_end: bool) -> bool {
        let lines = self.counters.lines;
        let age = now.saturating_duration_since(self.since);
        lines > 0
            && (to_end
                || (age >= MIN_AGE && lines >= MIN_RECORDS)
                || (at_end && age >= SHORT_FILE_AGE))
    }

    /// Explains one line (or document) that made no row, keeping the
    /// latest [`SAMPLES`]. The explanation takes the same path as the
    /// extraction did, from the file's memo as it is now.
    fn sample(
        &mut self,
        extractor: &Extractor,
        state: &FileState,
        document: bool,
        offset: u64,
        bytes: &[u8],
    ) {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return; // framing only hands out valid UTF-8
        };
        let mut memo = state.memo.clone();
        let now = crate::util::now_secs();
        let explanation = if document {
            extractor.explain_document(&state.path, text, now, &mut memo)
        } else {
            extractor.explain(&state.path, text, now, &mut memo)
        };
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            offset,
            text: cut(text, SAMPLE_BYTES),
            explanation,
        });
    }

    /// Counts what one event record held, as the reader decides it.
    fn tally(&mut self, payload: &[u8], has_run_id: bool) {
        let mut kinds: Vec<(String, Option<String>)> = Vec::new();
        match tfevents::decode(payload) {
            Err(_) => kinds.push(("undecodable record".into(), None)),
            Ok(d) => {
                let (scalars, _) = self.plugins.scalars(&d);
                if !scalars.is_empty() {
                    let why = if has_run_id {
                        "scalars"
                    } else {
                        "scalars in a file whose path has no run id"
                    };
                    kinds.push((why.into(), scalars.first().map(|(t, _)| t.to_string())));
                } else {
                    for h in tfevents::held(&d, &self.plugins) {
                        let tag = h.tag.filter(|_| h.what != "header");
                        kinds.push((h.what, tag));
                    }
                }
            }
        }
        for (what, tag) in kinds {
            let key = if self.held.len() < MAX_KINDS || self.held.contains_key(&what) {
                what
            } else {
                "other".to_string()
            };
            *self.held.entry(key).or_default() += 1;
            if let Some(tag) = tag {
                if self.tags.len() < MAX_TAGS && !self.tags.contains(&tag) {
                    self.tags.push(tag);
                }
            }
        }
    }

    fn warning(&self, productive: &HashSet<String>) -> Warning {
        let c = &self.counters;
        let latest = self.samples.back();
        let (closest, why) = match (self.kind, latest) {
            (SourceKind::Tfevents, _) => (None, self.held_text()),
            (_, Some(s)) => reason(&s.explanation),
            (_, None) => (
                None,
                format!(
                    "every line was skipped ({} longer than tail.max_line_bytes, {} invalid \
                     UTF-8)",
                    c.oversized, c.invalid_utf8
                ),
            ),
        };
        Warning {
            file: self.path.clone(),
            source: self.source.clone(),
            kind: self.kind,
            lines: c.lines,
            closest,
            why,
            sample: latest.map(|s| (s.offset, s.text.clone())),
            run_with_rows: self.run.clone().filter(|r| productive.contains(r)),
        }
    }

    fn held_text(&self) -> String {
        if self.held.is_empty() {
            return "every record was damaged".into();
        }
        let parts: Vec<String> = self
            .held
            .iter()
            .map(|(what, n)| format!("{what} x{n}"))
            .collect();
        let mut s = format!("no scalar in them; they held: {}", parts.join(", "));
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|t| format!("{t:?}")).collect();
            s.push_str(&format!(" (tags {})", tags.join(", ")));
        }
        s
    }
}

/// The rule and the reason of an explanation of a line that made no row.
fn reason(e: &Explanation) -> (Option<String>, String) {
    match &e.outcome {
        Outcome::NoMatch { closest, missed } => (
            closest.clone(),
            match closest {
                Some(rule) => format!("closest rule {rule:?} missed: {}", missed.join("; ")),
                None => missed.join("; "),
            },
        ),
        Outcome::Rejected(why) => (
            e.rule.clone(),
            format!(
                "rule {:?} takes the lines but rejects them: {why}",
                e.rule.as_deref().unwrap_or("?")
            ),
        ),
        Outcome::Repeated => (
            e.rule.clone(),
            "only configurations already emitted for the run".into(),
        ),
        // Not silent (counted as duplicates), but said right if asked.
        Outcome::GaveWay => (
            e.rule.clone(),
            "its points are read from the run's own TensorBoard event files instead".into(),
        ),
        Outcome::Invalid(why) | Outcome::Skipped(why) => (None, why.clone()),
        Outcome::Rows(_) => (e.rule.clone(), "the line makes rows now".into()),
    }
}

/// At most `max` bytes of `text` (on a character boundary), marked when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}

impl Warning {
    fn log(&self) {
        let rule = self.closest.as_deref().unwrap_or("");
        if self.run_with_rows.is_some() {
            tracing::info!(file = %self.file, source = %self.source, kind = self.kind.as_str(), lines = self.lines, rule, "{self}");
        } else {
            tracing::warn!(file = %self.file, source = %self.source, kind = self.kind.as_str(), lines = self.lines, rule, "{self}");
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, one) = match self.kind {
            SourceKind::Lines => ("lines", "line"),
            SourceKind::Tfevents | SourceKind::Document => ("records", "record"),
        };
        write!(
            f,
            "{} {what} but no rows from {} (source {:?}, kind {}): {}",
            self.lines,
            self.file,
            self.source,
            self.kind.as_str(),
            self.why
        )?;
        if let Some((offset, text)) = &self.sample {
            write!(f, "; latest such {one} (byte {offset}): {text:?}")?;
        }
        if let Some(run) = &self.run_with_rows {
            write!(
                f,
                ". Other files of run {run} made rows: this one may hold no metrics"
            )?;
        }
        write!(
            f,
            ". `mosaic-shipper explain {}` shows what each {one} makes; a file that holds no \
             metrics can be left out with the source's `exclude`",
            self.file
        )
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::config::{Config, EMBEDDED_DEFAULT};
    use crate::format::tensorboard_proto::{
        event, summary_value, Event, Skipped, Summary, SummaryValue,
    };

    struct Setup {
        extractor: Extractor,
        readers: Readers,
        silence: Silence,
        t0: Instant,
    }

    fn setup() -> Setup {
        let config = Config::parse(EMBEDDED_DEFAULT, "t").unwrap();
        Setup {
            extractor: Extractor::new(&config.extract).unwrap(),
            readers: Readers::new(&config.sources()).unwrap(),
            silence: Silence::default(),
            t0: Instant::now(),
        }
    }

    fn state(id: u64, path: &str, kind: SourceKind) -> FileState {
        FileState {
            id,
            path: path.into(),
            source: "src".into(),
            kind,
            ..FileState::default()
        }
    }

    const RUN: &str = "var/trainer/runs/01R/logs/worker.log";
    /// An RLlib-like result without `time_this_iter_s`: only the
    /// rllib-result rule comes close.
    const NEAR_RLLIB: &str = r#"{"training_iteration": 3, "episode_reward_mean": 1.5}"#;

    impl Setup {
        /// Notes a batch of `lines` (all the same) for the file `st`.
        fn lines(&mut self, st: &FileState, line: &str, n: u64, at: u64) -> Option<Warning> {
            let offsets: Vec<u64> = (0..n).map(|i| i * (line.len() as u64 + 1)).collect();
            let records: Vec<(u64, &[u8])> =
                offsets.iter().map(|&o| (o, line.as_bytes())).collect();
            let delta = Counters {
                lines: n,
                unmatched: n,
                ..Counters::default()
            };
            self.at(st, &delta, false, &records, at)
        }

        fn at(
            &mut self,
            st: &FileState,
            delta: &Counters,
            forget: bool,
            records: &[(u64, &[u8])],
            secs: u64,
        ) -> Option<Warning> {
            let now = self.t0 + Duration::from_secs(secs);
            self.silence.note(
                st,
                delta,
                forget,
                records,
                &self.extractor,
                &self.readers,
                now,
            )
        }

        fn due(&mut self, secs: u64, to_end: bool) -> Vec<Warning> {
            self.silence
                .due(self.t0 + Duration::from_secs(secs), to_end)
        }
    }

    #[test]
    fn one_warning_per_file_with_the_closest_rule() {
        let mut s = setup();
        let st = state(1, RUN, SourceKind::Lines);
        // 150 lines at once: too early to tell (a worker starting up).
        assert_eq!(s.lines(&st, NEAR_RLLIB, 150, 0), None);
        assert_eq!(s.due(10, false), []);
        // Past MIN_AGE with more than MIN_RECORDS lines: one warning.
        let w = s.lines(&st, NEAR_RLLIB, 50, 31).expect("a warning");
        assert_eq!(w.lines, 200);
        assert_eq!(w.closest.as_deref(), Some("rllib-result"));
        assert!(w.why.contains("time_this_iter_s present"), "{w}");
        let (offset, text) = w.sample.clone().unwrap();
        assert_eq!((offset, text.as_str()), (49 * 54, NEAR_RLLIB));
        let text = w.to_string();
        for part in [
            RUN,
            "200 lines but no rows",
            "\"src\"",
            "closest rule \"rllib-result\"",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        // Never again in this process, however long it stays silent.
        assert_eq!(s.lines(&st, NEAR_RLLIB, 500, 100), None);
        assert_eq!(s.due(1000, true), []);
        assert_eq!(s.silence.waiting, 0);
    }

    #[test]
    fn the_warning_comes_when_idle_too_and_names_the_latest_line() {
        let mut s = setup();
        let st = state(1, RUN, SourceKind::Lines);
        assert_eq!(s.lines(&st, NEAR_RLLIB, 120, 0), None);
        s.lines(&st, "Loaded 3 envs", 1, 5);
        let w = s.due(30, false).pop().expect("due at MIN_AGE");
        assert_eq!(w.closest.as_deref(), Some("cleanrl-text"));
        assert!(w.why.contains("no metric key"), "{w}");
        assert_eq!(w.sample.unwrap().1, "Loaded 3 envs");
    }

    #[test]
    fn a_short_file_waits_longer_unless_everything_is_read_to_the_end() {
        let mut s = setup();
        let a = state(1, RUN, SourceKind::Lines);
        let b = state(2, "var/trainer/runs/01R/logs/other.log", SourceKind::Lines);
        assert_eq!(s.lines(&a, "starting", 3, 0), None);
        assert_eq!(s.lines(&b, "starting", 3, 0), None);
        assert_eq!(s.due(60, false), []);
        let w = s.due(301, false);
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!((w[1].file.as_str(), w[1].lines), (RUN, 3));
        // `run --once`: at the end, at once.
        let mut s = setup();
        assert_eq!(s.lines(&a, "starting", 3, 0), None);
        let w = s.due(1, true);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].why.contains("closest rule \"cleanrl-text\""),
            "{}",
            w[0]
        );
    }

    #[test]
    fn files_that_make_rows_or_are_ignored_never_warn() {
        let mut s = setup();
        let a = state(1, RUN, SourceKind::Lines);
        assert_eq!(s.lines(&a, NEAR_RLLIB, 10, 0), None);
        let rows = Counters {
            lines: 1,
            rows: 1,
            ..Counters::default()
        };
        assert_eq!(s.at(&a, &rows, false, &[], 1), None);
        assert_eq!(s.lines(&a, NEAR_RLLIB, 500, 100), None);
        // Rows in an earlier process (the checkpoint's counters).
        let mut b = state(2, RUN, SourceKind::Lines);
        b.counters.rows = 7;
        assert_eq!(s.lines(&b, NEAR_RLLIB, 500, 100), None);
        // Points dropped as duplicates of another source are rows elsewhere.
        let c = state(3, RUN, SourceKind::Lines);
        let dup = Counters {
            lines: 1,
            duplicates: 1,
            ..Counters::default()
        };
        assert_eq!(s.at(&c, &dup, false, &[], 1), None);
        assert_eq!(s.lines(&c, NEAR_RLLIB, 500, 100), None);
        // The agent's own event files.
        let mut d = state(
            4,
            "var/trainer/runs/01R/tensorboard/e",
            SourceKind::Tfevents,
        );
        d.ignored = Some("written by mosaic-shipper".into());
        assert_eq!(s.at(&d, &rows, false, &[], 100), None);
        assert_eq!(s.due(1000, true), []);
    }

    #[test]
    fn a_silent_file_beside_files_of_its_run_that_make_rows_is_only_noted() {
        let mut s = setup();
        let quiet = state(1, RUN, SourceKind::Lines);
        let other_run = state(2, "var/trainer/runs/02R/logs/worker.log", SourceKind::Lines);
        let mut events = state(
            3,
            "var/trainer/runs/01R/tensorboard/events.out.tfevents.1.h",
            SourceKind::Tfevents,
        );
        assert_eq!(s.lines(&quiet, "starting", 3, 0), None);
        assert_eq!(s.lines(&other_run, "starting", 3, 0), None);
        // Rows from the run's event file, in an earlier process.
        events.counters.rows = 40;
        let none = Counters::default();
        assert_eq!(s.at(&events, &none, false, &[], 0), None);
        let w = s.due(1, true);
        assert_eq!(w.len(), 2);
        // Sorted by path: 01R's first.
        assert_eq!(w[0].file, RUN);
        assert_eq!(w[0].run_with_rows.as_deref(), Some("01R"));
        assert!(
            w[0].to_string()
                .contains("Other files of run 01R made rows: this one may hold no metrics"),
            "{}",
            w[0]
        );
        assert_eq!(w[1].run_with_rows, None, "{}", w[1]);
    }

    #[test]
    fn a_file_gone_after_its_last_lines_is_judged_then() {
        let mut s = setup();
        let a = state(1, RUN, SourceKind::Lines);
        assert_eq!(s.lines(&a, NEAR_RLLIB, 5, 0), None);
        let none = Counters::default();
        let w = s.at(&a, &none, true, &[], 400).expect("gone and silent");
        assert_eq!(w.lines, 5);
        assert!(s.silence.files.is_empty());
        assert_eq!(s.silence.waiting, 0);
    }

    fn record(e: Event) -> Vec<u8> {
        e.encode_to_vec()
    }

    #[test]
    fn an_event_file_without_scalars_says_what_it_held() {
        let mut s = setup();
        let st = state(
            1,
            "var/trainer/runs/01R/tensorboard/events.out.tfevents.1.h",
            SourceKind::Tfevents,
        );
        let header = record(Event {
            wall_time: 1.0,
            step: 0,
            what: Some(event::What::FileVersion("brain.Event:2".into())),
            source_metadata: None,
        });
        let histo = |tag: &str| {
            record(Event {
                wall_time: 2.0,
                step: 3,
                what: Some(event::What::Summary(Summary {
                    value: vec![SummaryValue {
                        tag: tag.into(),
                        value: Some(summary_value::Value::Histo(Skipped {})),
                        metadata: None,
                    }],
                })),
                source_metadata: None,
            })
        };
        let (h1, h2) = (histo("weights"), histo("bias"));
        let records: Vec<(u64, &[u8])> = vec![(0, &header), (30, &h1), (60, &h2), (90, &h1)];
        let delta = Counters {
            lines: 4,
            unmatched: 4,
            ..Counters::default()
        };
        assert_eq!(s.at(&st, &delta, false, &records, 0), None);
        let w = s.due(1, true).pop().unwrap();
        assert_eq!((w.lines, w.closest.as_deref()), (4, None));
        assert!(
            w.why.contains("header x1, histogram x3") && w.why.contains("\"weights\", \"bias\""),
            "{w}"
        );
        assert!(w.to_string().contains("4 records but no rows"), "{w}");
    }

    #[test]
    fn long_lines_are_cut_on_a_character_boundary() {
        let long = "é".repeat(400);
        let c = cut(&long, SAMPLE_BYTES);
        assert!(
            c.starts_with(&"é".repeat(150)) && c.ends_with("... (800 bytes)"),
            "{c}"
        );
        assert_eq!(cut("short", 10), "short");
    }
}
