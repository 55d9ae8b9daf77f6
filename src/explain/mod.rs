//! `mosaic-shipper explain FILE`: what the agent makes of a file, record by
//! record. The first thing to run when a dashboard stays empty.
//!
//! It says which source of the configuration lists the path (or that none
//! does, naming the patterns), then reads the file's first records the way
//! the agent reads them, with the same code: the framing of the source's
//! kind ([`crate::source::framing`]), the extractor's
//! [`explain`](crate::extract::Extractor::explain) with a fresh memo, and
//! the event-file reader ([`Readers::explain`]). It needs no store and
//! leaves the file alone, so it works while the agent runs.
//!
//! [`render`] turns the [`Report`] into text for people or JSON lines for
//! tools.

pub mod render;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use crate::config::{Config, SourceKind};
use crate::extract::events::Readers;
use crate::extract::{Explanation, Extractor, Memo, Outcome};
use crate::journal::FileState;
use crate::source::follow::Sources;
use crate::source::framing::{self, Skip};
use crate::stats::Counters;

/// Records shown when `--lines` is not given.
pub const DEFAULT_RECORDS: usize = 20;

/// What `explain` found.
#[derive(Debug)]
pub struct Report {
    /// The path as the sources matched it (else as given).
    pub file: String,
    /// The source that lists the file, if any.
    pub source: Option<Matched>,
    /// Every source pattern, by source name, when none matched.
    pub patterns: Vec<(String, String)>,
    /// How the file was read: its source's kind, or a guess from its name
    /// when no source lists it.
    pub kind: SourceKind,
    pub records: Vec<Entry>,
    /// The file holds more records than were asked for.
    pub more: bool,
    /// What the agent would wait for at the end of what was shown: an
    /// unterminated last line, a record cut short.
    pub waiting: Option<String>,
}

/// The source that lists a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub name: String,
    pub pattern: String,
}

/// One record (line, event record, document) and what became of it.
#[derive(Debug)]
pub struct Entry {
    /// Byte offset where it starts.
    pub offset: u64,
    /// Its text, for lines and documents.
    pub text: Option<String>,
    pub explanation: Explanation,
}

/// Why `explain` could not read the file: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{0} is a directory, not a file: explain takes one file (a log, an event file, a document)"
    )]
    Directory(String),
    #[error("the configuration's rules do not compile: {0}")]
    Rules(String),
}

impl Report {
    /// Rows made by the records shown.
    pub fn rows(&self) -> usize {
        self.records
            .iter()
            .map(|e| match &e.explanation.outcome {
                Outcome::Rows(r) => r.len(),
                _ => 0,
            })
            .sum()
    }
}

/// Explains the first `limit` records of `file` under `config`.
pub fn explain(config: &Config, file: &Path, limit: usize) -> Result<Report, ExplainError> {
    let given = file.display().to_string();
    let read_err = |source| ExplainError::Read {
        path: given.clone(),
        source,
    };
    let meta = std::fs::metadata(file).map_err(read_err)?;
    if meta.is_dir() {
        return Err(ExplainError::Directory(given));
    }
    let handle = File::open(file).map_err(read_err)?;
    let sources_config = config.sources();
    let sources = Sources::new(&sources_config, config.tail.follow_rotated);
    let matched = candidates(file).into_iter().find_map(|p| {
        let (i, pattern) = sources.source_of(&p)?;
        Some((p, i, pattern.to_string()))
    });
    let (path, source, kind) = match &matched {
        Some((p, i, pattern)) => {
            let s = sources.get(*i);
            (
                p.display().to_string(),
                Some(Matched {
                    name: s.name.clone(),
                    pattern: pattern.clone(),
                }),
                s.kind,
            )
        }
        None => (given.clone(), None, guess_kind(file)),
    };
    let patterns = match source {
        Some(_) => Vec::new(),
        None => sources
            .patterns()
            .map(|(s, p)| (s.to_string(), p.to_string()))
            .collect(),
    };
    let mut report = Report {
        file: path.clone(),
        source,
        patterns,
        kind,
        records: Vec::new(),
        more: false,
        waiting: None,
    };
    let extractor = Extractor::new(&config.extract).map_err(ExplainError::Rules)?;
    let reading = Reading {
        file: &handle,
        len: meta.len(),
        path: &path,
        max_line: config.tail.max_line_bytes,
        window: config.tail.read_batch_bytes,
        limit,
    };
    let source_name = report.source.as_ref().map(|s| s.name.clone());
    match kind {
        SourceKind::Lines => reading.lines(&extractor, &mut report),
        SourceKind::Document => reading.document(&extractor, &mut report),
        SourceKind::Tfevents => {
            let readers = Readers::new(&sources_config).map_err(ExplainError::Rules)?;
            reading.events(readers, source_name.unwrap_or_default(), &mut report)
        }
    }
    .map_err(read_err)?;
    Ok(report)
}

/// The forms of `file` a pattern may name it by: as given, without `.`
/// components, absolute, and relative to the current directory.
fn candidates(file: &Path) -> Vec<PathBuf> {
    let clean = |p: &Path| -> PathBuf {
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::CurDir => {}
                Component::ParentDir if out.file_name().is_some() => {
                    out.pop();
                }
                c => out.push(c),
            }
        }
        out
    };
    let mut out = vec![file.to_path_buf(), clean(file)];
    if let Ok(cwd) = std::env::current_dir() {
        let abs = clean(&cwd.join(file));
        if let Ok(rel) = abs.strip_prefix(&cwd) {
            out.push(rel.to_path_buf());
        }
        out.push(abs);
    }
    if let Ok(real) = std::fs::canonicalize(file) {
        out.push(real);
    }
    out.dedup();
    out
}

/// How to read a file no source lists: by its name, as the default
/// sources would.
fn guess_kind(file: &Path) -> SourceKind {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if name.starts_with("events.out.tfevents.") {
        SourceKind::Tfevents
    } else {
        SourceKind::Lines
    }
}

/// The file being read and the limits the agent reads it with.
struct Reading<'a> {
    file: &'a File,
    len: u64,
    path: &'a str,
    max_line: usize,
    window: usize,
    limit: usize,
}

/// A framed record or a skipped one, in file order.
enum Item<'b> {
    Record(u64, &'b [u8]),
    Skipped(Skip),
}

impl Reading<'_> {
    fn read(&self, offset: u64, want: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; want.min(self.len.saturating_sub(offset)) as usize];
        let mut got = 0;
        while got < buf.len() {
            let n = self.file.read_at(&mut buf[got..], offset + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// Records and skips of one cut, in file order.
    fn items<'b>(buf: &'b [u8], cut: &framing::Cut) -> Vec<Item<'b>> {
        let mut items: Vec<Item> = cut
            .records
            .iter()
            .map(|r| Item::Record(r.offset, &buf[r.start..r.end]))
            .chain(cut.skipped.iter().cloned().map(Item::Skipped))
            .collect();
        items.sort_by_key(|i| match i {
            Item::Record(o, _) => *o,
            Item::Skipped(s) => s.offset,
        });
        items
    }

    /// Adds an entry; false (and `more` set) when the limit is reached.
    fn push(&self, report: &mut Report, entry: Entry) -> bool {
        if report.records.len() >= self.limit {
            report.more = true;
            return false;
        }
        report.records.push(entry);
        true
    }

    fn skipped(skip: Skip) -> Entry {
        Entry {
            offset: skip.offset,
            text: None,
            explanation: Explanation {
                rule: None,
                outcome: Outcome::Skipped(skip.why),
            },
        }
    }

    fn lines(&self, extractor: &Extractor, report: &mut Report) -> io::Result<()> {
        let window = self.window.max(self.max_line + 2) as u64;
        let read_time = crate::util::now_secs();
        let mut memo = Memo::default();
        let mut offset = 0;
        while offset < self.len {
            let buf = self.read(offset, window)?;
            let cut = framing::lines(&buf, offset, self.max_line, self.path);
            for item in Self::items(&buf, &cut) {
                let entry = match item {
                    Item::Skipped(s) => Self::skipped(s),
                    Item::Record(at, bytes) => {
                        let text = std::str::from_utf8(bytes).expect("framing validates lines");
                        Entry {
                            offset: at,
                            text: Some(text.to_string()),
                            explanation: extractor.explain(self.path, text, read_time, &mut memo),
                        }
                    }
                };
                if !self.push(report, entry) {
                    return Ok(());
                }
            }
            if cut.consumed > 0 {
                offset += cut.consumed as u64;
                continue;
            }
            if offset + buf.len() as u64 >= self.len && buf.len() <= self.max_line {
                report.waiting = Some(format!(
                    "an unterminated last line of {} bytes at byte {offset}: the agent takes it \
                     when its newline is written",
                    buf.len()
                ));
                return Ok(());
            }
            // A line longer than the window: the agent skips it, as here.
            match self.next_newline(offset + buf.len() as u64)? {
                Some(nl) => {
                    let skip = Skip {
                        offset,
                        why: framing::oversized((nl - offset) as usize, self.max_line),
                    };
                    if !self.push(report, Self::skipped(skip)) {
                        return Ok(());
                    }
                    offset = nl + 1;
                }
                None => {
                    report.waiting = Some(format!(
                        "an unterminated last line of {} bytes at byte {offset}, longer than \
                         tail.max_line_bytes: the agent will skip it",
                        self.len - offset
                    ));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The offset of the next `\n` at or after `from`.
    fn next_newline(&self, mut from: u64) -> io::Result<Option<u64>> {
        while from < self.len {
            let chunk = self.read(from, 64 * 1024)?;
            if chunk.is_empty() {
                break;
            }
            if let Some(i) = memchr::memchr(b'\n', &chunk) {
                return Ok(Some(from + i as u64));
            }
            from += chunk.len() as u64;
        }
        Ok(None)
    }

    fn document(&self, extractor: &Extractor, report: &mut Report) -> io::Result<()> {
        if self.len as usize > self.max_line {
            let skip = Skip {
                offset: 0,
                why: format!(
                    "a document of {} bytes, longer than tail.max_line_bytes ({}): skipped",
                    self.len, self.max_line
                ),
            };
            self.push(report, Self::skipped(skip));
            return Ok(());
        }
        let buf = self.read(0, self.len)?;
        let entry = match String::from_utf8(buf) {
            Err(e) => Self::skipped(Skip {
                offset: 0,
                why: format!("invalid UTF-8 ({}): skipped", e.utf8_error()),
            }),
            Ok(text) => {
                let mut memo = Memo::default();
                let now = crate::util::now_secs();
                Entry {
                    offset: 0,
                    explanation: extractor.explain_document(self.path, &text, now, &mut memo),
                    text: Some(text),
                }
            }
        };
        self.push(report, entry);
        Ok(())
    }

    fn events(&self, mut readers: Readers, source: String, report: &mut Report) -> io::Result<()> {
        let window = self
            .window
            .max(crate::format::tfrecord::min_window(self.max_line)) as u64;
        let mut state = FileState {
            id: 1,
            path: self.path.to_string(),
            source,
            kind: SourceKind::Tfevents,
            ..FileState::default()
        };
        let mut counters = Counters::default();
        let mut offset = 0;
        while offset < self.len {
            let buf = self.read(offset, window)?;
            let cut = framing::tfrecords(&buf, offset, self.max_line, self.len, self.path);
            for item in Self::items(&buf, &cut) {
                let entry = match item {
                    Item::Skipped(s) => Self::skipped(s),
                    Item::Record(at, payload) => Entry {
                        offset: at,
                        text: None,
                        explanation: readers.explain(&mut state, at, payload, &mut counters),
                    },
                };
                if !self.push(report, entry) {
                    return Ok(());
                }
                if state.ignored.is_some() {
                    // The agent stops at this record; so does explain.
                    return Ok(());
                }
            }
            if cut.consumed == 0 && cut.records.is_empty() {
                report.waiting = Some(format!(
                    "a record cut short at byte {offset} ({} bytes so far): the agent takes it \
                     when the rest is written",
                    self.len - offset
                ));
                return Ok(());
            }
            offset = cut.skip_to.unwrap_or(offset + cut.consumed as u64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMBEDDED_DEFAULT;

    fn config(max_line: usize, window: usize) -> Config {
        let mut c = Config::parse(EMBEDDED_DEFAULT, "t").unwrap();
        c.tail.max_line_bytes = max_line;
        c.tail.read_batch_bytes = window;
        c
    }

    fn whys(r: &Report) -> Vec<(u64, String)> {
        r.records
            .iter()
            .map(|e| (e.offset, e.explanation.to_string()))
            .collect()
    }

    #[test]
    fn skipped_lines_are_shown_where_they_are_and_the_tail_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/R/logs/w.log");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let long = "x".repeat(300); // longer than the window: found by scanning
        let mid = "y".repeat(80); // longer than the limit, within the window
        let text = format!("SPS: 1\n{long}\n\u{ff}\n{mid}\nglobal_step=3, SPS=2\npart");
        let mut bytes = text.into_bytes();
        let bad = bytes.iter().position(|&b| b == 0xc3).unwrap();
        bytes[bad] = 0xff; // invalid UTF-8
        std::fs::write(&path, &bytes).unwrap();
        let r = explain(&config(64, 100), &path, 10).unwrap();
        assert_eq!(r.source, None, "the default patterns are relative");
        assert_eq!(r.kind, SourceKind::Lines);
        let got = whys(&r);
        assert_eq!(got.len(), 5, "{got:#?}");
        assert!(got[0].1.contains("no integer step"), "{got:#?}");
        assert_eq!(got[1].0, 7);
        assert!(got[1].1.contains("a line of 300 bytes"), "{got:#?}");
        assert!(got[2].1.contains("invalid UTF-8"), "{got:#?}");
        assert!(got[3].1.contains("a line of 80 bytes"), "{got:#?}");
        assert!(got[4].1.contains("1 row(s)"), "{got:#?}");
        let waiting = r.waiting.as_deref().unwrap();
        assert!(
            waiting.contains("unterminated last line of 4 bytes"),
            "{waiting}"
        );
        assert!(!r.more);
        // The limit: more is said.
        let r = explain(&config(64, 100), &path, 2).unwrap();
        assert_eq!((r.records.len(), r.more), (2, true));
    }

    #[test]
    fn a_path_is_matched_in_any_of_its_spellings() {
        let cwd = std::env::current_dir().unwrap();
        let c = candidates(Path::new("./a/../b/c.log"));
        assert!(c.contains(&PathBuf::from("b/c.log")), "{c:?}");
        assert!(c.contains(&cwd.join("b/c.log")), "{c:?}");
        let c = candidates(&cwd.join("d/e.log"));
        assert!(c.contains(&PathBuf::from("d/e.log")), "{c:?}");
    }
}
