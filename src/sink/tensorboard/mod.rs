//! The `tensorboard` sink: scalar event files that TensorBoard reads live.
//!
//! Each run gets one event file in its directory (a `{run_id}` template),
//! named and framed as TensorBoard's own writers do ([`naming`],
//! [`crate::format::tfrecord`]), starting with the `brain.Event:2` file-version record,
//! then one `Event` per row ([`encode`]).
//!
//! Records are appended as soon as rows are written to the sink, so that
//! TensorBoard shows them on its next reload; a flush fsyncs the files
//! appended to since the last one (one fsync per file per flush interval).
//!
//! Exactly once, following the contract of [`crate::sink`]: the state
//! committed with the cursor names, per run directory, the event file and
//! the length fsynced up to. A new file is recorded (at length 0) through
//! the checkpoint before it is created. Recovery cuts every file back to its
//! committed length, dropping records written after the last commit, a torn
//! one included; the rows after the cursor are then written again, to the
//! same file. A run keeps one file across restarts: TensorBoard reads
//! records appended to a file it is following, whereas a file that sorts
//! before a newer one may be skipped by a loader that has moved on.

mod encode;
mod naming;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::open_files::OpenFiles;
use super::{fs_refusal, Checkpoint, PathTemplate, Sink, SinkError};
use crate::row::Entry;
pub use encode::{scalar_value, Encoder};
pub use naming::{event_file_name, hostname};

/// Where one run's events go and how much of that file is committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EventFile {
    /// The event file's full path.
    file: PathBuf,
    /// Bytes fsynced and committed with the cursor.
    len: u64,
}

/// The recovery state: one event file per run directory. Keyed by the
/// directory rather than the run id so that two run ids that render to
/// the same directory share a file instead of racing on two.
type State = BTreeMap<PathBuf, EventFile>;

/// See the module documentation.
pub struct TensorBoardSink {
    template: PathTemplate,
    hostname: String,
    /// Clock for file names and file-version records (a test fixes it).
    now: fn() -> f64,
    /// Files and lengths as of the last commit (or checkpoint).
    committed: State,
    /// A change to `committed` that recovery made and no checkpoint has
    /// recorded yet (a replacement for a file that went missing).
    unsaved: bool,
    /// Records of the current write, by run directory.
    pending: HashMap<PathBuf, Vec<u8>>,
    /// Run directories whose file was appended to since the last flush:
    /// where it ends now, and whether this process created it (its
    /// directory entry then needs a sync too).
    written: HashMap<PathBuf, (u64, bool)>,
    files: OpenFiles,
    encoder: Encoder,
    /// The last run id rendered and its directory: rows come in runs of
    /// the same id, and rendering allocates.
    last_dir: Option<(String, PathBuf)>,
    /// The MOSAIC run each directory is for (a file error refuses that
    /// run, see `fs_refusal`).
    owners: HashMap<PathBuf, String>,
    /// The directory above every run's own part of the path.
    root: Option<PathBuf>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> SinkError {
    SinkError::Io(format!("tensorboard sink: {what} {}: {e}", path.display()))
}

impl TensorBoardSink {
    /// A sink writing under `dir_template` (`{run_id}` is replaced), with at
    /// most `max_open_files` files open at once.
    pub fn new(dir_template: &str, max_open_files: usize) -> TensorBoardSink {
        TensorBoardSink {
            template: PathTemplate::new(dir_template),
            hostname: hostname(),
            now: crate::util::now_secs,
            committed: State::new(),
            unsaved: false,
            pending: HashMap::new(),
            written: HashMap::new(),
            files: OpenFiles::new(max_open_files),
            encoder: Encoder::default(),
            last_dir: None,
            owners: HashMap::new(),
            root: fs_refusal::template_root(dir_template),
        }
    }

    /// Replaces the clock used for file names and file-version records.
    pub fn with_clock(mut self, now: fn() -> f64) -> TensorBoardSink {
        self.now = now;
        self
    }

    fn state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.committed).expect("state serialises")
    }

    fn dir_for(&mut self, run_id: &str) -> PathBuf {
        match &self.last_dir {
            Some((id, dir)) if id == run_id => dir.clone(),
            _ => {
                let dir = self.template.render(run_id);
                self.last_dir = Some((run_id.to_string(), dir.clone()));
                dir
            }
        }
    }

    /// The error of `what` on `path`, under the directory `dir`.
    fn run_err(&self, dir: &Path, path: &Path, what: &str, e: std::io::Error) -> SinkError {
        let run = self.owners.get(dir).map_or("", String::as_str);
        fs_refusal::error("tensorboard", self.root.as_deref(), run, path, what, e)
    }

    /// A fresh file for `dir`, recorded at length 0 (not yet created).
    fn new_file(&self, dir: &Path) -> EventFile {
        EventFile {
            file: dir.join(event_file_name((self.now)(), &self.hostname)),
            len: 0,
        }
    }
}

/// Makes a new directory entry durable: without this a power cut could
/// lose a file whose length is already committed.
fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, "cannot sync directory", e))
}

impl Sink for TensorBoardSink {
    fn name(&self) -> &'static str {
        "tensorboard"
    }

    async fn recover(&mut self, state: &[u8]) -> Result<(), SinkError> {
        self.pending.clear();
        self.written.clear();
        self.files.clear();
        self.last_dir = None;
        self.unsaved = false;
        self.committed = if state.is_empty() {
            State::new()
        } else {
            serde_json::from_slice(state)
                .map_err(|e| SinkError::Io(format!("tensorboard sink: damaged saved state: {e}")))?
        };
        let dirs: Vec<PathBuf> = self.committed.keys().cloned().collect();
        let root = self.root.clone();
        let pass = |path: &Path, what: &str, e| {
            fs_refusal::let_pass("tensorboard", root.as_deref(), path, what, e)
        };
        for dir in dirs {
            let ef = self.committed[&dir].clone();
            let on_disk = match std::fs::metadata(&ef.file) {
                Ok(m) => Some(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    pass(&ef.file, "stat", e)?;
                    continue;
                }
            };
            match on_disk {
                Some(n) if n > ef.len => {
                    tracing::info!(file = %ef.file.display(), from = n, to = ef.len, "cutting uncommitted events (written before a crash)");
                    let f = match std::fs::OpenOptions::new().write(true).open(&ef.file) {
                        Ok(f) => f,
                        Err(e) => {
                            pass(&ef.file, "open", e)?;
                            continue;
                        }
                    };
                    f.set_len(ef.len).map_err(|e| {
                        io_err(
                            &ef.file,
                            &format!("cannot truncate to byte {} of", ef.len),
                            e,
                        )
                    })?;
                    f.sync_all()
                        .map_err(|e| io_err(&ef.file, "cannot sync", e))?;
                }
                Some(n) if n == ef.len => {}
                None if ef.len == 0 => {}
                _ => {
                    // Shorter than committed or gone: removed or edited by
                    // someone else. Appending at the committed offset would
                    // leave a hole that stops every reader at that point, so
                    // the run continues in a new file.
                    let fresh = self.new_file(&dir);
                    tracing::warn!(file = %ef.file.display(), committed = ef.len, found = ?on_disk, new_file = %fresh.file.display(), "event file is missing or shorter than committed; continuing in a new file");
                    self.committed.insert(dir, fresh);
                    self.unsaved = true;
                }
            }
        }
        Ok(())
    }

    async fn write(&mut self, entries: &[Entry], checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let mut new_files = false;
        let mut current: Option<(&str, PathBuf)> = None;
        let mut gathered = Vec::new();
        for entry in entries {
            let row = &entry.row;
            // Run events have no values; the worker's own event files
            // already hold what they hold.
            // System samples are W&B's System tab, not the worker's charts.
            if row.values.is_empty() || row.event.is_some() || !row.origin.for_tensorboard() {
                continue;
            }
            // Rows come in runs of the same run id: the run's file is
            // looked up once per run of rows, not once per row.
            let same = current.as_ref().is_some_and(|(run, _)| *run == row.run_id);
            if !same {
                if let Some((_, dir)) = current.take() {
                    self.pending.entry(dir).or_default().append(&mut gathered);
                }
                let dir = self.dir_for(&row.run_id);
                let fresh = !self.committed.contains_key(&dir);
                if fresh {
                    let ef = self.new_file(&dir);
                    self.committed.insert(dir.clone(), ef);
                    new_files = true;
                }
                let empty = self.committed[&dir].len == 0 && !self.written.contains_key(&dir);
                let out = self.pending.entry(dir.clone()).or_default();
                if empty && out.is_empty() {
                    self.encoder.file_version(out, (self.now)());
                }
                if !self.owners.contains_key(&dir) {
                    self.owners.insert(dir.clone(), row.run_id.clone());
                }
                current = Some((row.run_id.as_str(), dir));
            }
            self.encoder.row(&mut gathered, row);
        }
        if let Some((_, dir)) = current {
            self.pending.entry(dir).or_default().append(&mut gathered);
        }
        if new_files || self.unsaved {
            // Recovery must know of a file before its first byte exists.
            checkpoint.save(self.state())?;
            self.unsaved = false;
        }
        self.append_pending()
    }

    async fn flush(&mut self) -> Result<Vec<u8>, SinkError> {
        let mut dirs: Vec<(PathBuf, (u64, bool))> = self.written.drain().collect();
        // A stable order keeps the file-system work reproducible.
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        for (dir, (end, created)) in dirs {
            let path = self.committed[&dir].file.clone();
            // A handle closed since the write is opened again: fsync makes
            // the file's data durable whichever descriptor asks.
            let synced = match self.files.get(&path) {
                Ok((file, _)) => file
                    .sync_data()
                    .map_err(|e| io_err(&path, "cannot sync", e)),
                Err(e) => Err(self.run_err(&dir, &path, "cannot open", e)),
            };
            synced?;
            if created {
                sync_dir(&dir)?;
                // The run directory may be new as well.
                if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
            if let Some(ef) = self.committed.get_mut(&dir) {
                ef.len = end;
            }
        }
        Ok(self.state())
    }
}

impl TensorBoardSink {
    /// Appends the current write's records to their files at once, so that
    /// TensorBoard shows them without waiting for the flush (which only
    /// makes them durable).
    fn append_pending(&mut self) -> Result<(), SinkError> {
        let mut dirs: Vec<PathBuf> = self.pending.keys().cloned().collect();
        dirs.sort();
        for dir in dirs {
            let bytes = self.pending.remove(&dir).expect("listed above");
            let ef = self
                .committed
                .get(&dir)
                .cloned()
                .expect("every pending directory has a committed file");
            let (end, was_created) = match self.written.get(&dir) {
                Some(&w) => w,
                None => (ef.len, false),
            };
            if end == 0 {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| self.run_err(&dir, &dir, "cannot create", e))?;
            }
            // Positional write at the end of what this sink wrote: whatever
            // a failed attempt left beyond it is overwritten (recovery also
            // cut it).
            let appended = match self.files.get(&ef.file) {
                Ok((file, created)) => {
                    file.write_all_at(&bytes, end)
                        .map(|()| created)
                        .map_err(|e| {
                            let what =
                                format!("cannot write {} bytes at byte {end} of", bytes.len());
                            (what, e)
                        })
                }
                Err(e) => Err(("cannot open".to_string(), e)),
            };
            match appended {
                Ok(created) => {
                    self.written
                        .insert(dir, (end + bytes.len() as u64, was_created || created));
                }
                Err((what, e)) => return Err(self.run_err(&dir, &ef.file, &what, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
