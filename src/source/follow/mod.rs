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
mod kinship;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::ops::Bound::{Excluded, Unbounded};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::config::{SourceConfig, SourceKind, TailConfig};
use crate::source::framing;
pub use crate::source::framing::Record;
use crate::stats::Counters;
pub use discover::{order_key, rotation_number, Found, Sources};
use identity::{dev_ino, head, CheckpointIdentity, Fingerprint, FINGERPRINT_BYTES};
use kinship::Copy;

pub use crate::journal::FileState;

/// How many scans a file may go unseen (while still existing somewhere)
/// before it is forgotten. A rename racing with a scan can hide a file for
/// one scan; forgetting it then would read it again from 0 when it shows
/// up under its new name.
const UNSEEN_SCANS_BEFORE_FORGET: u32 = 3;

/// Records read from one file and the checkpoint that taking them leads to.
#[derive(Debug)]
pub struct Batch {
    /// The file's checkpoint after this batch (counters not yet added).
    pub state: FileState,
    buf: Vec<u8>,
    /// Complete records in file order: for `lines` files valid UTF-8 lines
    /// of at most `max_line_bytes`; for event files verified frames; for
    /// documents the whole file.
    pub records: Vec<Record>,
    /// What the tailer counted (lines, bad encodings, oversized, ...).
    pub delta: Counters,
    /// After committing, the file is finished and its checkpoint can go.
    pub forget: bool,
}

impl Batch {
    /// A batch that takes no line but moves the checkpoint (a skipped
    /// line's end, a truncation, a copy's start) or forgets the file.
    fn without_lines(state: FileState, delta: Counters, forget: bool) -> Batch {
        Batch {
            state,
            buf: Vec::new(),
            records: Vec::new(),
            delta,
            forget,
        }
    }

    /// A record's bytes.
    pub fn bytes(&self, record: &Record) -> &[u8] {
        &self.buf[record.start..record.end]
    }

    /// Bytes read for this batch (its records' and what framing left).
    pub fn buf_len(&self) -> usize {
        self.buf.len()
    }

    /// A line's text (a record of a `lines` file, validated when read).
    pub fn text(&self, record: &Record) -> &str {
        std::str::from_utf8(self.bytes(record)).expect("lines are validated when read")
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
    /// A copy that starts past 0: its checkpoint must be committed even
    /// if there is nothing to read, or a restart would read it from 0.
    needs_commit: bool,
    /// Length and modification time when its handle was closed at its
    /// end: a scan that finds both unchanged need not open it again.
    closed: Option<(u64, i64)>,
}

/// How long a file read to its end must have gone unmodified before its
/// handle is closed as soon as it is found at its end (a finished run's
/// log); a file still being written keeps its handle.
const CLOSE_UNMODIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// What a scan looks at: everything the sources match, or only what is at
/// or below some paths (the ones file-system events named).
enum Scope<'a> {
    All,
    Paths(&'a [PathBuf]),
}

impl Scope<'_> {
    fn covers(&self, path: &Path) -> bool {
        match self {
            Scope::All => true,
            Scope::Paths(paths) => paths.iter().any(|p| path.starts_with(p)),
        }
    }
}

/// Where a file stands in [`Tailer::read`]'s order: copies' starting
/// points (by id), then event files not read yet, then everything (both by
/// reading order); the id last.
type ReadyKey = (u8, u64, u64);

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
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
    /// Checkpoints dropped by the tailer that the journal still holds.
    to_forget: Vec<FileState>,
    /// Each file's place in reading order (see [`Tailer::reorder`]).
    rank: HashMap<u64, u64>,
    /// Files that may have something to take, in the order `read` takes
    /// them: filled by scans and commits, emptied as files are found to
    /// have nothing, so that a read costs what is ready, not what is known.
    ready: BTreeSet<ReadyKey>,
    ready_key: HashMap<u64, ReadyKey>,
    /// Followed files by identity, by path and by rotation family, kept
    /// with the order (see [`Tailer::reorder`]), for targeted scans and
    /// copy detection that do not visit every file.
    by_inode: HashMap<(u64, u64), u64>,
    by_path: BTreeMap<PathBuf, u64>,
    /// `by_path` for exact lookups: comparing paths in a tree of 10,000
    /// is component by component, hashing one is not.
    at_path: HashMap<PathBuf, u64>,
    families: HashMap<PathBuf, Vec<u64>>,
    /// What the last scan listed, to tell a listing that races with a
    /// rotation from a settled one.
    last_listing: Vec<Found>,
    /// Run between a scan's look at the followed files and its look at
    /// the new ones, so that tests can make a rotation race with a scan.
    #[cfg(test)]
    mid_scan: Option<Box<dyn FnMut() + Send>>,
    /// Rotation families where a read found its file truncated: the next
    /// scan, even a targeted one, looks there for the copy.
    look_for_copies: BTreeSet<PathBuf>,
    /// Rotation families with a batch read but neither committed nor
    /// abandoned yet. `read` passes them by, so that the caller can gather
    /// batches of many files for one commit: a file's next batch starts
    /// where its last committed one ended, and an older rotation's rows
    /// must go before its successor's.
    /// Each such family with the file whose batch holds it.
    in_flight: HashMap<PathBuf, u64>,
}

/// How many times one scan lists the sources again while they change.
const MAX_RELISTS: u32 = 4;

/// A file truncated or replaced in this scan, for copytruncate detection.
struct Replaced {
    path: String,
    /// Its first bytes before truncation, when this process saw them.
    head: Vec<u8>,
    fp: Fingerprint,
    offset: u64,
    kind: SourceKind,
}

impl Replaced {
    /// What a checkpoint says its file was.
    fn of(state: &FileState) -> Replaced {
        Replaced {
            path: state.path.clone(),
            head: state.head.clone(),
            fp: state.fingerprint(),
            offset: state.offset,
            kind: state.kind,
        }
    }
}

/// `x.log` for `x.log`, `x.log.1`, `x.log.2`: the files one log rotates through.
fn rotation_family(p: &Path) -> PathBuf {
    match rotation_number(p) {
        Some(_) => p.with_extension(""),
        None => p.to_path_buf(),
    }
}

impl Tailer {
    /// A tailer resuming from committed checkpoints.
    pub fn new(config: &TailConfig, sources: &[SourceConfig], states: Vec<FileState>) -> Tailer {
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
                        needs_commit: false,
                        closed: None,
                    },
                )
            })
            .collect();
        let mut tailer = Tailer {
            sources: Sources::new(sources, config.follow_rotated),
            max_line: config.max_line_bytes,
            read_size: config.read_batch_bytes.max(config.max_line_bytes + 2),
            files,
            next_id,
            unreadable: BTreeMap::new(),
            replaced: Vec::new(),
            to_forget: Vec::new(),
            rank: HashMap::new(),
            ready: BTreeSet::new(),
            ready_key: HashMap::new(),
            by_inode: HashMap::new(),
            by_path: BTreeMap::new(),
            at_path: HashMap::new(),
            families: HashMap::new(),
            last_listing: Vec::new(),
            #[cfg(test)]
            mid_scan: None,
            look_for_copies: BTreeSet::new(),
            in_flight: HashMap::new(),
        };
        tailer.reorder();
        tailer
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Marks a followed file as not to be read (see `FileState::ignored`);
    /// the caller commits the returned checkpoint.
    pub fn ignore(&mut self, id: u64, why: &str) -> Option<FileState> {
        let t = self.files.get_mut(&id)?;
        t.state.ignored = Some(why.to_string());
        let state = t.state.clone();
        self.mark_ready(id);
        Some(state)
    }

    /// Checkpoints of every followed file, as the tailer has them.
    pub fn states(&self) -> Vec<FileState> {
        self.files.values().map(|t| t.state.clone()).collect()
    }

    /// Files that matched a pattern but could not be opened, with why.
    pub fn unreadable(&self) -> &BTreeMap<String, String> {
        &self.unreadable
    }

    /// Looks for new, rotated, truncated and deleted files: everything the
    /// sources match. Also the periodic check that catches what events
    /// missed.
    pub fn scan(&mut self) {
        self.scan_in(&Scope::All);
    }

    /// A scan of only what is at or below `paths` (those file-system
    /// events named): the files there are judged as a full scan would
    /// judge them, files elsewhere are left as they are. Paths that no
    /// source matches and no followed file is at are dropped first, so
    /// events about the agent's own outputs cost a pattern match.
    pub fn scan_paths(&mut self, paths: &[PathBuf]) {
        let wanted: Vec<PathBuf> = paths
            .iter()
            .filter(|p| {
                self.at_path.contains_key(*p)
                    || self.sources.source_of(p).is_some()
                    || p.is_dir()
                    || self
                        .by_path
                        .range(p.to_path_buf()..)
                        .next()
                        .is_some_and(|(q, _)| q.starts_with(p))
            })
            .cloned()
            .collect();
        if !wanted.is_empty() {
            self.scan_in(&Scope::Paths(&wanted));
        }
    }

    /// Files whose data events said were written to (`written`), beside the
    /// paths other events named (`named`): a followed file that is open,
    /// still linked and no shorter than its checkpoint is only made ready
    /// (its read checks that its start is unchanged); any other path, and
    /// any in a rotation family that is scanned anyway (a copytruncate's
    /// copy and original are judged together), is returned for a targeted
    /// scan. A hundred runs written at once then cost a hundred reads per
    /// look, not a hundred listings.
    pub fn note_written(
        &mut self,
        written: impl IntoIterator<Item = PathBuf>,
        named: &BTreeSet<PathBuf>,
    ) -> Vec<PathBuf> {
        let mut scan = Vec::new();
        let mut ready = Vec::new();
        for path in written {
            let whole = self.at_path.get(&path).is_some_and(|id| {
                let t = &self.files[id];
                !t.deleted
                    && t.seen
                    && t.file
                        .as_ref()
                        .and_then(|f| f.metadata().ok())
                        .is_some_and(|m| m.nlink() > 0 && m.len() >= t.state.offset)
            });
            if whole {
                ready.push(path);
            } else {
                scan.push(path);
            }
        }
        let scanned: HashSet<PathBuf> = scan
            .iter()
            .chain(named)
            .map(|p| rotation_family(p))
            .collect();
        for path in ready {
            if scanned.contains(&rotation_family(&path)) {
                scan.push(path);
            } else {
                let id = self.at_path[&path];
                self.mark_ready(id);
            }
        }
        scan
    }

    fn scan_in(&mut self, scope: &Scope) {
        let mut found: Vec<(PathBuf, std::fs::Metadata, usize)> = Vec::new();
        for Found { path, source } in self.stable_listing(scope) {
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => found.push((path, meta, source)),
                // A FIFO, socket or device named like a log: reading would
                // block or never end. Skipped, logged once, listed (and
                // counted) with the unreadable files.
                Ok(meta) if !meta.is_dir() => {
                    let key = path.display().to_string();
                    if !self.unreadable.contains_key(&key) {
                        tracing::warn!(file = %key, "skipping: not a regular file (a FIFO, socket or device)");
                    }
                    self.unreadable
                        .insert(key, "not a regular file; skipped".into());
                }
                Ok(_) => {}
                // Vanished between the listing and the stat: next scan.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => self.note_unreadable(&path, &e),
            }
        }
        let mut by_inode: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, (_, meta, _)) in found.iter().enumerate() {
            by_inode.entry(dev_ino(meta)).or_insert(i);
        }
        // The followed files this scan judges: all of them, or those found
        // in its listing and those last seen where it looked.
        let ids: Vec<u64> = match scope {
            Scope::All => self.files.keys().copied().collect(),
            Scope::Paths(paths) => {
                let mut ids: BTreeSet<u64> = by_inode
                    .keys()
                    .filter_map(|k| self.by_inode.get(k).copied())
                    .collect();
                for p in paths.iter() {
                    ids.extend(
                        self.by_path
                            .range(p.clone()..)
                            .take_while(|(q, _)| q.starts_with(p))
                            .map(|(_, &id)| id),
                    );
                }
                ids.into_iter().collect()
            }
        };
        let mut changed = false;
        let mut touched = Vec::new();

        // 1. Followed files: where are they now, and are they still whole?
        let mut claimed = BTreeSet::new();
        // Kept for full scans only: targeted ones (every write to the
        // original is an event) may not look where the copy is.
        self.replaced.retain_mut(|(_, left)| {
            if matches!(scope, Scope::All) {
                *left -= 1;
            }
            *left > 0
        });
        let mut replaced = std::mem::take(&mut self.replaced);
        let known_replaced = replaced.len();
        let mut forget = Vec::new();
        let mut dropped = Vec::new();
        for id in ids {
            let Some(t) = self.files.get_mut(&id) else {
                continue;
            };
            let key = (t.state.dev, t.state.ino);
            let Some(&i) = by_inode.get(&key) else {
                if !scope.covers(Path::new(&t.state.path)) {
                    continue; // moved out of where this scan looked: a later one
                }
                t.seen = false;
                let deleted = t
                    .file
                    .as_ref()
                    .and_then(|f| f.metadata().ok())
                    .is_some_and(|m| m.nlink() == 0);
                t.deleted = deleted;
                // Still readable through our handle: it may also have been
                // truncated before it went away.
                if let Some(was) = Self::check_whole(t) {
                    replaced.push((was, UNSEEN_SCANS_BEFORE_FORGET));
                }
                if !deleted {
                    t.unseen_scans += 1;
                    if t.file.is_none() && t.unseen_scans >= UNSEEN_SCANS_BEFORE_FORGET {
                        // Gone while we held no handle (e.g. while stopped).
                        forget.push(id);
                    }
                }
                touched.push(id);
                continue;
            };
            let (path, meta, _) = &found[i];
            t.seen = true;
            t.unseen_scans = 0;
            t.deleted = false;
            let path_str = path.display().to_string();
            let len = meta.len();
            if t.file.is_none() && t.closed == Some((len, mtime_ns(meta))) {
                // Closed at its end and untouched since: nothing to look at.
                claimed.insert(i);
                if t.state.path != path_str {
                    tracing::info!(id, from = %t.state.path, to = %path_str, "file renamed (rotation)");
                    t.state.path = path_str;
                    changed = true;
                }
                continue;
            }
            let reopened = t.file.is_none();
            if reopened {
                match File::open(path) {
                    Ok(f) => match f.metadata() {
                        Ok(m) if dev_ino(&m) == key => {
                            t.file = Some(f);
                            t.closed = None;
                        }
                        _ => continue, // replaced between stat and open: next scan
                    },
                    Err(e) => {
                        Self::report_unreadable(&mut self.unreadable, path, &e);
                        continue;
                    }
                }
            }
            touched.push(id);
            let file = t.file.as_ref().expect("opened above");
            let whole =
                len >= t.state.offset && t.state.fingerprint().matches(file, len).unwrap_or(false);
            let was = Replaced::of(&t.state);
            // A checkpoint of an empty file (offset 0, nothing fingerprinted)
            // cannot tell its file from a newcomer on a reused inode, and
            // has nothing to lose: judge the path as new.
            let unverifiable = reopened && t.state.fp_len == 0;
            // Reopened under another name while the file at its own path
            // has its content too: the inode was reused (by a copy of a
            // restored file, say), the file is the one at its path.
            let displaced = reopened
                && whole
                && t.state.path != path_str
                && kinship::held_at_own_path(&t.state, key);
            if (!whole || unverifiable || displaced) && reopened {
                // A checkpoint whose inode now holds other content: the file
                // was replaced (inode reuse after delete) or truncated while
                // we held no handle. Either way it is a new file: drop the
                // checkpoint and let the path be judged as new, copies and
                // all; what the old file was is kept for copy detection.
                tracing::info!(file = %path.display(), was = %t.state.path, offset = t.state.offset, "file no longer matches its checkpoint; treating it as new");
                t.file = None;
                replaced.push((was, UNSEEN_SCANS_BEFORE_FORGET));
                dropped.push(id);
                continue;
            }
            claimed.insert(i);
            if t.state.path != path_str {
                tracing::info!(id, from = %t.state.path, to = %path_str, "file renamed (rotation)");
                t.state.path = path_str;
                changed = true;
            }
            if whole && u64::from(t.state.fp_len) < FINGERPRINT_BYTES.min(len) {
                // Widen the fingerprint now that the file is longer, so a
                // copy made of it is recognised as one.
                if let Ok(bytes) = head(file, len) {
                    t.state.set_head(bytes);
                }
            }
            if !whole {
                Self::restart_file(t, len);
                replaced.push((was, UNSEEN_SCANS_BEFORE_FORGET));
            }
        }
        for id in forget {
            if let Some(t) = self.files.remove(&id) {
                tracing::info!(file = %t.state.path, offset = t.state.offset, "file is gone; forgetting it");
                // A copy of it found later starts where it was left.
                replaced.push((Replaced::of(&t.state), UNSEEN_SCANS_BEFORE_FORGET));
                self.to_forget.push(t.state);
                changed = true;
            }
        }
        for id in dropped {
            if let Some(t) = self.files.remove(&id) {
                self.to_forget.push(t.state);
                changed = true;
            }
        }
        let mut families = std::mem::take(&mut self.look_for_copies);
        families.extend(
            replaced[known_replaced..]
                .iter()
                .map(|(r, _)| rotation_family(Path::new(&r.path))),
        );
        if matches!(scope, Scope::Paths(_)) && !families.is_empty() {
            // A truncation seen by a targeted scan (events named only the
            // original) or by a read: look for its copy now, in its family.
            let dirs: Vec<PathBuf> = families
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for Found { path, source } in self.sources.expand_paths(&dirs) {
                if !families.contains(&rotation_family(&path))
                    || found.iter().any(|(p, ..)| *p == path)
                {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let key = dev_ino(&meta);
                if meta.is_file()
                    && !self.by_inode.contains_key(&key)
                    && !by_inode.contains_key(&key)
                {
                    by_inode.insert(key, found.len());
                    found.push((path, meta, source));
                }
            }
        }
        if changed {
            // Copy detection below looks files up by family and path.
            self.reorder();
            changed = false;
        }

        #[cfg(test)]
        if let Some(f) = self.mid_scan.as_mut() {
            f();
        }

        // 2. New files. Copies of followed files wait for their original;
        // a followed file restored under a new inode goes on where it was.
        self.replaced = replaced;
        let mut fresh = Vec::new();
        for (i, (path, meta, source)) in found.iter().enumerate() {
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
            let Ok(bytes) = head(&file, meta.len()) else {
                continue;
            };
            fresh.push((path.clone(), file, meta, bytes, *source));
        }
        // Restored files: those found where the file they restore was
        // first, so that a copy of a restored file is not taken for it.
        for same_path in [true, false] {
            let mut i = 0;
            while i < fresh.len() {
                let (path, file, meta, bytes, _) = &fresh[i];
                match self.restored(path, file, meta.len(), bytes, same_path) {
                    Some(id) => {
                        let (path, file, meta, bytes, _) = fresh.remove(i);
                        self.adopt(id, &path, file, &meta, bytes);
                        touched.push(id);
                        changed = true;
                    }
                    None => i += 1,
                }
            }
        }
        // Restored where a dropped checkpoint's file was (its inode was
        // reused by the time the agent looked): a new checkpoint, at the
        // old one's offset.
        let mut restored_at: HashMap<PathBuf, u64> = HashMap::new();
        for (path, file, meta, bytes, _) in &fresh {
            if let Some(index) = self.restored_replaced(path, file, meta.len(), bytes) {
                let (r, _) = self.replaced.remove(index);
                tracing::info!(file = %path.display(), offset = r.offset, "file with the content of one followed there before (restored from a backup?): reading it from where that one was left");
                restored_at.insert(path.clone(), r.offset);
            }
        }
        // New files by rotation family: a copy is looked for among its own
        // family only, not among every file.
        let mut fresh_families: HashMap<PathBuf, Vec<usize>> = HashMap::new();
        for (i, (path, ..)) in fresh.iter().enumerate() {
            fresh_families
                .entry(rotation_family(path))
                .or_default()
                .push(i);
        }
        // Decide for all before following any: a copy and its original may
        // both be new in this scan.
        let mut decisions: Vec<Option<u64>> = Vec::with_capacity(fresh.len());
        for (path, file, meta, bytes, source) in &fresh {
            if let Some(&offset) = restored_at.get(path) {
                decisions.push(Some(offset));
                continue;
            }
            if self.sources.get(*source).kind != SourceKind::Lines {
                decisions.push(Some(0)); // only line files are rotated by copying
                continue;
            }
            let others = fresh_families
                .get(&rotation_family(path))
                .into_iter()
                .flatten()
                .map(|&j| &fresh[j])
                .filter(|(p, ..)| p != path)
                .map(|(p, _, _, b, _)| (p.as_path(), b.as_slice()));
            decisions.push(match self.copy_of(path, bytes, file, meta.len(), others) {
                Copy::From { of, offset, index } => {
                    tracing::info!(file = %path.display(), of = %of, offset, "copy of a truncated file: reading it from where the original was left");
                    // One truncation, one copy: a second file beginning
                    // alike (a copy still being made of the original's
                    // new content) is not this copy.
                    if let Some(index) = index {
                        self.replaced.remove(index);
                    }
                    Some(offset.min(meta.len()))
                }
                Copy::Wait(of) => {
                    tracing::debug!(file = %path.display(), of = %of, "rotated file that is, or may become, a copy of a followed one: waiting for the original to be truncated");
                    None
                }
                Copy::No => Some(0),
            });
        }
        for ((path, file, meta, bytes, source), decision) in fresh.into_iter().zip(decisions) {
            let Some(offset) = decision else { continue };
            let id = self.next_id;
            self.next_id += 1;
            let (dev, ino) = dev_ino(&meta);
            let source = self.sources.get(source);
            tracing::info!(id, file = %path.display(), offset, source = %source.name, kind = source.kind.as_str(), "following new file");
            let mut state = FileState {
                id,
                path: path.display().to_string(),
                dev,
                ino,
                fp_len: 0,
                fp: 0,
                offset,
                head: Vec::new(),
                counters: Counters::default(),
                source: source.name.clone(),
                kind: source.kind,
                ..FileState::default()
            };
            state.set_head(bytes);
            self.files.insert(
                id,
                Tracked {
                    state,
                    file: Some(file),
                    seen: true,
                    unseen_scans: 0,
                    deleted: false,
                    skipping: None,
                    pending_truncation: false,
                    needs_commit: offset > 0,
                    closed: None,
                },
            );
            touched.push(id);
            changed = true;
        }
        if changed {
            self.reorder();
        }
        for id in touched {
            if self.files.get(&id).is_some_and(|t| t.file.is_some()) {
                self.mark_ready(id);
            }
        }
    }

    /// The paths matching the sources, listed again while they keep
    /// changing under us. A directory listing that races with a rotation
    /// (renames of `x.log.N` to `x.log.N+1`, oldest first) can miss the
    /// file being renamed; found in a later scan it would be read after
    /// the newer files of its family, out of order. A listing equal to the
    /// previous scan's is taken at once, so an idle scan lists once.
    fn stable_listing(&mut self, scope: &Scope) -> Vec<Found> {
        let paths = match scope {
            Scope::All => None,
            Scope::Paths(p) => Some(*p),
        };
        let list = |s: &Sources| match paths {
            None => s.expand(),
            Some(p) => s.expand_paths(p),
        };
        let mut listing = list(&self.sources);
        let mut previous = match paths {
            None => std::mem::take(&mut self.last_listing),
            // A targeted look is listed twice: it has no previous scan.
            Some(_) => Vec::new(),
        };
        let mut tries = 0;
        while listing != previous && tries < MAX_RELISTS {
            previous = listing;
            listing = list(&self.sources);
            tries += 1;
        }
        if paths.is_none() {
            self.last_listing.clone_from(&listing);
        }
        listing
    }

    /// Rebuilds the reading order (by rotation family, oldest file first,
    /// whatever order the files were discovered in) and the indexes kept
    /// with it; the ready files are placed anew in it.
    fn reorder(&mut self) {
        let mut order: Vec<(u64, (PathBuf, std::cmp::Reverse<u64>))> = self
            .files
            .iter()
            .map(|(&id, t)| (id, order_key(Path::new(&t.state.path))))
            .collect();
        order.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
        self.rank.clear();
        self.families.clear();
        for (rank, (id, (family, _))) in order.into_iter().enumerate() {
            self.rank.insert(id, rank as u64);
            self.families.entry(family).or_default().push(id);
        }
        self.by_inode = self
            .files
            .iter()
            .map(|(&id, t)| ((t.state.dev, t.state.ino), id))
            .collect();
        // One file per path: a file renamed onto the path of one deleted
        // but not yet read to its end is the one there.
        self.by_path = BTreeMap::new();
        for (&id, t) in &self.files {
            let path = PathBuf::from(&t.state.path);
            match self.by_path.get(&path) {
                Some(other) if !self.files[other].deleted && t.deleted => {}
                _ => {
                    self.by_path.insert(path, id);
                }
            }
        }
        self.at_path = self
            .by_path
            .iter()
            .map(|(p, &id)| (p.clone(), id))
            .collect();
        let ready: Vec<u64> = self.ready_key.keys().copied().collect();
        for id in ready {
            self.mark_ready(id);
        }
    }

    /// Puts a file among those `read` looks at, at its place in the order.
    fn mark_ready(&mut self, id: u64) {
        let Some(t) = self.files.get(&id) else {
            self.unready(id);
            return;
        };
        let rank = self.rank.get(&id).copied().unwrap_or(u64::MAX);
        let s = &t.state;
        let key = if t.needs_commit {
            (0, id, id)
        } else if s.kind == SourceKind::Tfevents && s.offset == 0 && s.ignored.is_none() {
            (1, rank, id)
        } else {
            (2, rank, id)
        };
        if let Some(old) = self.ready_key.insert(id, key) {
            self.ready.remove(&old);
        }
        self.ready.insert(key);
    }

    fn unready(&mut self, id: u64) {
        if let Some(old) = self.ready_key.remove(&id) {
            self.ready.remove(&old);
        }
    }
    /// For a file we hold open: if it was truncated or rewritten in place,
    /// start it again from 0 and return what it was.
    fn check_whole(t: &mut Tracked) -> Option<Replaced> {
        let file = t.file.as_ref()?;
        let len = file.metadata().ok()?.len();
        let whole =
            len >= t.state.offset && t.state.fingerprint().matches(file, len).unwrap_or(false);
        if whole {
            return None;
        }
        let was = Replaced::of(&t.state);
        Self::restart_file(t, len);
        Some(was)
    }

    fn restart_file(t: &mut Tracked, len: u64) {
        if t.state.kind == SourceKind::Document {
            // Documents are rewritten as a matter of course.
            tracing::debug!(file = %t.state.path, "document rewritten; reading it again");
        } else {
            tracing::warn!(
                file = %t.state.path, offset = t.state.offset, len,
                "file was truncated or rewritten in place (copytruncate?): reading it again from the start"
            );
        }
        let bytes = t
            .file
            .as_ref()
            .and_then(|f| head(f, len).ok())
            .unwrap_or_default();
        t.state.set_head(bytes);
        t.state.offset = 0;
        t.skipping = None;
        t.pending_truncation = true;
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

    /// The next batch of lines, from the first file in reading order that
    /// has something to take (older rotations first, so their rows go out
    /// before the newer file's). `None`: nothing to read now.
    pub fn read(&mut self) -> Option<Batch> {
        if let Some(state) = self.to_forget.pop() {
            return Some(Batch::without_lines(state, Counters::default(), true));
        }
        // Copies' starting points go first: committed before the truncation
        // of their original, a crash between the two cannot lose the link.
        // Event files not read yet go next: their first record says whose
        // they are (a worker's or the agent's own), which decides how the
        // run's log lines are taken, so it is best known before them. Then
        // the rest in reading order. Only files that may have something
        // are visited (`ready`, see `mark_ready`); one found to have
        // nothing leaves the set until a scan or an event brings it back.
        // Families with a batch in flight are passed by.
        let mut after: Option<ReadyKey> = None;
        loop {
            let next = match after {
                None => self.ready.first(),
                Some(k) => self.ready.range((Excluded(k), Unbounded)).next(),
            };
            let &key = next?;
            let id = key.2;
            let Some(t) = self.files.get(&id) else {
                self.unready(id); // forgotten since the last scan
                continue;
            };
            // A family is a path to build: only when one can be in flight.
            if !self.in_flight.is_empty()
                && self
                    .in_flight
                    .contains_key(&rotation_family(Path::new(&t.state.path)))
            {
                after = Some(key);
                continue;
            }
            match self.read_file(id) {
                Ok(Some(batch)) => {
                    if !batch.forget {
                        let family = rotation_family(Path::new(&batch.state.path));
                        self.in_flight.insert(family, id);
                    }
                    return Some(batch);
                }
                Ok(None) => {
                    self.unready(id);
                    self.close_if_finished(id);
                }
                Err(e) => {
                    self.unready(id);
                    let t = &self.files[&id];
                    tracing::error!(file = %t.state.path, offset = t.state.offset, error = %e, "read failed; will retry");
                }
            }
        }
    }

    /// Whether the next batch [`Tailer::read`] returns, if any, may be one
    /// that forgets a checkpoint; those are committed on their own.
    pub fn forget_pending(&self) -> bool {
        !self.to_forget.is_empty()
    }

    /// Ends a batch's time in flight: its family can be read again.
    fn land(&mut self, batch: &Batch) {
        self.in_flight.retain(|_, id| *id != batch.state.id);
    }

    /// Closes the handle of a file that has nothing to read and has not
    /// been modified for a while (a finished run's log), so that open
    /// descriptors stay bounded by the files being written; a scan opens
    /// it again if its length or modification time moves.
    fn close_if_finished(&mut self, id: u64) {
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        let Some(meta) = t.file.as_ref().and_then(|f| f.metadata().ok()) else {
            return;
        };
        let quiet = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|d| d >= CLOSE_UNMODIFIED_FOR);
        if quiet && Self::at_rest(t, &meta) {
            t.closed = Some((meta.len(), mtime_ns(&meta)));
            t.file = None;
        }
    }

    /// Whether a file's handle can go: everything in it is taken (or it is
    /// not read at all) and it is still where a scan will find it.
    fn at_rest(t: &Tracked, meta: &std::fs::Metadata) -> bool {
        let taken = t.state.ignored.is_some() || meta.len() == t.state.offset;
        t.seen
            && !t.deleted
            && meta.nlink() > 0
            && taken
            && t.skipping.is_none()
            && !t.pending_truncation
            && !t.needs_commit
    }

    fn read_file(&mut self, id: u64) -> io::Result<Option<Batch>> {
        let t = self.files.get(&id).expect("id from keys");
        if t.file.is_none() {
            return Ok(None);
        }
        match t.state.kind {
            _ if t.state.ignored.is_some() => self.read_ignored(id),
            SourceKind::Lines => self.read_lines(id),
            SourceKind::Tfevents => self.read_frames(id),
            SourceKind::Document => self.read_document(id),
        }
    }

    /// A file followed for its identity only: nothing is read; it is
    /// forgotten when it goes.
    fn read_ignored(&mut self, id: u64) -> io::Result<Option<Batch>> {
        let t = &self.files[&id];
        let gone = t.deleted || (!t.seen && t.unseen_scans >= UNSEEN_SCANS_BEFORE_FORGET);
        if gone {
            return Ok(Some(Batch::without_lines(
                t.state.clone(),
                Counters::default(),
                true,
            )));
        }
        if t.needs_commit {
            // A new identity (see `Tailer::adopt`) to commit.
            let state = t.state.clone();
            return Ok(Some(Batch::without_lines(
                state,
                Counters::default(),
                false,
            )));
        }
        Ok(None)
    }

    /// Event files: TFRecord frames, each verified by its checksums. A
    /// frame cut at the end of the file waits for the rest of it.
    fn read_frames(&mut self, id: u64) -> io::Result<Option<Batch>> {
        let max_record = self.max_line;
        let read_size = self.read_size;
        let t = self.files.get_mut(&id).expect("id from keys");
        let file = t.file.as_ref().expect("checked by read_file");
        let len = file.metadata()?.len();
        let state = t.state.clone();
        let mut delta = Counters::default();
        if t.pending_truncation {
            delta.truncations += 1;
        }
        let gone = t.deleted || (!t.seen && t.unseen_scans >= UNSEEN_SCANS_BEFORE_FORGET);
        if len <= state.offset {
            if gone {
                return Ok(Some(self.finish(id, len)));
            }
            if t.pending_truncation || t.needs_commit {
                return Ok(Some(Batch::without_lines(state, delta, false)));
            }
            return Ok(None);
        }
        // A window that holds any frame within the limit whole, so the
        // framing never has to ask for more (format::tfrecord::min_window).
        let window = read_size.max(crate::format::tfrecord::min_window(max_record)) as u64;
        let buf = read_at_most(file, state.offset, (len - state.offset).min(window))?;
        let cut = framing::tfrecords(&buf, state.offset, max_record, len, &state.path);
        if cut.consumed == 0 && cut.records.is_empty() {
            // Only part of a frame so far: wait for the rest.
            if gone {
                return Ok(Some(self.finish(id, len)));
            }
            if !t.pending_truncation && !t.needs_commit {
                return Ok(None);
            }
        }
        Ok(Some(Self::frames_batch(t, state, buf, cut, delta, len)))
    }

    fn frames_batch(
        t: &mut Tracked,
        mut state: FileState,
        buf: Vec<u8>,
        cut: framing::Cut,
        mut delta: Counters,
        len: u64,
    ) -> Batch {
        delta.add(&cut.delta);
        state.offset += cut.consumed as u64;
        if state.fp_len < FINGERPRINT_BYTES as u32 && len > u64::from(state.fp_len) {
            if let Some(bytes) = t.file.as_ref().and_then(|f| head(f, len).ok()) {
                state.set_head(bytes);
            }
        }
        Batch {
            state,
            buf,
            records: cut.records,
            delta,
            forget: false,
        }
    }

    /// Documents: read whole whenever the file's length or modification
    /// time moved since it was last read; a document being written (that
    /// does not parse yet) is simply read again when it changes next.
    fn read_document(&mut self, id: u64) -> io::Result<Option<Batch>> {
        let max = self.max_line;
        let t = self.files.get_mut(&id).expect("id from keys");
        let file = t.file.as_ref().expect("checked by read_file");
        let meta = file.metadata()?;
        let len = meta.len();
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let gone = t.deleted || (!t.seen && t.unseen_scans >= UNSEEN_SCANS_BEFORE_FORGET);
        if gone {
            let mut batch = Batch::without_lines(t.state.clone(), Counters::default(), true);
            batch.state.offset = len;
            return Ok(Some(batch));
        }
        if len == t.state.offset && mtime_ns == t.state.mtime_ns && !t.pending_truncation {
            return Ok(None);
        }
        let mut state = t.state.clone();
        let mut delta = Counters {
            lines: 1,
            ..Counters::default()
        };
        state.offset = len;
        state.mtime_ns = mtime_ns;
        if len as usize > max {
            delta.oversized += 1;
            tracing::warn!(file = %state.path, bytes = len, max, "skipping document longer than tail.max_line_bytes");
            return Ok(Some(Batch::without_lines(state, delta, false)));
        }
        let buf = read_at_most(file, 0, len)?;
        if let Ok(bytes) = head(file, len) {
            state.set_head(bytes);
        }
        if std::str::from_utf8(&buf).is_err() {
            delta.invalid_utf8 += 1;
            tracing::warn!(file = %state.path, "skipping document: invalid UTF-8");
            return Ok(Some(Batch::without_lines(state, delta, false)));
        }
        let end = buf.len();
        Ok(Some(Batch {
            state,
            buf,
            records: vec![Record {
                offset: 0,
                start: 0,
                end,
            }],
            delta,
            forget: false,
        }))
    }

    /// Line files: complete lines; a partial last line waits for its
    /// newline, a too-long one is skipped without holding it in memory.
    fn read_lines(&mut self, id: u64) -> io::Result<Option<Batch>> {
        let max_line = self.max_line;
        let read_size = self.read_size;
        let t = self.files.get_mut(&id).expect("id from keys");
        let Some(file) = t.file.as_ref() else {
            return Ok(None);
        };
        let meta = file.metadata()?;
        let len = meta.len();
        // Every line read below was written by then: an upper bound of
        // when a line without a time of its own was printed.
        let mtime_ns = mtime_ns(&meta);
        if len > t.state.offset && t.skipping.is_none() {
            // Truncated and written past our offset again since the last
            // scan (copytruncate under a busy writer): reading on at the
            // old offset would take the middle of other lines. So the
            // file's first bytes are checked before each read.
            if let Some(was) = Self::check_whole(t) {
                self.look_for_copies
                    .insert(rotation_family(Path::new(&was.path)));
                self.replaced.push((was, UNSEEN_SCANS_BEFORE_FORGET));
                return self.read_lines(id);
            }
        }
        let t = self.files.get_mut(&id).expect("id from keys");
        let file = t.file.as_ref().expect("checked above");
        let mut state = t.state.clone();
        state.mtime_ns = mtime_ns;
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
                    return Ok(Some(Batch::without_lines(state, delta, false)));
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
            if t.pending_truncation || t.needs_commit {
                return Ok(Some(Batch::without_lines(state, delta, false)));
            }
            return Ok(None);
        }
        let buf = read_at_most(
            file,
            state.offset,
            (len - state.offset).min(read_size as u64),
        )?;
        let cut = framing::lines(&buf, state.offset, max_line, &state.path);
        delta.add(&cut.delta);
        let pos = cut.consumed;
        let records = cut.records;
        let partial = buf.len() - pos;
        if partial > max_line + 1 {
            // No newline within the limit: skip the line, find its end later.
            t.skipping = Some(Skipping {
                scanned_to: state.offset + buf.len() as u64,
            });
        }
        if pos == 0 {
            if t.skipping.is_some() && !t.pending_truncation && !t.needs_commit {
                // A too-long line from the start: go and find its end now.
                return self.read_lines(id);
            }
            // Only a partial line: hold it until its newline arrives (or,
            // for a too-long one, until the skip finds its end).
            if gone && t.skipping.is_none() {
                return Ok(Some(self.finish(id, len)));
            }
            if !t.pending_truncation && !t.needs_commit {
                return Ok(None);
            }
        }
        state.offset += pos as u64;
        if state.fp_len < FINGERPRINT_BYTES as u32 && len > u64::from(state.fp_len) {
            // The file has grown: widen its fingerprint (its start was verified).
            state.set_head(head(file, len)?);
        }
        Ok(Some(Batch {
            state,
            buf,
            records,
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
        Batch::without_lines(state, delta, true)
    }

    /// Adopts a batch's checkpoint once the caller has committed it.
    pub fn committed(&mut self, batch: &Batch) {
        self.land(batch);
        let id = batch.state.id;
        if batch.forget {
            if let Some(t) = self.files.remove(&id) {
                tracing::info!(file = %t.state.path, offset = batch.state.offset, "file deleted and read to its end; forgetting it");
                self.unready(id);
                // Its path may be another file's now (a rotation renamed
                // one onto it): the indexes must say so.
                self.reorder();
                // A copy of it found later starts where it was left.
                self.replaced
                    .push((Replaced::of(&batch.state), UNSEEN_SCANS_BEFORE_FORGET));
            }
            return;
        }
        if let Some(t) = self.files.get_mut(&id) {
            let mut state = batch.state.clone();
            state.counters = t.state.counters;
            state.counters.add(&batch.delta);
            t.state = state;
            t.pending_truncation = false;
            t.needs_commit = false;
            // Its class in the reading order may have changed; it stays
            // ready until a read finds nothing more in it.
            self.mark_ready(id);
        }
    }

    /// Forgets what reading `batch` changed, after its commit failed, so
    /// that the same lines are read again.
    pub fn abandon(&mut self, batch: &Batch) {
        self.land(batch);
        if let Some(t) = self.files.get_mut(&batch.state.id) {
            t.skipping = None;
        }
    }

    /// Closes the handles of files that are read to their end and still
    /// present, so that thousands of finished rotations do not hold
    /// thousands of descriptors; a later scan reopens one that grows.
    pub fn close_idle(&mut self) {
        for t in self.files.values_mut() {
            let Some(meta) = t.file.as_ref().and_then(|f| f.metadata().ok()) else {
                continue;
            };
            if Self::at_rest(t, &meta) {
                t.closed = Some((meta.len(), mtime_ns(&meta)));
                t.file = None;
            }
        }
    }

    /// Number of open file handles.
    pub fn open_files(&self) -> usize {
        self.files.values().filter(|t| t.file.is_some()).count()
    }
}

/// Up to `want` bytes of `file` from `offset` (fewer if it is shorter).
fn read_at_most(file: &File, offset: u64, want: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; want as usize];
    let mut got = 0;
    while got < buf.len() {
        let n = file.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}

fn memchr(hay: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', hay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, SystemTime};

    fn tailer(root: &Path) -> Tailer {
        let source = SourceConfig {
            name: "logs".into(),
            kind: SourceKind::Lines,
            paths: vec![format!("{}/runs/*/logs/*.log", root.display())],
            exclude: Vec::new(),
            run_id_from_path: None,
            console: Vec::new(),
        };
        Tailer::new(&TailConfig::default(), &[source], Vec::new())
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    /// Everything readable now, as (path's run, line) pairs.
    fn drain(t: &mut Tailer) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            let Some(batch) = t.read() else { return out };
            for r in &batch.records {
                out.push(batch.text(r).to_string());
            }
            t.committed(&batch);
        }
        panic!("the tailer never ran dry");
    }

    fn age(path: &Path) {
        let old = SystemTime::now() - Duration::from_secs(3600);
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(old).unwrap();
    }

    /// The log directories of runs A and B under `root`, created.
    fn two_runs(root: &Path) -> (PathBuf, PathBuf) {
        let (a, b) = (root.join("runs/A/logs"), root.join("runs/B/logs"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        (a, b)
    }

    #[test]
    fn a_targeted_scan_takes_what_changed_where_it_looked_and_leaves_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_runs(dir.path());
        append(&a.join("w.log"), "a1\n");
        append(&b.join("w.log"), "b1\n");
        let mut t = tailer(dir.path());
        t.scan();
        assert_eq!(drain(&mut t), ["a1", "b1"]);
        append(&a.join("w.log"), "a2\n");
        append(&b.join("w.log"), "b2\n");
        // A new run directory, and a path no source matches.
        let c = dir.path().join("runs/C/logs");
        std::fs::create_dir_all(&c).unwrap();
        append(&c.join("w.log"), "c1\n");
        t.scan_paths(&[
            a.join("w.log"),
            dir.path().join("runs/C"),
            dir.path().join("runs/A/shipper/rows.jsonl"),
        ]);
        assert_eq!(drain(&mut t), ["a2", "c1"], "B was not looked at");
        // A rotation seen through its events: the renamed file keeps its
        // identity, the new one starts at 0.
        std::fs::rename(a.join("w.log"), a.join("w.log.1")).unwrap();
        append(&a.join("w.log.1"), "a3\n");
        append(&a.join("w.log"), "a4\n");
        t.scan_paths(&[a.join("w.log"), a.join("w.log.1")]);
        assert_eq!(drain(&mut t), ["a3", "a4"]);
        t.scan();
        assert_eq!(drain(&mut t), ["b2"], "the full scan finds the rest");
    }

    /// A data event on a followed file that is still whole makes it ready
    /// without a scan; a shorter file, an unknown path, or one whose
    /// rotation family other events named goes to a targeted scan.
    #[test]
    fn a_write_to_a_whole_followed_file_is_read_without_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_runs(dir.path());
        let (a, b) = (a.join("w.log"), b.join("w.log"));
        append(&a, "a1\n");
        append(&b, "b1\n");
        let mut t = tailer(dir.path());
        t.scan();
        assert_eq!(drain(&mut t), ["a1", "b1"]);
        append(&a, "a2\n");
        File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_len(0)
            .unwrap();
        let none = BTreeSet::new();
        assert_eq!(t.note_written([a.clone(), b.clone()], &none), [b]);
        assert_eq!(drain(&mut t), ["a2"], "read without a scan");
        let c = dir.path().join("runs/C/logs/w.log");
        assert_eq!(t.note_written([c.clone()], &none), [c]);
        append(&a, "a3\n");
        let rotated = BTreeSet::from([a.with_extension("log.1")]);
        let scanned = t.note_written([a.clone()], &rotated);
        assert_eq!(scanned, [a]);
        assert!(drain(&mut t).is_empty(), "left to the scan of its family");
    }

    /// Batches read before the earlier ones are committed (the ingest
    /// gathers them for one commit): other runs' files come, a file or
    /// rotation family already in flight does not, until its batch lands;
    /// an abandoned batch is read again from where it started.
    #[test]
    fn batches_in_flight_hold_back_their_family_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_runs(dir.path());
        append(&a.join("w.log.1"), "a-old\n");
        append(&a.join("w.log"), "a-new\n");
        append(&b.join("w.log"), "b1\n");
        let mut t = tailer(dir.path());
        t.scan();
        let text = |batch: &Batch| -> Vec<String> {
            batch
                .records
                .iter()
                .map(|r| batch.text(r).to_string())
                .collect()
        };
        let first = t.read().unwrap();
        assert_eq!(text(&first), ["a-old"], "the older rotation first");
        let second = t.read().unwrap();
        assert_eq!(text(&second), ["b1"], "A's family waits for its batch");
        assert!(
            t.read().is_none(),
            "nothing else outside the families in flight"
        );
        t.abandon(&second);
        let again = t.read().unwrap();
        assert_eq!(text(&again), ["b1"], "an abandoned batch is read again");
        t.committed(&first);
        t.committed(&again);
        assert_eq!(drain(&mut t), ["a-new"]);
        append(&b.join("w.log"), "b2\n");
        t.scan();
        assert_eq!(drain(&mut t), ["b2"], "B resumes after what was committed");
    }

    /// logrotate finishes the copy and truncates the original between a
    /// scan's look at the original (still whole) and its look at the copy
    /// (listed while empty): the copy is still known for one, and read
    /// from where the original was left once the truncation is seen.
    #[test]
    fn a_copy_completed_during_a_scan_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("runs/A/logs");
        std::fs::create_dir_all(&logs).unwrap();
        let (log, copy) = (logs.join("w.log"), logs.join("w.log.1"));
        let old: String = (0..20)
            .map(|i| format!("line {i:04} of the original, long enough to matter\n"))
            .collect();
        append(&log, &old);
        let mut t = tailer(dir.path());
        t.scan();
        assert_eq!(drain(&mut t).len(), 20);
        std::fs::write(&copy, "").unwrap();
        let (l, c) = (log.clone(), copy.clone());
        t.mid_scan = Some(Box::new(move || {
            std::fs::write(&c, &old).unwrap();
            File::options()
                .write(true)
                .open(&l)
                .unwrap()
                .set_len(0)
                .unwrap();
            append(&l, "new 1\n");
        }));
        t.scan();
        t.mid_scan = None;
        let mut got = drain(&mut t);
        t.scan();
        got.extend(drain(&mut t));
        assert_eq!(got, ["new 1"]);
    }

    #[test]
    fn a_finished_file_is_closed_and_opened_again_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("runs/A/logs");
        std::fs::create_dir_all(&logs).unwrap();
        let done = logs.join("done.log");
        let live = logs.join("live.log");
        append(&done, "d1\n");
        append(&live, "l1\n");
        age(&done);
        let mut t = tailer(dir.path());
        t.scan();
        assert_eq!(drain(&mut t), ["d1", "l1"]);
        assert_eq!(t.open_files(), 1, "the finished file's handle is closed");
        for _ in 0..3 {
            t.scan();
            assert_eq!(drain(&mut t), Vec::<String>::new());
            assert_eq!(t.open_files(), 1, "an unchanged file is not reopened");
        }
        append(&done, "d2\n");
        t.scan();
        assert_eq!(t.open_files(), 2);
        assert_eq!(drain(&mut t), ["d2"]);
        // Replaced in place by other content of the same length while
        // closed: judged as a new file, read from its start.
        age(&done);
        t.close_idle();
        assert_eq!(t.open_files(), 0);
        std::fs::write(&done, "x1\nx2\n").unwrap();
        t.scan();
        assert_eq!(drain(&mut t), ["x1", "x2"]);
    }
}
