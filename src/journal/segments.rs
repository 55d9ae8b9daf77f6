//! Row segment files: the journal's row blocks, kept outside sled's tree.
//!
//! sled 0.34 writes a tree node larger than a quarter of its segment as a
//! blob file, and row blocks (up to ~200 KB each) made leaf nodes that
//! large; those blob files were not reliably removed, so the store grew
//! with every run even when every row was delivered. Blocks now go to
//! append-only files under `journal/segments/` that the journal owns and
//! deletes; sled keeps only each block's location (24 bytes in the
//! `blocks` tree), the file offsets, cursors and counters.
//!
//! "Rows and file offsets in one transaction" still holds because of the
//! order of writes: a block is appended to the active segment first, then
//! the sled transaction that records its location (and the file offsets)
//! commits. A crash between the two leaves bytes past the last recorded
//! block, which the next open cuts off ([`Segments::open`]). A segment is
//! deleted once no recorded block is in it, and only after sled has made
//! that removal durable, so sled never comes back pointing into a file
//! that is gone. The flusher ([`Flusher`]) syncs the segment files before
//! each sled flush, so a location sled made durable points at bytes that
//! are durable too (sled may write its own buffers earlier than its flush
//! on a power loss; a block lost that way fails its checksum and the store
//! is refused, it is never skipped).
//!
//! A file: the 8-byte [`MAGIC`], then records: the first row's sequence
//! number (u64), the sealed block's length (u32), the block sealed with
//! its sequence number as key (codec.rs: crc32c over both).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::codec::{key_u64, seal, u64_key, unseal};

/// Written at the start of every segment file (format 3 of the journal).
const MAGIC: &[u8; 8] = b"MSROWS\x00\x03";
/// A record's header: first sequence number and sealed length.
const HEADER: u64 = 12;
/// A segment takes no more blocks once it is this long: the bytes of
/// delivered rows a partly delivered segment keeps on disk.
pub(super) const SEGMENT_BYTES: u64 = 8 << 20;
/// The active segment is deleted when every row in it is delivered and it
/// is at least this long: shorter, it is kept for the next rows, so that a
/// trickle (every commit delivered at once) does not create and delete a
/// file per commit. At most this much stays after everything is
/// delivered, until the next open deletes it.
pub(super) const RETIRE_BYTES: u64 = 1 << 20;
/// How often the flusher makes the journal durable until the agent says
/// otherwise ([`Flusher::set_interval`]: the sinks' shortest flush
/// interval, since no sink can deliver a row sooner anyway, and a sink
/// flushes the journal itself before it writes outside it).
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Where a block is: its segment, offset and record length, and its row
/// count (so that reads and deletions need not open the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub segment: u64,
    pub offset: u64,
    pub len: u64,
    pub rows: u64,
}

impl Location {
    pub fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..16].copy_from_slice(&self.offset.to_be_bytes());
        out[16..20].copy_from_slice(&(self.len as u32).to_be_bytes());
        out[20..].copy_from_slice(&(self.rows as u32).to_be_bytes());
        out
    }

    pub fn decode(v: &[u8]) -> Result<Location, String> {
        if v.len() != 24 {
            return Err(format!("block location of {} bytes, not 24", v.len()));
        }
        let u32_at = |i: usize| u32::from_be_bytes(v[i..i + 4].try_into().expect("4 bytes")) as u64;
        Ok(Location {
            segment: key_u64(&v[..8]).expect("8 bytes"),
            offset: key_u64(&v[8..16]).expect("8 bytes"),
            len: u32_at(16),
            rows: u32_at(20),
        })
    }

    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The segment files of one journal, and the one being appended to.
pub(super) struct Segments {
    dir: PathBuf,
    state: Mutex<State>,
    /// The segment last read from, kept open: every sink reads every
    /// block, mostly from the same file, and opening it per block was
    /// most of what a trickle into many runs cost the journal.
    reader: Mutex<Option<(u64, Arc<File>)>>,
}

/// What the lock of [`Segments`] guards: commits hold it from the append
/// to the end of their sled transaction, so that a deletion (and the
/// flusher) sees every block written to a file recorded in sled.
pub(super) struct State {
    /// Every segment file: id (first sequence number in it) -> length.
    files: BTreeMap<u64, u64>,
    /// The segment being appended to.
    active: Option<(u64, File)>,
    /// Files written since the last sync, and whether a file was created
    /// (the directory needs a sync too).
    unsynced: Vec<File>,
    dir_unsynced: bool,
    /// Whether the active segment was written since the last sync.
    dirty: bool,
    /// The first write or sync error (the journal stops on it).
    failed: Option<String>,
}

/// Why a segment operation failed: the file system said no (a full disk),
/// or what was read is not what was written.
#[derive(Debug)]
pub(super) enum SegmentError {
    Io(String),
    Damaged { what: String, detail: String },
}

pub(super) fn file_name(id: u64) -> String {
    format!("{id:016x}.seg")
}

fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

impl Segments {
    /// The segments under `dir`, checked against the recorded blocks:
    /// `first` and `last` are the locations of the oldest and newest block
    /// sled recorded. With `repair`, bytes past the last recorded block are
    /// cut off and files holding no recorded block are deleted (what a
    /// crash between an append and its commit, or between a commit and a
    /// deletion, leaves); without it (inspection) nothing is changed.
    pub fn open(
        dir: &Path,
        first: Option<Location>,
        last: Option<Location>,
        repair: bool,
    ) -> Result<Segments, SegmentError> {
        let io = |what: &str, e: std::io::Error| {
            SegmentError::Io(format!("{what} {}: {e}", dir.display()))
        };
        if repair {
            crate::util::create_private_dir(dir).map_err(|e| io("cannot create", e))?;
        }
        let mut files = BTreeMap::new();
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(|e| io("cannot list", e))?;
                    if let Some(id) = parse_name(&e.file_name().to_string_lossy()) {
                        let len = e
                            .metadata()
                            .map_err(|e| io("cannot stat a file in", e))?
                            .len();
                        files.insert(id, len);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !repair => {}
            Err(e) => return Err(io("cannot list", e)),
        }
        let segments = Segments {
            dir: dir.to_path_buf(),
            state: Mutex::new(State {
                files: BTreeMap::new(),
                active: None,
                unsynced: Vec::new(),
                dir_unsynced: false,
                dirty: false,
                failed: None,
            }),
            reader: Mutex::new(None),
        };
        if let Some(last) = last {
            let path = segments.path(last.segment);
            match files.get(&last.segment) {
                None => {
                    return Err(SegmentError::Damaged {
                        what: format!("segment file {}", path.display()),
                        detail: format!(
                            "it is missing, and the journal records rows in it up to byte {}",
                            last.end()
                        ),
                    })
                }
                Some(&len) if len < last.end() => {
                    return Err(SegmentError::Damaged {
                        what: format!("segment file {}", path.display()),
                        detail: format!(
                            "it is {len} bytes long, and the journal records rows in it up to \
                             byte {}",
                            last.end()
                        ),
                    })
                }
                Some(&len) if len > last.end() && repair => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| io("cannot open a file in", e))?;
                    f.set_len(last.end())
                        .and_then(|()| f.sync_all())
                        .map_err(|e| {
                            SegmentError::Io(format!("cannot cut {}: {e}", path.display()))
                        })?;
                    tracing::info!(file = %path.display(), from = len, to = last.end(), "cut off the rows a crash left uncommitted");
                    files.insert(last.segment, last.end());
                }
                Some(_) => {}
            }
        }
        let keep = |id: u64| match (first, last) {
            (Some(f), Some(l)) => id >= f.segment && id <= l.segment,
            _ => false,
        };
        let mut st = segments.lock();
        for (id, len) in files {
            if keep(id) {
                // The one part of a file no block's checksum covers.
                let path = segments.path(id);
                let mut magic = [0u8; 8];
                let read = File::open(&path).and_then(|f| f.read_exact_at(&mut magic, 0));
                if read.is_err() || &magic != MAGIC {
                    return Err(SegmentError::Damaged {
                        what: format!("segment file {}", path.display()),
                        detail: "it does not start as a row segment does".into(),
                    });
                }
            }
            if keep(id) || !repair {
                st.files.insert(id, len);
            } else {
                let path = segments.path(id);
                std::fs::remove_file(&path).map_err(|e| {
                    SegmentError::Io(format!("cannot delete {}: {e}", path.display()))
                })?;
            }
        }
        drop(st);
        Ok(segments)
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.join(file_name(id))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the file of a recorded block is there and long enough.
    pub fn check(&self, loc: &Location) -> Result<(), String> {
        match self.lock().files.get(&loc.segment) {
            None => Err(format!("{} is missing", self.path(loc.segment).display())),
            Some(&len) if len < loc.end() => Err(format!(
                "{} is {len} bytes long, a block is recorded at bytes {}..{}",
                self.path(loc.segment).display(),
                loc.offset,
                loc.end()
            )),
            Some(_) => Ok(()),
        }
    }

    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.lock().files.values().sum()
    }

    /// Reads the block recorded at `loc` for the rows from `first`,
    /// checked against its checksum.
    pub fn read(&self, first: u64, loc: &Location) -> Result<Vec<u8>, SegmentError> {
        let path = self.path(loc.segment);
        let damaged = |detail: String| SegmentError::Damaged {
            what: format!(
                "rows #{first}..#{} in {} at byte {}",
                first + loc.rows.max(1) - 1,
                path.display(),
                loc.offset
            ),
            detail,
        };
        let file = {
            let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
            match reader.as_ref() {
                Some((id, f)) if *id == loc.segment => f.clone(),
                _ => match File::open(&path) {
                    Ok(f) => {
                        let f = Arc::new(f);
                        *reader = Some((loc.segment, f.clone()));
                        f
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(damaged(format!("the segment file is missing ({e})")))
                    }
                    Err(e) => return Err(SegmentError::Io(format!("{}: {e}", path.display()))),
                },
            }
        };
        let mut buf = vec![0u8; loc.len as usize];
        if let Err(e) = file.read_exact_at(&mut buf, loc.offset) {
            return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged("the segment file ends before the block".into())
            } else {
                SegmentError::Io(format!("{}: {e}", path.display()))
            });
        }
        if loc.len < HEADER || key_u64(&buf[..8]) != Some(first) {
            return Err(damaged(format!(
                "the record there is not that block (it names row #{})",
                key_u64(buf.get(..8).unwrap_or_default()).unwrap_or_default()
            )));
        }
        let sealed_len = u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes")) as u64;
        if sealed_len + HEADER != loc.len {
            return Err(damaged(format!(
                "the record's length says {sealed_len} bytes, the journal {}",
                loc.len - HEADER
            )));
        }
        let value = unseal(&u64_key(first), &buf[HEADER as usize..]).map_err(damaged)?;
        let n = value.len();
        buf.copy_within(HEADER as usize..HEADER as usize + n, 0);
        buf.truncate(n);
        Ok(buf)
    }
}

impl State {
    /// Appends `block` (the rows from `first`) to the active segment,
    /// starting a new one when there is none or it is full. The caller
    /// records the returned location in sled while still holding the lock.
    pub fn append(
        &mut self,
        segments: &Segments,
        first: u64,
        block: &[u8],
    ) -> Result<Location, SegmentError> {
        if let Some(e) = &self.failed {
            return Err(SegmentError::Io(format!(
                "the row segments failed earlier ({e})"
            )));
        }
        let full = match &self.active {
            Some((id, _)) => self.files.get(id).copied().unwrap_or(0) >= SEGMENT_BYTES,
            None => true,
        };
        if full {
            self.start(segments, first)?;
        }
        let (id, file) = self.active.as_ref().expect("started above");
        let id = *id;
        let offset = self.files[&id];
        let sealed = seal(&u64_key(first), block);
        let mut record = Vec::with_capacity(HEADER as usize + sealed.len());
        record.extend_from_slice(&u64_key(first));
        record.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        record.extend_from_slice(&sealed);
        let path = segments.path(id);
        if let Err(e) = file.write_all_at(&record, offset) {
            let text = format!("cannot write {}: {e}", path.display());
            self.failed = Some(text.clone());
            return Err(SegmentError::Io(text));
        }
        self.files.insert(id, offset + record.len() as u64);
        self.dirty = true;
        Ok(Location {
            segment: id,
            offset,
            len: record.len() as u64,
            rows: super::codec::block_len(block).unwrap_or(0),
        })
    }

    /// Starts segment `id`; the one before stays to be synced.
    fn start(&mut self, segments: &Segments, id: u64) -> Result<(), SegmentError> {
        let path = segments.path(id);
        let fail = |st: &mut State, e: std::io::Error| {
            let text = format!("cannot create {}: {e}", path.display());
            st.failed = Some(text.clone());
            SegmentError::Io(text)
        };
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => return Err(fail(self, e)),
        };
        if let Err(e) = file.write_all(MAGIC) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(fail(self, e));
        }
        if let Some((_, old)) = self.active.take() {
            self.unsynced.push(old);
        }
        self.files.insert(id, MAGIC.len() as u64);
        self.active = Some((id, file));
        self.dir_unsynced = true;
        Ok(())
    }

    /// Syncs what was written since the last sync (the caller flushes
    /// sled after it, still holding the lock).
    pub fn sync(&mut self, segments: &Segments) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut files = std::mem::take(&mut self.unsynced);
        if let Some((_, f)) = self.active.as_ref().filter(|_| self.dirty) {
            if let Ok(f) = f.try_clone() {
                files.push(f);
            }
        }
        self.dirty = false;
        for f in &files {
            if let Err(e) = f.sync_data() {
                let text = format!(
                    "cannot sync a row segment under {}: {e}",
                    segments.dir.display()
                );
                self.failed = Some(text.clone());
                return Err(text);
            }
        }
        if self.dir_unsynced {
            if let Err(e) = File::open(&segments.dir).and_then(|d| d.sync_all()) {
                let text = format!("cannot sync {}: {e}", segments.dir.display());
                self.failed = Some(text.clone());
                return Err(text);
            }
            self.dir_unsynced = false;
        }
        Ok(())
    }

    /// The segments that hold no recorded block, given the segment of the
    /// oldest block still recorded (`None`: none is): every older one,
    /// and the active one too when it is long enough to be retired.
    pub fn unused(&self, oldest: Option<u64>) -> Vec<u64> {
        let active = self.active.as_ref().map(|(id, _)| *id);
        self.files
            .iter()
            .filter(|(&id, &len)| match oldest {
                Some(o) => id < o,
                None => Some(id) != active || len >= RETIRE_BYTES,
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// Deletes segments [`State::unused`] named, once sled has made the
    /// removal of their blocks durable (the caller flushed it).
    pub fn delete(&mut self, segments: &Segments, ids: &[u64]) -> Result<(), String> {
        {
            let mut reader = segments.reader.lock().unwrap_or_else(|p| p.into_inner());
            if reader.as_ref().is_some_and(|(id, _)| ids.contains(id)) {
                *reader = None;
            }
        }
        for id in ids {
            if self.active.as_ref().is_some_and(|(a, _)| a == id) {
                self.active = None;
            }
            let path = segments.path(*id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete {}: {e}", path.display())),
            }
            self.files.remove(id);
        }
        Ok(())
    }
}

/// The thread that makes the journal durable at its interval:
/// segment files synced, then sled flushed, under the segments' lock (so
/// that no block is recorded between the two). It replaces sled's own
/// flusher, which could make a block's location durable before the block.
pub(super) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Milliseconds between flushes; read before each wait.
    interval_ms: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    pub fn start(segments: Arc<Segments>, db: sled::Db, store: PathBuf) -> Flusher {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let interval_ms = Arc::new(AtomicU64::new(FLUSH_EVERY.as_millis() as u64));
        let interval = interval_ms.clone();
        let handle = std::thread::Builder::new()
            .name("journal-flush".into())
            .spawn(move || {
                let (lock, cv) = &*signal;
                let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*stopped {
                    stopped = cv
                        .wait_timeout(
                            stopped,
                            Duration::from_millis(interval.load(Ordering::Relaxed)),
                        )
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                    if *stopped {
                        break;
                    }
                    let mut st = segments.lock();
                    let done = st.sync(&segments).map_err(|e| e.to_string()).and_then(|()| {
                        db.flush().map(|_| ()).map_err(|e| e.to_string())
                    });
                    drop(st);
                    if let Err(e) = done {
                        // The next operation in the foreground meets the
                        // same error (sled keeps it, the segments too) and
                        // stops the agent.
                        tracing::error!(store = %store.display(), error = %e, "the journal could not be made durable");
                        break;
                    }
                }
            })
            .expect("a thread starts");
        Flusher {
            stop,
            interval_ms,
            handle: Some(handle),
        }
    }

    /// Flushes every `interval` from the next wait on (at least 1 ms).
    pub fn set_interval(&self, interval: Duration) {
        let ms = (interval.as_millis() as u64).max(1);
        self.interval_ms.store(ms, Ordering::Relaxed);
    }

    /// Stops the thread; waits for it unless `wait` is false (a failed
    /// store, whose sled flush may never return).
    pub fn stop(&mut self, wait: bool) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            if wait {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_round_trips() {
        let loc = Location {
            segment: 7,
            offset: 8,
            len: 300,
            rows: 2,
        };
        assert_eq!(Location::decode(&loc.encode()).unwrap(), loc);
        assert!(Location::decode(&[0; 23]).is_err());
        assert_eq!(parse_name(&file_name(0x1234)), Some(0x1234));
        assert_eq!(parse_name("0000000000001234.seg.tmp"), None);
    }
}
