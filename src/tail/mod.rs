//! Following log files: discovery, identity, rotation, truncation and
//! line splitting, with byte-exact checkpoints.
//!
//! This is built on plain file reads plus `notify` wake-ups (see
//! [`watch`]) rather than on `linemux`: linemux hands out lines without
//! their byte offsets and always starts a newly added file at its end, so
//! it cannot resume at the exact byte a checkpoint names, nor tell us where
//! a rotated file was left. Here every line carries its offset, and the
//! offset committed is always just past the last complete line taken.
//!
//! The tailer is synchronous and owns no persistence: it proposes
//! [`Batch`]es, the caller commits them (rows and new [`FileState`]
//! together) and then calls [`Tailer::committed`]. A batch that is not
//! committed is simply read again, which is what makes a crash harmless.

mod discover;
mod identity;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::TailConfig;
use crate::stats::Counters;
pub use discover::{rotation_number, Sources};
use identity::{dev_ino, Fingerprint, FINGERPRINT_BYTES};

/// How many scans a file may go unseen (while still existing somewhere)
/// before it is forgotten. A rename racing with a scan can hide a file for
/// one scan; forgetting it then would read it again from 0 when it shows
/// up under its new name.
const UNSEEN_SCANS_BEFORE_FORGET: u32 = 3;

/// The checkpoint of one followed file, as committed in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileState {
    pub id: u64,
    /// Where the file was last seen (it moves on rotation).
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    /// Fingerprint of the first `fp_len` bytes (crc32c).
    pub fp_len: u32,
    pub fp: u32,
    /// Byte offset just past the last complete line taken.
    pub offset: u64,
    /// What was read from this file.
    #[serde(default)]
    pub counters: Counters,
}

impl FileState {
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            len: self.fp_len,
            crc: self.fp,
        }
    }
}

/// A complete line in a [`Batch`]: its byte offset in the file and its
/// range in the batch buffer (without `\n` or a trailing `\r`).
#[derive(Debug, Clone)]
pub struct Line {
    pub offset: u64,
    start: usize,
    end: usize,
}

/// Lines read from one file and the checkpoint that taking them leads to.
#[derive(Debug)]
pub struct Batch {
    /// The file's checkpoint after this batch (counters not yet added).
    pub state: FileState,
    buf: Vec<u8>,
    /// Valid UTF-8 lines of at most `max_line_bytes`, in file order.
    pub lines: Vec<Line>,
    /// What the tailer counted (lines, bad encodings, oversized, ...).
    pub delta: Counters,
    /// After committing, the file is finished and its checkpoint can go.
    pub forget: bool,
}

impl Batch {
    pub fn text(&self, line: &Line) -> &str {
        std::str::from_utf8(&self.buf[line.start..line.end]).expect("validated when read")
    }
}

/// Where a too-long line is being skipped: the tailer scans for its end
/// without holding it in memory.
#[derive(Debug, Clone, Copy)]
struct Skipping {
    /// How far the scan for the newline has got.
    scanned_to: u64,
}

/// A followed file.
#[derive(Debug)]
struct Tracked {
    state: FileState,
    /// Open handle: it keeps a deleted or renamed file readable to its end.
    file: Option<File>,
    /// Whether the last scan found it under one of the source patterns.
    seen: bool,
    unseen_scans: u32,
    /// Its last link is gone: read it to its end, then forget it.
    deleted: bool,
    skipping: Option<Skipping>,
    /// Truncation was detected but not yet committed.
    pending_truncation: bool,
}

/// An untracked file that starts like a followed one: a copytruncate copy.
/// It is read only once its original is truncated or gone, from where the
/// original was left, so nothing in it is read twice.
#[derive(Debug, Clone, Copy)]
struct Copy {
    of: u64,
}

/// The file follower. See the module documentation.
pub struct Tailer {
    sources: Sources,
    max_line: usize,
    read_size: usize,
    files: BTreeMap<u64, Tracked>,
    next_id: u64,
    /// Paths that could not be opened, with the error, reported once each.
    unreadable: BTreeMap<String, String>,
    /// Files truncated in recent scans, with the scans each is kept for: a
    /// copytruncate copy may be listed a scan after the truncation is seen.
    replaced: Vec<(Replaced, u32)>,
}

/// A file truncated or replaced in this scan, for copytruncate detection.
struct Replaced {
    id: u64,
    dir: PathBuf,
    name: String,
    fp: Fingerprint,
    offset: u64,
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn dir_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Tailer {
    /// A tailer resuming from committed checkpoints.
    pub fn new(config: &TailConfig, states: Vec<FileState>) -> Tailer {
        let next_id = states.iter().map(|s| s.id).max().unwrap_or(0) + 1;
        let files = states
            .into_iter()
            .map(|state| {
                (
                    state.id,
                    Tracked {
                        state,
                        file: None,
                        seen: false,
                        unseen_scans: 0,
                        deleted: false,
                        skipping: None,
                        pending_truncation: false,
                    },
                )
            })
            .collect();
        Tailer {
            sources: Sources::new(&config.sources, config.follow_rotated),
            max_line: config.max_line_bytes,
            read_size: config.read_batch_bytes.max(config.max_line_bytes + 2),
            files,
            next_id,
            unreadable: BTreeMap::new(),
            replaced: Vec::new(),
        }
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Checkpoints of every followed file, as the tailer has them.
    pub fn states(&self) -> Vec<FileState> {
        self.files.values().map(|t| t.state.clone()).collect()
    }

    /// Files that matched a pattern but could not be opened, with why.
    pub fn unreadable(&self) -> &BTreeMap<String, String> {
        &self.unreadable
    }

    /// Looks for new, rotated, truncated and deleted files.
    pub fn scan(&mut self) {
        let mut found: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
        for path in self.sources.expand() {
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => found.push((path, meta)),
                Ok(_) => {}
                // Vanished between the listing and the stat: next scan.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.note_unreadable(&path, &e),
            }
        }
        let mut by_inode: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, (_, meta)) in found.iter().enumerate() {
            by_inode.entry(dev_ino(meta)).or_insert(i);
        }

        // 1. Followed files: where are they now, and are they still whole?
        let mut claimed = BTreeSet::new();
        self.replaced.retain_mut(|(_, left)| {
            *left -= 1;
            *left > 0
        });
        let mut replaced = std::mem::take(&mut self.replaced);
        let mut forget = Vec::new();
        for (&id, t) in self.files.iter_mut() {
            let key = (t.state.dev, t.state.ino);
            let Some(&i) = by_inode.get(&key) else {
                t.seen = false;
                let deleted = t
                    .file
                    .as_ref()
                    .and_then(|f| f.metadata().ok())
                    .is_some_and(|m| m.nlink() == 0);
                t.deleted = deleted;
                if !deleted {
                    t.unseen_scans += 1;
                    if t.file.is_none() && t.unseen_scans >= UNSEEN_SCANS_BEFORE_FORGET {
                        // Gone while we held no handle (e.g. while stopped).
                        forget.push(id);
                    }
                }
                continue;
            };
            let (path, meta) = &found[i];
            t.seen = true;
            t.unseen_scans = 0;
            t.deleted = false;
            let path_str = path.display().to_string();
            if t.state.path != path_str {
                tracing::info!(id, from = %t.state.path, to = %path_str, "file renamed (rotation)");
                t.state.path = path_str;
            }
            if t.file.is_none() {
                match File::open(path) {
                    Ok(f) => match f.metadata() {
                        Ok(m) if dev_ino(&m) == key => t.file = Some(f),
                        _ => continue, // replaced between stat and open: next scan
                    },
                    Err(e) => {
                        Self::report_unreadable(&mut self.unreadable, path, &e);
                        continue;
                    }
                }
            }
            let file = t.file.as_ref().expect("opened above");
            let len = meta.len();
            let whole =
                len >= t.state.offset && t.state.fingerprint().matches(file, len).unwrap_or(false);
            claimed.insert(i);
            if !whole {
                tracing::warn!(
                    file = %t.state.path, offset = t.state.offset, len,
                    "file was truncated or replaced in place (copytruncate?): reading it again from the start"
                );
                replaced.push((
                    Replaced {
                        id,
                        dir: dir_of(path),
                        name: name_of(path),
                        fp: t.state.fingerprint(),
                        offset: t.state.offset,
                    },
                    UNSEEN_SCANS_BEFORE_FORGET,
                ));
                let fp = Fingerprint::of(file, len).unwrap_or(Fingerprint { len: 0, crc: 0 });
                t.state.offset = 0;
                t.state.fp_len = fp.len;
                t.state.fp = fp.crc;
                t.skipping = None;
                t.pending_truncation = true;
            }
        }
        for id in forget {
            if let Some(t) = self.files.remove(&id) {
                tracing::info!(file = %t.state.path, offset = t.state.offset, "file is gone; forgetting it");
            }
        }

        // 2. New files. Copies of followed files wait for their original.
        self.replaced = replaced;
        for (i, (path, meta)) in found.iter().enumerate() {
            if claimed.contains(&i) || by_inode.get(&dev_ino(meta)) != Some(&i) {
                continue;
            }
            let file = match File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    Self::report_unreadable(&mut self.unreadable, path, &e);
                    continue;
                }
            };
            self.unreadable.remove(&path.display().to_string());
            let Ok(meta) = file.metadata() else { continue };
            if dev_ino(&meta) != dev_ino(&found[i].1) {
                continue; // replaced between stat and open: next scan
            }
            let len = meta.len();
            let mut offset = 0;
            match self.copy_of(path, &file, len) {
                Some((Copy { of }, Some(from))) => {
                    tracing::info!(file = %path.display(), of, offset = from, "copy of a truncated file: reading it from where the original was left");
                    offset = from.min(len);
                }
                Some((Copy { of }, None)) => {
                    tracing::debug!(file = %path.display(), of, "copy of a followed file; waiting for the original to be truncated");
                    continue;
                }
                None => {}
            }
            let Ok(fp) = Fingerprint::of(&file, len) else {
                continue;
            };
            let id = self.next_id;
            self.next_id += 1;
            let (dev, ino) = dev_ino(&meta);
            tracing::info!(id, file = %path.display(), offset, "following new file");
            self.files.insert(
                id,
                Tracked {
                    state: FileState {
                        id,
                        path: path.display().to_string(),
                        dev,
                        ino,
                        fp_len: fp.len,
                        fp: fp.crc,
                        offset,
                        counters: Counters::default(),
                    },
                    file: Some(file),
                    seen: true,
                    unseen_scans: 0,
                    deleted: false,
                    skipping: None,
                    pending_truncation: false,
                },
            );
        }
    }

    /// Whether an untracked `path` is a copy of a followed file (a
    /// copytruncate rotation: named `<original>.<suffix>` beside it, and
    /// starting with the original's fingerprinted bytes). With `Some(offset)`
    /// when the original has been truncated, so the copy's unread part
    /// starts there; `None` while the original is still whole.
    fn copy_of(&self, path: &Path, file: &File, len: u64) -> Option<(Copy, Option<u64>)> {
        let dir = dir_of(path);
        let name = name_of(path);
        let is_sibling = |orig_dir: &Path, orig_name: &str| {
            orig_dir == dir
                && name.len() > orig_name.len() + 1
                && name.starts_with(orig_name)
                && name.as_bytes()[orig_name.len()] == b'.'
        };
        let same_start = |fp: &Fingerprint| fp.len > 0 && fp.matches(file, len).unwrap_or(false);
        for (r, _) in &self.replaced {
            if is_sibling(&r.dir, &r.name) && same_start(&r.fp) {
                return Some((Copy { of: r.id }, Some(r.offset)));
            }
        }
        for (&id, t) in &self.files {
            let p = Path::new(&t.state.path);
            if is_sibling(&dir_of(p), &name_of(p)) && same_start(&t.state.fingerprint()) {
                return Some((Copy { of: id }, None));
            }
        }
        None
    }

    fn note_unreadable(&mut self, path: &Path, e: &io::Error) {
        Self::report_unreadable(&mut self.unreadable, path, e);
    }

    fn report_unreadable(map: &mut BTreeMap<String, String>, path: &Path, e: &io::Error) {
        let key = path.display().to_string();
        if !map.contains_key(&key) {
            tracing::error!(file = %key, error = %e, "cannot open log file; will retry on every scan");
        }
        map.insert(key, e.to_string());
    }

    /// The next batch of lines, from the lowest-numbered file that has
    /// something to take (older rotations were numbered first, so their
    /// rows go out before the newer file's). `None`: nothing to read now.
    pub fn read(&mut self) -> Option<Batch> {
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            match self.read_file(id) {
                Ok(Some(batch)) => return Some(batch),
                Ok(None) => {}
                Err(e) => {
                    let t = &self.files[&id];
                    tracing::error!(file = %t.state.path, offset = t.state.offset, error = %e, "read failed; will retry");
                }
            }
        }
        None
    }

    fn read_file(&mut self, id: u64) -> io::Result<Option<Batch>> {
        let max_line = self.max_line;
        let read_size = self.read_size;
        let t = self.files.get_mut(&id).expect("id from keys");
        let Some(file) = t.file.as_ref() else {
            return Ok(None);
        };
        let len = file.metadata()?.len();
        let mut state = t.state.clone();
        let mut delta = Counters::default();
        if t.pending_truncation {
            delta.truncations += 1;
        }
        // Deleted, or renamed away from every pattern for several scans.
        let gone = t.deleted || (!t.seen && t.unseen_scans >= UNSEEN_SCANS_BEFORE_FORGET);

        if let Some(skip) = t.skipping {
            // Looking for the end of a too-long line, without keeping it.
            let mut pos = skip.scanned_to;
            let mut chunk = vec![0u8; 64 * 1024];
            while pos < len {
                let n = file.read_at(&mut chunk, pos)?;
                if n == 0 {
                    break;
                }
                if let Some(i) = memchr(&chunk[..n]) {
                    let end = pos + i as u64 + 1;
                    tracing::warn!(file = %state.path, offset = state.offset, bytes = end - state.offset - 1, max_line, "skipping line longer than tail.max_line_bytes");
                    delta.lines += 1;
                    delta.oversized += 1;
                    state.offset = end;
                    t.skipping = None;
                    return Ok(Some(Batch {
                        state,
                        buf: Vec::new(),
                        lines: Vec::new(),
                        delta,
                        forget: false,
                    }));
                }
                pos += n as u64;
            }
            t.skipping = Some(Skipping { scanned_to: pos });
            return Ok(gone.then(|| self.finish(id, len)));
        }

        if len <= state.offset {
            if gone {
                return Ok(Some(self.finish(id, len)));
            }
            if t.pending_truncation {
                return Ok(Some(Batch {
                    state,
                    buf: Vec::new(),
                    lines: Vec::new(),
                    delta,
                    forget: false,
                }));
            }
            return Ok(None);
        }
        let want = (len - state.offset).min(read_size as u64) as usize;
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            let n = file.read_at(&mut buf[got..], state.offset + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        buf.truncate(got);

        let mut lines = Vec::new();
        let mut pos = 0;
        while let Some(i) = memchr(&buf[pos..]) {
            let start = pos;
            let mut end = pos + i;
            pos = end + 1;
            if end > start && buf[end - 1] == b'\r' {
                end -= 1;
            }
            let offset = state.offset + start as u64;
            delta.lines += 1;
            if end - start > max_line {
                delta.oversized += 1;
                tracing::warn!(file = %state.path, offset, bytes = end - start, max_line, "skipping line longer than tail.max_line_bytes");
            } else if let Err(e) = std::str::from_utf8(&buf[start..end]) {
                delta.invalid_utf8 += 1;
                tracing::warn!(file = %state.path, offset, error = %e, "skipping line: invalid UTF-8");
            } else {
                lines.push(Line { offset, start, end });
            }
        }
        let partial = buf.len() - pos;
        if partial > max_line + 1 {
            // No newline within the limit: skip the line, find its end later.
            t.skipping = Some(Skipping {
                scanned_to: state.offset + buf.len() as u64,
            });
        }
        if pos == 0 {
            // Only a partial line: hold it until its newline arrives (or,
            // for a too-long one, until the skip finds its end).
            if gone && t.skipping.is_none() {
                return Ok(Some(self.finish(id, len)));
            }
            if !t.pending_truncation {
                return Ok(None);
            }
        }
        state.offset += pos as u64;
        if state.fp_len < FINGERPRINT_BYTES as u32 && len > u64::from(state.fp_len) {
            // The file has grown: widen its fingerprint (its start was verified).
            let fp = Fingerprint::of(file, len)?;
            state.fp_len = fp.len;
            state.fp = fp.crc;
        }
        Ok(Some(Batch {
            state,
            buf,
            lines,
            delta,
            forget: false,
        }))
    }

    /// The last batch of a file that is gone: what could not be taken (an
    /// unterminated last line) is counted, and the checkpoint is dropped.
    fn finish(&mut self, id: u64, len: u64) -> Batch {
        let t = &self.files[&id];
        let mut state = t.state.clone();
        let mut delta = Counters::default();
        if t.pending_truncation {
            delta.truncations += 1;
        }
        if len > state.offset {
            delta.unterminated += 1;
            tracing::warn!(file = %state.path, offset = state.offset, "file is gone with an unterminated last line; dropping it");
            state.offset = len;
        }
        Batch {
            state,
            buf: Vec::new(),
            lines: Vec::new(),
            delta,
            forget: true,
        }
    }

    /// Adopts a batch's checkpoint once the caller has committed it.
    pub fn committed(&mut self, batch: &Batch) {
        let id = batch.state.id;
        if batch.forget {
            if let Some(t) = self.files.remove(&id) {
                tracing::info!(file = %t.state.path, offset = batch.state.offset, "file deleted and read to its end; forgetting it");
            }
            return;
        }
        if let Some(t) = self.files.get_mut(&id) {
            let mut state = batch.state.clone();
            state.counters = t.state.counters;
            state.counters.add(&batch.delta);
            t.state = state;
            t.pending_truncation = false;
        }
    }

    /// Forgets what reading `batch` changed, after its commit failed, so
    /// that the same lines are read again.
    pub fn abandon(&mut self, batch: &Batch) {
        if let Some(t) = self.files.get_mut(&batch.state.id) {
            t.skipping = None;
        }
    }

    /// Closes the handles of files that are read to their end and still
    /// present, so that thousands of finished rotations do not hold
    /// thousands of descriptors; a later scan reopens one that grows.
    pub fn close_idle(&mut self) {
        for t in self.files.values_mut() {
            let at_end = t
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| m.len() == t.state.offset && m.nlink() > 0);
            if t.seen && at_end && t.skipping.is_none() && !t.pending_truncation {
                t.file = None;
            }
        }
    }

    /// Number of open file handles.
    pub fn open_files(&self) -> usize {
        self.files.values().filter(|t| t.file.is_some()).count()
    }
}

fn memchr(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', hay)
}

#[cfg(test)]
mod tests;
