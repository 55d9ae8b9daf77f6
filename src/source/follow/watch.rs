//! Wake-ups from the file system, with polling as the floor.
//!
//! `notify` tells us promptly that something changed under a source root,
//! and which paths: the ingest loop looks at those paths only (a targeted
//! scan), so that an idle agent next to thousands of finished runs does
//! nothing. But events can be lost (inotify queue overflow, network file
//! systems, roots that do not exist yet, a watch limit reached), so a full
//! scan still runs periodically: every `tail.rescan_interval_ms` while
//! every root is watched ([`Watcher::reliable`]), every
//! `tail.poll_interval_ms` otherwise, and at once when notify reports that
//! it dropped events.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher as _};

/// Why the ingest loop is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A file-system event: more tend to follow at once (a write, then
    /// a rename), so the loop waits a moment for the burst to settle.
    Event,
    /// The agent asks (stop, finish, room in the journal): at once.
    Asked,
}

/// Sends a wake-up to the ingest loop (shutdown requests, journal room).
#[derive(Clone)]
pub struct Waker(mpsc::Sender<Wake>);

impl Waker {
    pub fn wake(&self) {
        let _ = self.0.send(Wake::Asked);
    }
}

/// How long a burst of file-system events may take to settle before the
/// loop looks, so that it costs one scan.
const SETTLE: Duration = Duration::from_millis(20);

/// The least time between two looks that events bring: a worker writing
/// a line every 10 ms would otherwise wake the loop (and commit to the
/// journal) 100 times a second, where two looks read the same lines, and
/// a hundred runs written at once cost each look's work per file. This
/// bounds how late a line is seen, far below any sink's flush interval
/// (and TensorBoard's 5 s reload); a request of the agent's is never held
/// by it.
const EVENT_SPACING: Duration = Duration::from_millis(500);

/// The least time between two wake-ups of notify's thread (see [`Pace`]).
/// Shorter than [`EVENT_SPACING`] because what the kernel queues in the
/// meantime is bounded: a full scan opens every watched directory, two
/// events each, some 60,000 a second at 10,000 runs, and the queue holds
/// 16,384 before it overflows (and an overflow asks for a full scan).
/// At 100 ms it holds at most about 6,000 of them.
const PACE: Duration = Duration::from_millis(100);

/// Two calls of the event handler closer than this are one read of
/// notify's: the events the kernel had queued, handed over one by one.
/// A longer gap means notify's thread was woken again.
const SAME_READ: Duration = Duration::from_millis(5);

/// Paces notify's thread: a wake-up of it within [`PACE`] of the last
/// paced one first sleeps out the rest of that time, in the event handler
/// (which runs on notify's thread). Meanwhile the kernel queues what
/// happens, and merges a repeated event (the same modification of the
/// same file) with the one queued before it, so that a worker writing a
/// line every millisecond costs notify's thread about ten wake-ups a
/// second instead of a thousand. An event after a quiet spell is handled
/// at once. What can wait is bounded: one pace per read, well within the
/// kernel's queue.
#[derive(Default)]
struct Pace {
    last_return: Option<Instant>,
    last_paced: Option<Instant>,
}

impl Pace {
    /// How long a handler call at `now` sleeps first: `None` within a
    /// read (not a new wake-up of notify's thread), else the rest of the
    /// spacing, zero after a quiet spell.
    fn wait_at(&self, now: Instant) -> Option<Duration> {
        if self
            .last_return
            .is_some_and(|r| now.duration_since(r) < SAME_READ)
        {
            return None;
        }
        Some(self.last_paced.map_or(Duration::ZERO, |p| {
            (p + PACE).saturating_duration_since(now)
        }))
    }

    fn before_event(&mut self) {
        let Some(wait) = self.wait_at(Instant::now()) else {
            return;
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        self.last_paced = Some(Instant::now());
    }

    fn after_event(&mut self) {
        self.last_return = Some(Instant::now());
    }
}

/// More paths than this waiting for one look: a full scan is cheaper.
const MAX_CHANGED_PATHS: usize = 4096;

/// What changed since the ingest loop last asked.
#[derive(Debug, Default)]
pub struct Changes {
    /// Paths events named (files, or directories created or moved), in
    /// the form the source patterns use.
    pub paths: BTreeSet<PathBuf>,
    /// Paths whose only events were writes to their data: for a followed
    /// file that is still whole, a read (not a scan) is all they ask for.
    pub modified: BTreeSet<PathBuf>,
    /// Events were lost or are not to be trusted: scan everything.
    pub rescan: bool,
}

/// Watches the source roots and lets the ingest loop sleep until
/// something happens or the poll interval passes.
pub struct Watcher {
    roots: Vec<PathBuf>,
    watcher: Option<notify::RecommendedWatcher>,
    watching: Vec<(PathBuf, RecursiveMode)>,
    changes: Arc<Mutex<Changes>>,
    /// An event wake-up is in the channel and not yet taken: later events
    /// only add their paths to `changes`, so that a stream of events
    /// costs the notify thread one send, not one per event.
    event_sent: Arc<AtomicBool>,
    /// When the last event-driven look began (see [`EVENT_SPACING`]).
    last_event_look: Mutex<Option<Instant>>,
    tx: mpsc::Sender<Wake>,
    rx: mpsc::Receiver<Wake>,
}

impl Watcher {
    /// A watcher that hears no file-system events: it only waits out its
    /// timeouts and wakes for its [`Waker`]. For a pipeline that reads
    /// every file to its end once and stops (`run --once`, or init mode
    /// after CMD has already exited): events would tell it nothing, and
    /// an inotify descriptor costs at its close, where the kernel waits
    /// out a grace period of its watches (about 8 ms here, which the
    /// process's exit waited for: a third of a `run -- true`).
    pub fn without_events(roots: Vec<PathBuf>) -> Watcher {
        let (tx, rx) = mpsc::channel();
        Watcher {
            roots,
            watcher: None,
            watching: Vec::new(),
            changes: Default::default(),
            event_sent: Default::default(),
            last_event_look: Mutex::new(None),
            tx,
            rx,
        }
    }

    pub fn new(roots: Vec<PathBuf>) -> Watcher {
        let mut w = Watcher::without_events(roots);
        let event_tx = w.tx.clone();
        let shared = w.changes.clone();
        let sent = w.event_sent.clone();
        // notify names paths absolutely; the patterns may be relative.
        let cwd = std::env::current_dir().unwrap_or_default();
        let forms: Vec<(PathBuf, PathBuf)> =
            w.roots.iter().map(|r| (cwd.join(r), r.clone())).collect();
        let mut pace = Pace::default();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opening and reading a file is no change, and every scan opens
            // the directories it lists: waking on access events would make
            // each scan start the next, back to back, forever.
            if matches!(&res, Ok(event) if matches!(event.kind, notify::EventKind::Access(_))) {
                return;
            }
            pace.before_event();
            let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
            match res {
                Ok(event) if event.need_rescan() => c.rescan = true,
                Ok(event) => {
                    let data = matches!(
                        event.kind,
                        notify::EventKind::Modify(notify::event::ModifyKind::Data(_))
                    );
                    for path in &event.paths {
                        let path = in_root_form(path, &forms);
                        if data && !c.paths.contains(&path) {
                            c.modified.insert(path);
                        } else {
                            c.modified.remove(&path);
                            c.paths.insert(path);
                        }
                    }
                    if c.paths.len() + c.modified.len() > MAX_CHANGED_PATHS {
                        c.paths.clear();
                        c.modified.clear();
                        c.rescan = true;
                    }
                }
                // A watch that could not be added (a new directory past the
                // watch limit): what it would have told is unknown.
                Err(_) => c.rescan = true,
            }
            drop(c);
            // The change is recorded before the flag is looked at, and the
            // loop clears the flag before it takes the changes: a change
            // either finds the flag clear and sends, or is taken.
            if !sent.swap(true, Ordering::AcqRel) {
                let _ = event_tx.send(Wake::Event);
            }
            pace.after_event();
        })
        .map_err(|e| tracing::warn!(error = %e, "file-system events unavailable; polling only"))
        .ok();
        w.watcher = watcher;
        w.refresh();
        w
    }

    /// Whether every root is watched (recursively, or through its nearest
    /// existing ancestor until it exists), so that only lost events, which
    /// notify reports, can hide a change: then full scans can be rare. A
    /// root being created is heard at its ancestor; the watches then
    /// change, which brings a full scan (see [`Watcher::refresh`]).
    pub fn reliable(&self) -> bool {
        self.watcher.is_some() && self.watching.len() == self.roots.len()
    }

    /// What changed since the last call (and forgets it).
    pub fn take(&self) -> Changes {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn waker(&self) -> Waker {
        Waker(self.tx.clone())
    }

    /// (Re)establishes watches: each root recursively once it exists, and
    /// until then its nearest existing ancestor, to hear it being created.
    pub fn refresh(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: Vec<(PathBuf, RecursiveMode)> = self
            .roots
            .iter()
            .map(|root| {
                if root.is_dir() {
                    (root.clone(), RecursiveMode::Recursive)
                } else {
                    (nearest_existing(root), RecursiveMode::NonRecursive)
                }
            })
            .collect();
        if wanted == self.watching {
            return;
        }
        // Watches change (a root appeared): what happened before they did
        // was not heard.
        self.changes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rescan = true;
        for (path, _) in &self.watching {
            let _ = watcher.unwatch(path);
        }
        self.watching.clear();
        for (path, mode) in wanted {
            match watcher.watch(&path, mode) {
                Ok(()) => self.watching.push((path, mode)),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot watch; polling covers it")
                }
            }
        }
    }

    /// Sleeps until an event (then a short settle so that a burst of
    /// events costs one scan, and at least [`EVENT_SPACING`] after the
    /// last event-driven look), a request of the agent's (no wait: a
    /// stop, or CMD's exit in init mode, is not kept waiting) or
    /// `timeout`. Returns whether woken early.
    pub fn wait(&self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(Wake::Event) => {
                let mut last = self
                    .last_event_look
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let mut look_at = now + SETTLE;
                if let Some(spaced) = last.map(|l| l + EVENT_SPACING) {
                    look_at = look_at.max(spaced);
                }
                loop {
                    let left = look_at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(Wake::Event) => continue,
                        Ok(Wake::Asked) | Err(_) => break,
                    }
                }
                self.drain();
                *last = Some(Instant::now());
                true
            }
            Ok(Wake::Asked) => {
                self.drain();
                true
            }
            Err(_) => false,
        }
    }

    /// Empties the channel, then lets the next event send again: the
    /// caller takes the changes after this, so none is missed.
    fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
        self.event_sent.store(false, Ordering::Release);
    }
}

/// `path` as the patterns name it: below the root it was heard under, in
/// the root's own (possibly relative) form.
fn in_root_form(path: &Path, forms: &[(PathBuf, PathBuf)]) -> PathBuf {
    for (absolute, given) in forms {
        if let Ok(rest) = path.strip_prefix(absolute) {
            return if rest.as_os_str().is_empty() {
                given.clone()
            } else {
                given.join(rest)
            };
        }
    }
    path.to_path_buf()
}

fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.is_dir() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent.to_path_buf(),
            _ => return PathBuf::from("."),
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Appends a line to `path` (each append is an event).
    fn append(path: &Path) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "x").unwrap();
    }

    #[test]
    fn a_stream_of_events_is_one_wake_up_and_none_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watcher::new(vec![dir.path().to_path_buf()]);
        assert!(w.reliable(), "inotify is available here");
        let _ = w.take();
        let log = dir.path().join("a.log");
        for _ in 0..200 {
            append(&log);
        }
        assert!(w.wait(Duration::from_secs(10)), "the appends wake the loop");
        let c = w.take();
        assert!(c.paths.contains(&log), "a new file asks for a scan: {c:?}");
        // The 200 events cost one wake-up: none is left queued. (Events
        // still arriving after the settle would wake it again, with the
        // path recorded; then there is one more look, and no further.)
        let mut extra = 0;
        while w.wait(Duration::from_millis(300)) {
            extra += 1;
            assert!(extra <= 1, "stale wake-ups after one look");
            let _ = w.take();
        }
        // A change after the look still wakes it.
        append(&log);
        assert!(
            w.wait(Duration::from_secs(10)),
            "a later append wakes the loop"
        );
        let c = w.take();
        assert!(
            c.modified.contains(&log) && !c.paths.contains(&log),
            "a write to a known file is a data change only: {c:?}"
        );
    }

    #[test]
    fn notify_is_paced_between_reads_never_within_one() {
        let t0 = Instant::now();
        let mut p = Pace::default();
        assert_eq!(p.wait_at(t0), Some(Duration::ZERO), "the first event");
        p.last_paced = Some(t0);
        p.last_return = Some(t0 + Duration::from_millis(1));
        // The next event of the same read.
        assert_eq!(p.wait_at(t0 + Duration::from_millis(2)), None);
        // A new wake-up 10 ms on sleeps out the pace.
        let at = t0 + Duration::from_millis(11);
        assert_eq!(p.wait_at(at), Some(PACE - Duration::from_millis(11)));
        // One after a quiet spell does not.
        assert_eq!(p.wait_at(t0 + PACE * 3), Some(Duration::ZERO));
    }

    #[test]
    fn event_driven_looks_are_spaced_but_requests_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let w = Watcher::new(vec![dir.path().to_path_buf()]);
        let log = dir.path().join("a.log");
        append(&log);
        assert!(w.wait(Duration::from_secs(10)));
        let first = Instant::now();
        append(&log);
        assert!(w.wait(Duration::from_secs(10)));
        // A lower bound, which no machine's speed can break.
        assert!(
            first.elapsed() >= EVENT_SPACING - SETTLE,
            "two event-driven looks {:?} apart",
            first.elapsed()
        );
        // A request wakes at once, whatever the spacing: it is answered
        // without waiting for an event that never comes.
        w.waker().wake();
        assert!(w.wait(Duration::from_secs(10)));
    }
}
