//! The copy of CMD's output that the agent's file follower ships: one file
//! per stream, written in whole lines, in the run's directory once the run
//! id is known.
//!
//! Where the copy goes is a path template (`init.console`) with `{stream}`
//! and usually `{run_id}`. The run id is, in order: given in advance
//! (`MOSAIC_RUN_ID`, `init.run_id`), or the `run_id` of the first JSON line
//! on the run-id stream (stdout, or the pty's one stream) that has one, as
//! MOSAIC's lifecycle events carry it. Until then every byte is held in
//! memory; when [`HOLD_BYTES`] are held, `init.run_id_wait_secs` pass, or
//! CMD's output ends first, the copies go to a fallback directory,
//! `<store>/console/<UTC YYYYmmddTHHMMSS>-<agent pid>/<stream>.log`.
//!
//! A copy that cannot be written (directory not creatable, disk full) is
//! given up for that stream with one log line naming the file: the copy
//! never holds up or breaks the pass-through, which is done before the
//! bytes get here.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes held, over all streams, while waiting for the run id.
pub const HOLD_BYTES: usize = 1 << 20;

/// A line still without its end is written out once it is this long: a
/// progress bar redrawn with `\r` forever must not grow in memory.
const MAX_PARTIAL: usize = 1 << 20;

/// One of CMD's output streams, named as in the copy's `{stream}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// A pseudo-terminal's single stream (stdout and stderr together).
    Console,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Console => "console",
        }
    }
}

/// Where the copies go, from the configuration and the environment.
#[derive(Debug, Clone)]
pub struct TeeSettings {
    /// `init.console`, with `{stream}` and optionally `{run_id}`.
    pub template: String,
    /// The run id when known before CMD prints anything.
    pub run_id: Option<String>,
    /// `<store.path>/console`.
    pub fallback_root: PathBuf,
    /// Longest wait for a run id on the run-id stream.
    pub wait: Duration,
}

pub use crate::config::valid_run_id;

/// The copies of every stream, shared by the threads that pass them
/// through.
pub struct Tee {
    state: Mutex<State>,
}

struct State {
    settings: TeeSettings,
    copies: Vec<Copy>,
    /// Index of the stream whose JSON lines may carry the run id.
    scan: Option<usize>,
    /// Where the files go; `None` while waiting for the run id.
    place: Option<Place>,
    started: Instant,
    closed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Run(String),
    Fallback(PathBuf),
    /// The template has no `{run_id}`.
    Fixed,
}

struct Copy {
    stream: Stream,
    /// Bytes not written yet: everything while waiting, then at most the
    /// last, unfinished line.
    pending: Vec<u8>,
    /// How far `pending` was searched for a run id.
    scanned: usize,
    file: Out,
}

enum Out {
    NotOpen,
    Open(File),
    /// Given up (logged once); bytes are dropped from the copy only.
    Failed,
}

impl Tee {
    /// Copies for `streams`; `scan` is the one read for a run id.
    pub fn new(settings: TeeSettings, streams: &[Stream], scan: Option<Stream>) -> Tee {
        let place = if !settings.template.contains("{run_id}") {
            Some(Place::Fixed)
        } else {
            settings.run_id.clone().map(Place::Run)
        };
        let copies: Vec<Copy> = streams
            .iter()
            .map(|&stream| Copy {
                stream,
                pending: Vec::new(),
                scanned: 0,
                file: Out::NotOpen,
            })
            .collect();
        let scan = scan.and_then(|s| copies.iter().position(|c| c.stream == s));
        let tee = Tee {
            state: Mutex::new(State {
                settings,
                copies,
                scan,
                place: None,
                started: Instant::now(),
                closed: false,
            }),
        };
        if let Some(p) = place {
            tee.lock().place(p, "known before CMD started");
        }
        tee
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not stop the copy of the other stream.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the copies still wait for a run id.
    pub fn waiting(&self) -> bool {
        let s = self.lock();
        s.place.is_none() && !s.closed
    }

    /// How long from start the run id is waited for.
    pub fn wait(&self) -> Duration {
        self.lock().settings.wait
    }

    /// Adds bytes CMD wrote on `stream` (already passed through).
    pub fn append(&self, stream: Stream, bytes: &[u8]) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        let Some(i) = s.copies.iter().position(|c| c.stream == stream) else {
            return;
        };
        s.copies[i].pending.extend_from_slice(bytes);
        if s.place.is_some() {
            let file_for = s.file_namer();
            s.copies[i].write_lines(false, &file_for);
            return;
        }
        if s.scan == Some(i) {
            if let Some(id) = s.copies[i].scan_for_run_id() {
                s.place(Place::Run(id), "from CMD's first JSON line with a run_id");
                return;
            }
        }
        s.check_wait();
    }

    /// Gives up waiting for the run id if its time has passed.
    pub fn tick(&self) {
        let mut s = self.lock();
        if !s.closed && s.place.is_none() {
            s.check_wait();
        }
    }

    /// CMD's output has ended (or is no longer waited for): writes what is
    /// held, ends an unfinished last line with `\n` (the follower reads
    /// whole lines only, and no more of that line can come), and closes
    /// the files. Bytes appended later are passed through only.
    pub fn close(&self) {
        let mut s = self.lock();
        if s.closed {
            return;
        }
        if s.place.is_none() && s.copies.iter().any(|c| !c.pending.is_empty()) {
            s.fallback("CMD's output ended before a run id was seen");
        }
        let file_for = s.file_namer();
        for c in &mut s.copies {
            c.write_lines(true, &file_for);
            c.file = Out::Failed;
        }
        s.closed = true;
    }

    /// The files written so far (for logs and tests).
    pub fn paths(&self) -> Vec<PathBuf> {
        let s = self.lock();
        let file_for = s.file_namer();
        s.copies
            .iter()
            .filter_map(|c| file_for.as_ref().map(|f| f.path(c.stream)))
            .filter(|p| p.exists())
            .collect()
    }
}

/// Turns a place into file paths.
struct Namer {
    template: String,
    place: Place,
}

impl Namer {
    fn path(&self, stream: Stream) -> PathBuf {
        match &self.place {
            Place::Run(id) => PathBuf::from(
                self.template
                    .replace("{run_id}", id)
                    .replace("{stream}", stream.name()),
            ),
            Place::Fixed => PathBuf::from(self.template.replace("{stream}", stream.name())),
            Place::Fallback(dir) => dir.join(format!("{}.log", stream.name())),
        }
    }
}

impl State {
    fn file_namer(&self) -> Option<Namer> {
        self.place.clone().map(|place| Namer {
            template: self.settings.template.clone(),
            place,
        })
    }

    fn held(&self) -> usize {
        self.copies.iter().map(|c| c.pending.len()).sum()
    }

    fn check_wait(&mut self) {
        if self.held() >= HOLD_BYTES {
            self.fallback("no run id in CMD's first 1 MiB of output");
        } else if self.started.elapsed() >= self.settings.wait {
            let why = format!(
                "no run id within init.run_id_wait_secs ({} s)",
                self.settings.wait.as_secs()
            );
            self.fallback(&why);
        }
    }

    fn fallback(&mut self, why: &str) {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]"
            ))
            .unwrap_or_else(|_| "unknown-time".into());
        let dir = self
            .settings
            .fallback_root
            .join(format!("{stamp}-{}", std::process::id()));
        self.place(Place::Fallback(dir), why);
    }

    /// Fixes where the copies go and writes what was held.
    fn place(&mut self, place: Place, why: &str) {
        self.place = Some(place);
        let file_for = self.file_namer();
        if let Some(f) = &file_for {
            let names: Vec<String> = self
                .copies
                .iter()
                .map(|c| f.path(c.stream).display().to_string())
                .collect();
            tracing::info!(files = ?names, "copying CMD's output for shipping ({why})");
        }
        for c in &mut self.copies {
            c.write_lines(false, &file_for);
        }
    }
}

impl Copy {
    /// Searches the complete lines not yet searched for a JSON object with
    /// a usable `run_id` string.
    fn scan_for_run_id(&mut self) -> Option<String> {
        while let Some(n) = memchr::memchr(b'\n', &self.pending[self.scanned..]) {
            let line = &self.pending[self.scanned..self.scanned + n];
            self.scanned += n + 1;
            if let Some(id) = run_id_of(line) {
                return Some(id);
            }
        }
        None
    }

    /// Writes the complete lines held (all of it when `last`, ending an
    /// unfinished line), opening the file first if needed.
    fn write_lines(&mut self, last: bool, namer: &Option<Namer>) {
        let Some(namer) = namer else { return };
        if self.pending.is_empty() {
            return;
        }
        if last && !self.pending.ends_with(b"\n") {
            self.pending.push(b'\n');
        }
        let upto = match memchr::memrchr(b'\n', &self.pending) {
            Some(i) => i + 1,
            None if self.pending.len() >= MAX_PARTIAL => self.pending.len(),
            None => return,
        };
        if matches!(self.file, Out::NotOpen) {
            let path = namer.path(self.stream);
            self.file = match open_append(&path) {
                Ok(f) => Out::Open(f),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot create the copy of CMD's {}; it passes through but is not shipped", self.stream.name());
                    Out::Failed
                }
            };
        }
        if let Out::Open(f) = &mut self.file {
            if let Err(e) = f.write_all(&self.pending[..upto]) {
                let path = namer.path(self.stream);
                tracing::warn!(path = %path.display(), error = %e, "cannot write the copy of CMD's {}; it keeps passing through, the rest of it is not shipped", self.stream.name());
                self.file = Out::Failed;
            }
        }
        self.pending.drain(..upto);
        self.scanned = 0;
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// The `run_id` of a line that is a JSON object (Python's non-finite
/// tokens accepted, a pty's `\r` ignored), if it names a usable directory.
fn run_id_of(line: &[u8]) -> Option<String> {
    let line = line.trim_ascii();
    if !line.starts_with(b"{") {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let value = crate::extract::parse_python_json(text).ok()?;
    let id = value.get("run_id")?.as_str()?;
    if valid_run_id(id) {
        Some(id.to_string())
    } else {
        tracing::debug!(
            run_id = id,
            "a run_id that cannot name a directory; not used for the console copy"
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(root: &Path, run_id: Option<&str>, wait: Duration) -> TeeSettings {
        TeeSettings {
            template: root
                .join("runs/{run_id}/logs/init.{stream}.log")
                .display()
                .to_string(),
            run_id: run_id.map(str::to_string),
            fallback_root: root.join("store/console"),
            wait,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn read(p: PathBuf) -> Vec<u8> {
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn run_ids_that_can_name_a_directory() {
        for ok in [
            "01KKAQ6XP04TFF59TDWH9EDD1R",
            "cleanrl-ppo-20260201-143022",
            "a.b_c",
        ] {
            assert!(valid_run_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            &"x".repeat(129),
        ] {
            assert!(!valid_run_id(bad), "{bad}");
        }
    }

    #[test]
    fn held_bytes_go_to_the_run_named_by_the_first_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let tee = Tee::new(
            settings(dir.path(), None, HOUR),
            &[Stream::Stdout, Stream::Stderr],
            Some(Stream::Stdout),
        );
        tee.append(Stream::Stderr, b"err before\n");
        tee.append(
            Stream::Stdout,
            b"text\n{\"event\":\"heartbeat\"}\n{\"event\":\"run_st",
        );
        assert!(tee.waiting());
        assert!(!dir.path().join("runs").exists(), "held, not written");
        tee.append(
            Stream::Stdout,
            b"arted\",\"payload\":{\"x\":NaN},\"run_id\":\"01KKAQ6XP04TFF59TDWH9EDD1R\"}\r\npart",
        );
        assert!(!tee.waiting());
        let logs = dir.path().join("runs/01KKAQ6XP04TFF59TDWH9EDD1R/logs");
        // Whole lines only, until the end.
        assert_eq!(
            read(logs.join("init.stdout.log")),
            b"text\n{\"event\":\"heartbeat\"}\n{\"event\":\"run_started\",\"payload\":{\"x\":NaN},\"run_id\":\"01KKAQ6XP04TFF59TDWH9EDD1R\"}\r\n"
        );
        assert_eq!(read(logs.join("init.stderr.log")), b"err before\n");
        tee.append(Stream::Stdout, b"ial\n{\"run_id\":\"OTHER\"}\nlast");
        tee.append(Stream::Stderr, b"\x00\xff");
        tee.close();
        tee.append(Stream::Stdout, b"after close\n");
        assert!(read(logs.join("init.stdout.log"))
            .ends_with(b"\npartial\n{\"run_id\":\"OTHER\"}\nlast\n"));
        assert_eq!(
            read(logs.join("init.stderr.log")),
            b"err before\n\x00\xff\n"
        );
    }

    #[test]
    fn unusable_run_ids_and_stderr_json_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let tee = Tee::new(
            settings(dir.path(), None, HOUR),
            &[Stream::Stdout, Stream::Stderr],
            Some(Stream::Stdout),
        );
        tee.append(Stream::Stderr, b"{\"run_id\":\"FROMERR\"}\n");
        tee.append(
            Stream::Stdout,
            b"{\"run_id\":\"../../etc\"}\n{\"run_id\":7}\n",
        );
        assert!(tee.waiting());
        tee.append(Stream::Stdout, b"{\"run_id\":\"GOOD\"}\n");
        assert!(dir.path().join("runs/GOOD/logs/init.stderr.log").exists());
    }

    #[test]
    fn fallback_when_output_ends_or_the_hold_fills_or_time_passes() {
        // Output ends first.
        let dir = tempfile::tempdir().unwrap();
        let tee = Tee::new(
            settings(dir.path(), None, HOUR),
            &[Stream::Stdout, Stream::Stderr],
            Some(Stream::Stdout),
        );
        tee.append(Stream::Stdout, b"no json here");
        tee.close();
        let paths = tee.paths();
        assert_eq!(paths.len(), 1, "no file for a stream that printed nothing");
        let p = &paths[0];
        assert!(
            p.starts_with(dir.path().join("store/console")),
            "{}",
            p.display()
        );
        assert_eq!(p.file_name().unwrap(), "stdout.log");
        let name = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
        let (stamp, pid) = name.split_once('-').unwrap();
        assert_eq!(stamp.len(), 15);
        assert_eq!(&stamp[8..9], "T");
        assert_eq!(pid, std::process::id().to_string());
        assert_eq!(read(p.clone()), b"no json here\n");

        // The hold fills.
        let dir = tempfile::tempdir().unwrap();
        let tee = Tee::new(
            settings(dir.path(), None, HOUR),
            &[Stream::Stdout],
            Some(Stream::Stdout),
        );
        let line = vec![b'x'; 1023];
        for _ in 0..1024 {
            tee.append(Stream::Stdout, &line);
            tee.append(Stream::Stdout, b"\n");
        }
        assert!(!tee.waiting());
        assert_eq!(read(tee.paths().remove(0)).len(), 1 << 20);

        // Time passes.
        let dir = tempfile::tempdir().unwrap();
        let tee = Tee::new(
            settings(dir.path(), None, Duration::ZERO),
            &[Stream::Stdout],
            Some(Stream::Stdout),
        );
        tee.tick();
        assert!(!tee.waiting());
        tee.append(Stream::Stdout, b"late\n");
        assert_eq!(read(tee.paths().remove(0)), b"late\n");
    }

    #[test]
    fn a_known_run_id_or_a_fixed_template_writes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let tee = Tee::new(
            settings(dir.path(), Some("R9"), HOUR),
            &[Stream::Console],
            Some(Stream::Console),
        );
        tee.append(Stream::Console, b"a\r\n{\"run_id\":\"NOT_THIS\"}\r\n");
        assert_eq!(
            read(dir.path().join("runs/R9/logs/init.console.log")),
            b"a\r\n{\"run_id\":\"NOT_THIS\"}\r\n"
        );
        let fixed = TeeSettings {
            template: dir.path().join("out/{stream}.txt").display().to_string(),
            ..settings(dir.path(), None, HOUR)
        };
        let tee = Tee::new(fixed, &[Stream::Stderr], None);
        tee.append(Stream::Stderr, b"e\n");
        assert_eq!(read(dir.path().join("out/stderr.txt")), b"e\n");
    }

    #[test]
    fn an_unwritable_copy_is_given_up_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("runs"), "a file, not a directory").unwrap();
        let tee = Tee::new(
            settings(dir.path(), Some("R1"), HOUR),
            &[Stream::Stdout],
            None,
        );
        tee.append(Stream::Stdout, b"line\n");
        tee.append(Stream::Stdout, b"line\n");
        tee.close();
        assert!(tee.paths().is_empty());
    }

    #[test]
    fn an_endless_partial_line_is_written_once_long() {
        let dir = tempfile::tempdir().unwrap();
        let tee = Tee::new(
            settings(dir.path(), Some("R2"), HOUR),
            &[Stream::Stderr],
            None,
        );
        let bar = vec![b'\r'; 4096];
        for _ in 0..300 {
            tee.append(Stream::Stderr, &bar);
        }
        let p = dir.path().join("runs/R2/logs/init.stderr.log");
        assert!(read(p.clone()).len() >= MAX_PARTIAL);
        tee.close();
        assert_eq!(read(p).len(), 300 * 4096 + 1);
    }
}
