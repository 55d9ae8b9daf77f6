//! The `jsonl` sink: delivered rows as JSON lines, one file per run.
//!
//! It is the simplest sink that follows the full contract, which makes it
//! the end-to-end witness of exactly-once delivery in tests, and a plain
//! format for users who want rows without TensorBoard or W&B.
//!
//! Rows are appended as soon as they are written to the sink, so readers
//! see them at once; a flush fsyncs the files appended to since the last
//! one and commits their lengths. Durability costs one fsync per file per
//! flush interval, whatever the number of writes. Recovery cuts each file
//! back to its committed length.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::ser::{SerializeMap, Serializer};

use super::open_files::OpenFiles;
use super::{fs_refusal, Checkpoint, PathTemplate, Sink, SinkError};
use crate::row::{Entry, Row};

/// Committed length of every file the sink has written: its recovery state.
type Lengths = BTreeMap<PathBuf, u64>;

/// Files kept open between writes; others are opened again when written.
const OPEN_FILES: usize = 64;

/// See the module documentation.
pub struct JsonlSink {
    template: PathTemplate,
    /// Lengths as of the last commit (or checkpoint).
    committed: Lengths,
    /// Where each file appended to since the last flush ends now.
    written: HashMap<PathBuf, u64>,
    files: OpenFiles,
    /// The MOSAIC run whose rows each file holds (a file error refuses
    /// that run, see `fs_refusal`).
    owners: HashMap<PathBuf, String>,
    /// The directory above every run's own part of the path.
    root: Option<PathBuf>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> SinkError {
    SinkError::Io(format!("jsonl sink: {what} {}: {e}", path.display()))
}

fn recover_err(
    root: Option<&Path>,
    path: &Path,
    what: &str,
    e: std::io::Error,
) -> Result<(), SinkError> {
    fs_refusal::let_pass("jsonl", root, path, what, e)
}

impl JsonlSink {
    pub fn new(template: &str) -> JsonlSink {
        JsonlSink {
            template: PathTemplate::new(template),
            committed: Lengths::new(),
            written: HashMap::new(),
            files: OpenFiles::new(OPEN_FILES),
            owners: HashMap::new(),
            root: fs_refusal::template_root(template),
        }
    }

    fn state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.committed).expect("lengths serialise")
    }

    /// The error of `what` on `path`, which holds `run`'s rows.
    fn run_err(&self, run: &str, path: &Path, what: &str, e: std::io::Error) -> SinkError {
        fs_refusal::error("jsonl", self.root.as_deref(), run, path, what, e)
    }
}

/// Writes `row` as one JSON object; non-finite values become the strings
/// "NaN", "Infinity" and "-Infinity" (JSON has no token for them).
pub fn write_row(out: &mut Vec<u8>, row: &Row) {
    struct Values<'a>(&'a BTreeMap<String, f64>);
    impl serde::Serialize for Values<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in self.0 {
                if v.is_finite() {
                    m.serialize_entry(k, v)?;
                } else if v.is_nan() {
                    m.serialize_entry(k, "NaN")?;
                } else if *v > 0.0 {
                    m.serialize_entry(k, "Infinity")?;
                } else {
                    m.serialize_entry(k, "-Infinity")?;
                }
            }
            m.end()
        }
    }
    #[derive(serde::Serialize)]
    struct Line<'a> {
        run_id: &'a str,
        step: i64,
        wall_time: f64,
        values: Values<'a>,
    }
    serde_json::to_writer(
        &mut *out,
        &Line {
            run_id: &row.run_id,
            step: row.step,
            wall_time: row.wall_time,
            values: Values(&row.values),
        },
    )
    .expect("writing to a Vec cannot fail");
    out.push(b'\n');
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    async fn recover(&mut self, state: &[u8]) -> Result<(), SinkError> {
        self.written.clear();
        self.files.clear();
        self.committed = if state.is_empty() {
            Lengths::new()
        } else {
            serde_json::from_slice(state)
                .map_err(|e| SinkError::Io(format!("jsonl sink: damaged saved state: {e}")))?
        };
        let root = self.root.as_deref();
        for (path, &len) in &self.committed {
            let file = match OpenOptions::new().write(true).open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(file = %path.display(), "jsonl output file was removed; it will be created again");
                    continue;
                }
                Err(e) => {
                    recover_err(root, path, "open", e)?;
                    continue;
                }
            };
            let on_disk = file
                .metadata()
                .map_err(|e| io_err(path, "cannot stat", e))?
                .len();
            if on_disk > len {
                tracing::info!(file = %path.display(), from = on_disk, to = len, "cutting uncommitted rows (written before a crash)");
                if let Err(e) = file.set_len(len) {
                    recover_err(root, path, "truncate", e)?;
                    continue;
                }
                file.sync_all()
                    .map_err(|e| io_err(path, "cannot sync", e))?;
            } else if on_disk < len {
                tracing::warn!(file = %path.display(), expected = len, found = on_disk, "jsonl output file is shorter than committed; was it edited?");
            }
        }
        Ok(())
    }

    async fn write(&mut self, entries: &[Entry], checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let mut new_files = false;
        // Rows come in runs of the same run id: the file is looked up once
        // per run of rows, and its rows gathered before they are appended.
        let mut out: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut at: HashMap<PathBuf, usize> = HashMap::new();
        let mut current: Option<(&str, usize)> = None;
        // Run events (configuration, end) are not metric rows.
        for entry in entries.iter().filter(|e| e.row.event.is_none()) {
            if let Some((run, i)) = current {
                if run == entry.row.run_id.as_str() {
                    write_row(&mut out[i].1, &entry.row);
                    continue;
                }
            }
            let path = self.template.render(&entry.row.run_id);
            if !self.committed.contains_key(&path) {
                // Record the file's current length before writing to it,
                // so that recovery can cut back what follows.
                let run = entry.row.run_id.as_str();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| self.run_err(run, dir, "cannot create", e))?;
                }
                let len = match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(self.run_err(run, &path, "cannot stat", e)),
                };
                self.committed.insert(path.clone(), len);
                new_files = true;
            }
            if !self.owners.contains_key(&path) {
                self.owners.insert(path.clone(), entry.row.run_id.clone());
            }
            let i = *at.entry(path.clone()).or_insert_with(|| {
                out.push((path, Vec::new()));
                out.len() - 1
            });
            write_row(&mut out[i].1, &entry.row);
            current = Some((entry.row.run_id.as_str(), i));
        }
        if new_files {
            // Before the first byte of a new file is written.
            checkpoint.save(self.state())?;
        }
        for (path, bytes) in out {
            let end = match self.written.get(&path) {
                Some(&end) => end,
                None => self.committed.get(&path).copied().unwrap_or(0),
            };
            // At the end of what this sink wrote: whatever a failed
            // attempt left beyond it is overwritten (recovery cut it).
            let appended = match self.files.get(&path) {
                Ok((file, _)) => file
                    .write_all_at(&bytes, end)
                    .map_err(|e| ("cannot write", e)),
                Err(e) => Err(("cannot open", e)),
            };
            if let Err((what, e)) = appended {
                let run = self.owners.get(&path).map_or("", String::as_str);
                return Err(self.run_err(run, &path, what, e));
            }
            self.written.insert(path, end + bytes.len() as u64);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<Vec<u8>, SinkError> {
        let mut written: Vec<(PathBuf, u64)> = self.written.drain().collect();
        // A stable order keeps the file-system work reproducible.
        written.sort();
        for (path, end) in written {
            // A handle closed since the write is opened again: fsync makes
            // the file's data durable whichever descriptor asks.
            let synced = match self.files.get(&path) {
                Ok((file, _)) => file
                    .sync_data()
                    .map_err(|e| io_err(&path, "cannot sync", e)),
                Err(e) => {
                    let run = self.owners.get(&path).map_or("", String::as_str);
                    Err(self.run_err(run, &path, "cannot open", e))
                }
            };
            synced?;
            self.committed.insert(path, end);
        }
        Ok(self.state())
    }
}
