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
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

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

/// More paths than this waiting for one look: a full scan is cheaper.
const MAX_CHANGED_PATHS: usize = 4096;

/// What changed since the ingest loop last asked.
#[derive(Debug, Default)]
pub struct Changes {
    /// Paths events named (files, or directories created or moved), in
    /// the form the source patterns use.
    pub paths: BTreeSet<PathBuf>,
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
    tx: mpsc::Sender<Wake>,
    rx: mpsc::Receiver<Wake>,
}

impl Watcher {
    pub fn new(roots: Vec<PathBuf>) -> Watcher {
        let (tx, rx) = mpsc::channel();
        let event_tx = tx.clone();
        let changes = Arc::new(Mutex::new(Changes::default()));
        let shared = changes.clone();
        // notify names paths absolutely; the patterns may be relative.
        let cwd = std::env::current_dir().unwrap_or_default();
        let forms: Vec<(PathBuf, PathBuf)> =
            roots.iter().map(|r| (cwd.join(r), r.clone())).collect();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opening and reading a file is no change, and every scan opens
            // the directories it lists: waking on access events would make
            // each scan start the next, back to back, forever.
            let mut c = shared.lock().unwrap_or_else(|p| p.into_inner());
            match res {
                Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => return,
                Ok(event) if event.need_rescan() => c.rescan = true,
                Ok(event) => {
                    for path in &event.paths {
                        c.paths.insert(in_root_form(path, &forms));
                    }
                    if c.paths.len() > MAX_CHANGED_PATHS {
                        c.paths.clear();
                        c.rescan = true;
                    }
                }
                // A watch that could not be added (a new directory past the
                // watch limit): what it would have told is unknown.
                Err(_) => c.rescan = true,
            }
            drop(c);
            let _ = event_tx.send(Wake::Event);
        })
        .map_err(|e| tracing::warn!(error = %e, "file-system events unavailable; polling only"))
        .ok();
        let mut w = Watcher {
            roots,
            watcher,
            watching: Vec::new(),
            changes,
            tx,
            rx,
        };
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
    /// events costs one scan), a request of the agent's (no settle: a
    /// stop, or CMD's exit in init mode, is not kept waiting) or
    /// `timeout`. Returns whether woken early.
    pub fn wait(&self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(Wake::Event) => {
                let settled = std::time::Instant::now() + SETTLE;
                loop {
                    let left = settled.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match self.rx.recv_timeout(left) {
                        Ok(Wake::Event) => continue,
                        Ok(Wake::Asked) | Err(_) => break,
                    }
                }
                while self.rx.try_recv().is_ok() {}
                true
            }
            Ok(Wake::Asked) => {
                while self.rx.try_recv().is_ok() {}
                true
            }
            Err(_) => false,
        }
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
