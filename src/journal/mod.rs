//! The journal: rows and file offsets committed together in sled.
//!
//! It is the one place where the agent's progress lives. The tailer's
//! offsets, the rows they produced and the counters describing the lines
//! are written in one multi-tree transaction, so after a crash at any
//! point they agree: a line is either fully journaled (row and offset) or
//! will be read again. Sinks read rows after their own durable cursor and
//! acknowledge; a row is deleted only once every enabled sink has
//! acknowledged it. Rows carried between machines (`export`/`import`)
//! are recorded here too (transfer.rs).

pub mod artifacts;
mod checkpoint;
pub(crate) mod codec;
mod memo;
mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use thiserror::Error;
use tokio::sync::watch;

use crate::row::{Entry, Row};
use crate::stats::Counters;
pub use checkpoint::FileState;
use codec::{block_len, decode_block, encode_block, key_u64, u64_key};
pub use memo::Memo;
pub use transfer::{ExportMark, ImportRecord, SourceMark};

/// The journal's on-disk format version, refused when unknown.
const FORMAT: u64 = 1;

/// Errors of the store; each names the store path and what to do.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error(
        "store {path} is in use by another mosaic-shipper process (its lock is held); \
         stop that process or point store.path elsewhere"
    )]
    Locked { path: PathBuf },
    #[error(
        "store {path} cannot be opened: {detail}. It was left as it is. If it is damaged, \
         move it aside (mv {path} {path}.broken) and start again: the logs will be re-read \
         from the start and sinks may receive rows they already have"
    )]
    Open { path: PathBuf, detail: String },
    #[error("no store at {path}: the agent has not run with this configuration yet")]
    Missing { path: PathBuf },
    #[error("store {path}: {op} failed: {detail}")]
    Io {
        path: PathBuf,
        op: &'static str,
        detail: String,
    },
    #[error("store {path}: damaged record in {what}: {detail}")]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
}

/// A sink's durable position: the last sequence number it acknowledged and
/// the sink's own recovery state (e.g. committed file lengths).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkCursor {
    pub seq: u64,
    pub state: Vec<u8>,
}

/// Handle to the store. Cheap to share behind an `Arc`.
pub struct Journal {
    path: PathBuf,
    db: sled::Db,
    rows: sled::Tree,
    files: sled::Tree,
    sinks: sled::Tree,
    meta: sled::Tree,
    /// Bundles imported into this journal (transfer.rs).
    imports: sled::Tree,
    /// Checkpoint files shipped as W&B artifacts (artifacts.rs).
    artifacts: sled::Tree,
    /// Artifact records written by this process (the status snapshot is
    /// refreshed when it changes).
    artifact_writes: std::sync::atomic::AtomicU64,
    /// The sinks whose acknowledgements gate deletion.
    enabled_sinks: Vec<String>,
    /// Last committed sequence number; sinks wait on it.
    last_seq: watch::Sender<u64>,
    /// Lowest cursor of the enabled sinks; `--once` and back-pressure wait on it.
    acked: watch::Sender<u64>,
    /// Serialises deletions so that byte accounting stays exact.
    compact_lock: Mutex<()>,
}

/// sled's page cache when the configuration does not say
/// (`store.cache_bytes`). sled's own default, 1 GiB, is what the agent's
/// memory grew to while rows were pending; the journal is read in order,
/// once per sink, so a small cache costs little.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

const NEXT_SEQ: &[u8] = b"next_seq";
const STORED_BYTES: &[u8] = b"stored_bytes";
const COUNTERS: &[u8] = b"counters";
const NEXT_FILE_ID: &[u8] = b"next_file_id";
const FORMAT_KEY: &[u8] = b"format";

fn get_u64(tree: &sled::Tree, key: &[u8]) -> sled::Result<u64> {
    Ok(tree.get(key)?.and_then(|v| key_u64(&v)).unwrap_or_default())
}

type TxResult<T> = Result<T, ConflictableTransactionError<String>>;

fn tx_u64(tree: &sled::transaction::TransactionalTree, key: &[u8]) -> TxResult<u64> {
    Ok(tree.get(key)?.and_then(|v| key_u64(&v)).unwrap_or_default())
}

impl Journal {
    /// Opens (or creates) the store at `path`. A store that exists but
    /// cannot be read is an error, never silently recreated.
    pub fn open(path: &Path, enabled_sinks: &[&str]) -> Result<Journal, JournalError> {
        Self::open_with_cache(path, enabled_sinks, DEFAULT_CACHE_BYTES)
    }

    /// [`Journal::open`] with sled's page cache bounded to `cache_bytes`.
    pub fn open_with_cache(
        path: &Path,
        enabled_sinks: &[&str],
        cache_bytes: u64,
    ) -> Result<Journal, JournalError> {
        // The store is the agent's alone (rows, workers' config records):
        // 0700 directories and 0600 files, whatever the umask.
        crate::util::create_private_dir(path)
            .and_then(|()| crate::util::create_private_dir(&path.join("journal")))
            .map_err(|e| JournalError::Open {
                path: path.to_path_buf(),
                detail: format!("cannot create the directory: {e}"),
            })?;
        let journal = Self::open_db(path, enabled_sinks, true, cache_bytes)?;
        crate::util::restrict_tree(&path.join("journal"));
        for name in enabled_sinks {
            journal.init_cursor(name)?;
        }
        journal.acked.send_replace(journal.min_cursor()?);
        // Sinks switched off since the last run may have held rows back.
        journal.compact()?;
        Ok(journal)
    }

    /// Opens an existing store for inspection (`status`): nothing is
    /// created, no cursor initialised, no row deleted.
    pub fn open_existing(path: &Path) -> Result<Journal, JournalError> {
        if !path.join("journal").is_dir() {
            return Err(JournalError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::open_db(path, &[], false, DEFAULT_CACHE_BYTES)
    }

    /// Opens sled, waiting a moment for a lock that is being let go: a
    /// store closed in this process is unlocked by sled's flusher thread
    /// shortly after the handle is dropped. A store another process holds
    /// is reported as `Locked` after that moment.
    fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, JournalError> {
        let mut tries = 0;
        loop {
            let opened = sled::Config::new()
                .path(path.join("journal"))
                .flush_every_ms(Some(200))
                .cache_capacity(cache_bytes)
                .open();
            match opened {
                Ok(db) => return Ok(db),
                // sled wraps the flock error in its own message.
                Err(sled::Error::Io(io))
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    if tries >= 25 {
                        return Err(JournalError::Locked {
                            path: path.to_path_buf(),
                        });
                    }
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(40));
                }
                Err(e) => {
                    return Err(JournalError::Open {
                        path: path.to_path_buf(),
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    fn open_db(
        path: &Path,
        enabled_sinks: &[&str],
        create: bool,
        cache_bytes: u64,
    ) -> Result<Journal, JournalError> {
        drop_unpublished_snapshots(&path.join("journal"));
        let db = Self::open_sled(path, cache_bytes)?;
        let open_err = |e: sled::Error| JournalError::Open {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let meta = db.open_tree("meta").map_err(open_err)?;
        match meta.get(FORMAT_KEY).map_err(open_err)? {
            None if create && db.tree_names().len() <= 2 => {
                meta.insert(FORMAT_KEY, &u64_key(FORMAT))
                    .map_err(open_err)?;
            }
            None => {
                return Err(JournalError::Open {
                    path: path.to_path_buf(),
                    detail: "it is not a mosaic-shipper journal (no format marker)".into(),
                })
            }
            Some(v) if key_u64(&v) == Some(FORMAT) => {}
            Some(v) => {
                return Err(JournalError::Open {
                    path: path.to_path_buf(),
                    detail: format!(
                        "unknown journal format {:?} (this build reads format {FORMAT})",
                        key_u64(&v)
                    ),
                })
            }
        }
        let journal = Journal {
            path: path.to_path_buf(),
            rows: db.open_tree("rows").map_err(open_err)?,
            files: db.open_tree("files").map_err(open_err)?,
            sinks: db.open_tree("sinks").map_err(open_err)?,
            imports: db.open_tree("imports").map_err(open_err)?,
            artifacts: db.open_tree("artifacts").map_err(open_err)?,
            artifact_writes: Default::default(),
            meta,
            db,
            enabled_sinks: enabled_sinks.iter().map(|s| s.to_string()).collect(),
            last_seq: watch::channel(0).0,
            acked: watch::channel(0).0,
            compact_lock: Mutex::new(()),
        };
        let last = journal.last_seq()?;
        journal.last_seq.send_replace(last);
        Ok(journal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, op: &'static str) -> impl Fn(sled::Error) -> JournalError + '_ {
        move |e| JournalError::Io {
            path: self.path.clone(),
            op,
            detail: e.to_string(),
        }
    }

    fn tx_err(&self, op: &'static str, e: TransactionError<String>) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            op,
            detail: match e {
                TransactionError::Abort(s) => s,
                TransactionError::Storage(e) => e.to_string(),
            },
        }
    }

    /// A sink seen for the first time starts at the oldest row still held.
    fn init_cursor(&self, name: &str) -> Result<(), JournalError> {
        if self
            .sinks
            .get(name)
            .map_err(self.io("read cursor"))?
            .is_some()
        {
            return Ok(());
        }
        let first = self
            .rows
            .first()
            .map_err(self.io("read rows"))?
            .and_then(|(k, _)| key_u64(&k));
        let seq = match first {
            Some(s) => s - 1,
            None => self.last_seq()?,
        };
        self.put_cursor(
            name,
            &SinkCursor {
                seq,
                state: Vec::new(),
            },
        )
    }

    pub fn last_seq(&self) -> Result<u64, JournalError> {
        Ok(get_u64(&self.meta, NEXT_SEQ)
            .map_err(self.io("read meta"))?
            .saturating_sub(1))
    }

    /// Bytes of rows currently held (keys and values).
    pub fn stored_bytes(&self) -> Result<u64, JournalError> {
        get_u64(&self.meta, STORED_BYTES).map_err(self.io("read meta"))
    }

    /// Totals over all files ever read.
    pub fn counters(&self) -> Result<Counters, JournalError> {
        match self.meta.get(COUNTERS).map_err(self.io("read meta"))? {
            None => Ok(Counters::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| JournalError::Corrupt {
                path: self.path.clone(),
                what: "counters".into(),
                detail: e.to_string(),
            }),
        }
    }

    /// Allocates a new id for a file seen for the first time.
    pub fn new_file_id(&self) -> Result<u64, JournalError> {
        let id = self
            .meta
            .update_and_fetch(NEXT_FILE_ID, |old| {
                let n = old.and_then(key_u64).unwrap_or(0) + 1;
                Some(u64_key(n).to_vec())
            })
            .map_err(self.io("allocate file id"))?
            .and_then(|v| key_u64(&v))
            .unwrap_or(1);
        Ok(id)
    }

    /// Every file checkpoint, in id order.
    pub fn files(&self) -> Result<Vec<FileState>, JournalError> {
        let mut out = Vec::new();
        for item in self.files.iter() {
            let (k, v) = item.map_err(self.io("read files"))?;
            let state = serde_json::from_slice(&v).map_err(|e| JournalError::Corrupt {
                path: self.path.clone(),
                what: format!("file checkpoint {:?}", key_u64(&k)),
                detail: e.to_string(),
            })?;
            out.push(state);
        }
        Ok(out)
    }

    /// Atomically appends `rows`, stores the file's new checkpoint and adds
    /// `delta` to the counters. Returns the last sequence number assigned.
    pub fn commit_ingest(
        &self,
        file: &FileState,
        rows: &[Row],
        delta: &Counters,
    ) -> Result<u64, JournalError> {
        self.commit(Some(file), rows, delta)
    }

    /// Appends rows that come from no file: run events the agent itself
    /// knows of (init mode's exit code, for W&B rows that are staged).
    /// Returns the last sequence number assigned.
    pub fn commit_events(&self, rows: &[Row]) -> Result<u64, JournalError> {
        self.commit(None, rows, &Counters::default())
    }

    fn commit(
        &self,
        file: Option<&FileState>,
        rows: &[Row],
        delta: &Counters,
    ) -> Result<u64, JournalError> {
        let block = (!rows.is_empty()).then(|| encode_block(rows));
        let file_json = file.map(|f| serde_json::to_vec(f).expect("file state serialises"));
        let last = (&self.rows, &self.files, &self.meta)
            .transaction(|(rows_t, files_t, meta_t)| {
                let mut next = tx_u64(meta_t, NEXT_SEQ)?.max(1);
                let mut bytes = tx_u64(meta_t, STORED_BYTES)?;
                if let Some(block) = &block {
                    rows_t.insert(&u64_key(next), block.as_slice())?;
                    bytes += 8 + block.len() as u64;
                    next += rows.len() as u64;
                }
                if let (Some(file), Some(json)) = (file, &file_json) {
                    files_t.insert(&u64_key(file.id), json.as_slice())?;
                }
                let mut counters: Counters = match meta_t.get(COUNTERS)? {
                    Some(v) => serde_json::from_slice(&v).map_err(|e| {
                        ConflictableTransactionError::Abort(format!("damaged counters: {e}"))
                    })?,
                    None => Counters::default(),
                };
                counters.add(delta);
                meta_t.insert(NEXT_SEQ, &u64_key(next))?;
                meta_t.insert(STORED_BYTES, &u64_key(bytes))?;
                meta_t.insert(
                    COUNTERS,
                    serde_json::to_vec(&counters).expect("counters serialise"),
                )?;
                Ok(next - 1)
            })
            .map_err(|e| self.tx_err("commit rows", e))?;
        self.last_seq.send_replace(last);
        Ok(last)
    }

    /// Drops the checkpoint of a file that was read to its end and is gone.
    pub fn forget_file(&self, id: u64) -> Result<(), JournalError> {
        self.files
            .remove(u64_key(id))
            .map_err(self.io("forget file"))?;
        Ok(())
    }

    /// Up to `max` rows after `after`, in sequence order.
    /// Rows after `after`, in sequence order: whole blocks (one per ingest
    /// commit) until at least `max` rows are taken, so a block is decoded
    /// once, not once per `max` rows.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<Entry>, JournalError> {
        let want = after.saturating_add(1);
        // The block holding `want` starts at or before it.
        let start = match self
            .rows
            .range(..=u64_key(want))
            .next_back()
            .transpose()
            .map_err(self.io("read rows"))?
        {
            Some((k, v)) if key_u64(&k).unwrap_or(0) + block_len(&v).unwrap_or(0) > want => {
                key_u64(&k).unwrap_or(want)
            }
            _ => want,
        };
        let mut out = Vec::new();
        for item in self.rows.range(u64_key(start)..) {
            if out.len() >= max {
                break;
            }
            let (k, v) = item.map_err(self.io("read rows"))?;
            let first = key_u64(&k).unwrap_or_default();
            let rows = decode_block(&v).map_err(|e| JournalError::Corrupt {
                path: self.path.clone(),
                what: format!("rows from #{first}"),
                detail: e.to_string(),
            })?;
            for (i, row) in rows.into_iter().enumerate() {
                let seq = first + i as u64;
                if seq >= want {
                    out.push(Entry { seq, row });
                }
            }
        }
        Ok(out)
    }

    pub fn cursor(&self, sink: &str) -> Result<SinkCursor, JournalError> {
        match self.sinks.get(sink).map_err(self.io("read cursor"))? {
            None => Ok(SinkCursor::default()),
            Some(v) if v.len() >= 8 => Ok(SinkCursor {
                seq: key_u64(&v[..8]).unwrap_or_default(),
                state: v[8..].to_vec(),
            }),
            Some(_) => Err(JournalError::Corrupt {
                path: self.path.clone(),
                what: format!("cursor of sink {sink}"),
                detail: "shorter than 8 bytes".into(),
            }),
        }
    }

    /// Every stored cursor, including those of sinks now switched off.
    pub fn cursors(&self) -> Result<Vec<(String, SinkCursor)>, JournalError> {
        let mut out = Vec::new();
        for item in self.sinks.iter() {
            let (k, _) = item.map_err(self.io("read cursors"))?;
            let name = String::from_utf8_lossy(&k).to_string();
            let c = self.cursor(&name)?;
            out.push((name, c));
        }
        Ok(out)
    }

    fn put_cursor(&self, sink: &str, c: &SinkCursor) -> Result<(), JournalError> {
        let mut v = u64_key(c.seq).to_vec();
        v.extend_from_slice(&c.state);
        self.sinks
            .insert(sink, v)
            .map_err(self.io("write cursor"))?;
        Ok(())
    }

    /// Records that `sink` has durably delivered every row up to `seq`,
    /// with the state it needs to recover to exactly that point, then
    /// deletes rows every enabled sink has.
    pub fn ack(&self, sink: &str, seq: u64, state: Vec<u8>) -> Result<(), JournalError> {
        self.put_cursor(sink, &SinkCursor { seq, state })?;
        self.compact()
    }

    fn min_cursor(&self) -> Result<u64, JournalError> {
        let mut min = None::<u64>;
        for name in &self.enabled_sinks {
            let seq = self.cursor(name)?.seq;
            min = Some(min.map_or(seq, |m| m.min(seq)));
        }
        match min {
            Some(m) => Ok(m),
            None => self.last_seq(),
        }
    }

    /// Deletes rows acknowledged by every enabled sink.
    fn compact(&self) -> Result<(), JournalError> {
        let _guard = self.compact_lock.lock().unwrap_or_else(|p| p.into_inner());
        let upto = self.min_cursor()?;
        let mut keys = Vec::new();
        let mut freed = 0u64;
        for item in self.rows.range(..=u64_key(upto)) {
            let (k, v) = item.map_err(self.io("read rows"))?;
            let last = key_u64(&k).unwrap_or(0) + block_len(&v).unwrap_or(0) - 1;
            if last > upto {
                break; // partly acknowledged: kept until all of it is
            }
            freed += 8 + v.len() as u64;
            keys.push(k);
            if keys.len() >= 10_000 {
                self.delete_rows(&keys, freed)?;
                keys.clear();
                freed = 0;
            }
        }
        if !keys.is_empty() {
            self.delete_rows(&keys, freed)?;
        }
        self.acked.send_replace(upto);
        Ok(())
    }

    fn delete_rows(&self, keys: &[sled::IVec], freed: u64) -> Result<(), JournalError> {
        (&self.rows, &self.meta)
            .transaction(|(rows_t, meta_t)| {
                for k in keys {
                    rows_t.remove(k)?;
                }
                let bytes = tx_u64(meta_t, STORED_BYTES)?;
                meta_t.insert(STORED_BYTES, &u64_key(bytes.saturating_sub(freed)))?;
                Ok(())
            })
            .map_err(|e| self.tx_err("delete acknowledged rows", e))
    }

    /// Watches the last committed sequence number.
    pub fn subscribe_rows(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Watches the lowest cursor of the enabled sinks.
    pub fn subscribe_acked(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    pub fn enabled_sinks(&self) -> &[String] {
        &self.enabled_sinks
    }

    /// Makes everything committed so far durable on disk.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.db.flush().map_err(self.io("flush"))?;
        Ok(())
    }

    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        self.db.size_on_disk().map_err(self.io("measure"))
    }
}

/// Works around a sled 0.34.7 bug that turns a SIGKILL into a store that
/// cannot be opened.
///
/// sled writes a snapshot to `snap.<lsn>.generating`, fsyncs it, then
/// renames it to `snap.<lsn>`: a `.generating` file was never published.
/// But its reader lists every `snap.*` file and takes the greatest name,
/// which is the unfinished `.generating` one when a kill came mid-write,
/// and then refuses the whole store as corrupt ("empty/corrupt snapshot
/// file found"; spacejam/sled#1527, #1533; seen here in the TensorBoard
/// crash test). Removing the file leaves the last published snapshot, and
/// the log after it, which is what sled recovers from anyway.
///
/// Only while holding sled's own lock (flock on `db`): a running agent may
/// be writing that very file.
fn drop_unpublished_snapshots(dir: &Path) {
    use std::os::fd::AsRawFd;
    let Ok(db) = std::fs::File::open(dir.join("db")) else {
        return; // a new store
    };
    // SAFETY: flock on a descriptor this function owns; released when
    // `db` is dropped at the end of the function.
    if unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return; // in use: sled's open reports the lock
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::warn!(file = %entry.path().display(), "removed an unfinished sled snapshot left by a crash")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unfinished sled snapshot; the store may not open")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A metric row of run "r" (also for the journal's submodules' tests).
    pub(super) fn row(step: i64) -> Row {
        Row {
            run_id: "r".into(),
            step,
            wall_time: 1.0,
            values: [("x".to_string(), step as f64)].into_iter().collect(),
            event: None,
            origin: Default::default(),
        }
    }

    fn file(id: u64, offset: u64) -> FileState {
        FileState {
            id,
            path: "f".into(),
            dev: 1,
            ino: 2,
            fp_len: 0,
            fp: 0,
            offset,
            ..FileState::default()
        }
    }

    #[test]
    fn rows_and_offsets_commit_together_and_are_deleted_after_every_ack() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["a", "b"]).unwrap();
        let delta = Counters {
            lines: 3,
            rows: 2,
            ..Counters::default()
        };
        assert_eq!(
            j.commit_ingest(&file(1, 30), &[row(1), row(2)], &delta)
                .unwrap(),
            2
        );
        assert_eq!(j.files().unwrap()[0].offset, 30);
        assert_eq!(j.counters().unwrap().lines, 3);
        assert!(j.stored_bytes().unwrap() > 0);
        j.ack("a", 2, b"s".to_vec()).unwrap();
        assert_eq!(j.read_after(0, 10).unwrap().len(), 2, "b has not acked");
        j.ack("b", 1, vec![]).unwrap();
        assert_eq!(j.read_after(0, 10).unwrap().len(), 2, "a block goes whole");
        let left = j.read_after(1, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].seq, 2);
        assert_eq!(left[0].row, row(2));
        assert_eq!(j.commit_ingest(&file(1, 40), &[row(3)], &delta).unwrap(), 3);
        let seqs: Vec<u64> = j.read_after(1, 1).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2], "at least max rows, whole blocks after the first");
        let seqs: Vec<u64> = j.read_after(1, 2).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(j.cursor("a").unwrap().state, b"s");
        j.ack("a", 3, vec![]).unwrap();
        j.ack("b", 2, vec![]).unwrap();
        assert_eq!(
            j.read_after(0, 10).unwrap().len(),
            1,
            "the first block is gone"
        );
        j.ack("b", 3, vec![]).unwrap();
        assert_eq!(j.stored_bytes().unwrap(), 0);
        drop(j);
        let j = Journal::open(dir.path(), &["a", "b", "c"]).unwrap();
        assert_eq!(j.last_seq().unwrap(), 3, "sequence survives reopen");
        assert_eq!(
            j.cursor("c").unwrap().seq,
            3,
            "a new sink starts after deleted rows"
        );
    }

    #[test]
    fn second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _j = Journal::open(dir.path(), &["a"]).unwrap();
        let err = Journal::open(dir.path(), &["a"]).err().unwrap();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    }

    #[test]
    fn garbage_store_is_an_error_not_a_fresh_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("journal")).unwrap();
        std::fs::write(dir.path().join("journal/conf"), b"garbage\x00\x01").unwrap();
        std::fs::write(dir.path().join("journal/db"), vec![0xAB; 4096]).unwrap();
        let err = Journal::open(dir.path(), &["a"])
            .err()
            .expect("must not open");
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
        assert!(std::fs::read(dir.path().join("journal/db")).unwrap() == vec![0xAB; 4096]);
    }

    #[test]
    fn an_unfinished_sled_snapshot_does_not_break_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        {
            let j = Journal::open(&store, &["jsonl"]).unwrap();
            j.commit_events(&[row(1), row(2)]).unwrap();
            j.flush().unwrap();
        }
        // What a SIGKILL during sled's snapshot write leaves behind.
        let bogus = store.join("journal/snap.FFFFFFFFFFFFFFFF.generating");
        std::fs::write(&bogus, b"").unwrap();
        let j = Journal::open(&store, &["jsonl"]).unwrap();
        assert_eq!(j.read_after(0, 10).unwrap().len(), 2);
        assert!(!bogus.exists());
        // Not while another handle holds the store: it may be writing it.
        std::fs::write(&bogus, b"").unwrap();
        assert!(matches!(
            Journal::open_existing(&store),
            Err(JournalError::Locked { .. })
        ));
        assert!(bogus.exists());
    }
}
