//! Wake-ups from the file system, with polling as the floor.
//!
//! `notify` tells us promptly that something changed under a source root,
//! but events can be lost (inotify queue overflow, network file systems,
//! roots that do not exist yet). So an event only shortens the wait before
//! the next scan; the scan itself never trusts events, and it runs at least
//! every `poll_interval` regardless.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

/// Sends a wake-up to the ingest loop (file events, shutdown requests).
#[derive(Clone)]
pub struct Waker(mpsc::Sender<()>);

impl Waker {
    pub fn wake(&self) {
        let _ = self.0.send(());
    }
}

/// Watches the source roots and lets the ingest loop sleep until
/// something happens or the poll interval passes.
pub struct Watcher {
    roots: Vec<PathBuf>,
    watcher: Option<notify::RecommendedWatcher>,
    watching: Vec<(PathBuf, RecursiveMode)>,
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
}

impl Watcher {
    pub fn new(roots: Vec<PathBuf>) -> Watcher {
        let (tx, rx) = mpsc::channel();
        let event_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opening and reading a file is no change, and every scan opens
            // the directories it lists: waking on access events would make
            // each scan start the next, back to back, forever.
            if let Ok(event) = res {
                if !matches!(event.kind, notify::EventKind::Access(_)) {
                    let _ = event_tx.send(());
                }
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "file-system events unavailable; polling only"))
        .ok();
        let mut w = Watcher {
            roots,
            watcher,
            watching: Vec::new(),
            tx,
            rx,
        };
        w.refresh();
        w
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
    /// events costs one scan) or `timeout`. Returns whether woken early.
    pub fn wait(&self, timeout: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(()) => {
                std::thread::sleep(Duration::from_millis(20));
                while self.rx.try_recv().is_ok() {}
                true
            }
            Err(_) => false,
        }
    }
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
