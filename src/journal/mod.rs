//! The journal: rows and file offsets committed together.
//!
//! It is the one place where the agent's progress lives. The tailer's
//! offsets, where the rows they produced are, and the counters describing
//! the lines are written in one sled transaction, after the rows
//! themselves were appended to the journal's segment files
//! (segments.rs), so after a crash at any point they agree: a line is
//! either fully journaled (row and offset) or will be read again. Sinks read rows after their own durable cursor and
//! acknowledge; a row is deleted only once every enabled sink has
//! acknowledged it. Rows carried between machines (`export`/`import`)
//! are recorded here too (transfer.rs).

pub mod artifacts;
mod checkpoint;
pub(crate) mod codec;
mod guard;
pub mod marker;
mod memo;
mod recent;
pub mod requests;
mod segments;
mod set_aside;
mod transfer;

use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use thiserror::Error;
use tokio::sync::watch;

use crate::row::{Entry, Row, RowRef};
use crate::stats::Counters;
pub use checkpoint::{FileState, SourceKind};
use codec::{block_len, decode_block, encode_block, key_u64, seal, u64_key, unseal};
pub use guard::reset_store;
use guard::{expect_sled_files, read_marker};
use marker::{Marker, Progress};
pub use memo::Memo;
use segments::{Flusher, Location, SegmentError, Segments};
pub use set_aside::{RunName, SetAsideRun};
pub use transfer::{ExportMark, ImportRecord, SourceMark};

/// The journal's on-disk format version, refused when unknown. Format 2
/// seals every value with a checksum (codec.rs); format 3 keeps row blocks
/// in segment files instead of sled's tree (segments.rs). Journals of
/// formats 1 and 2 are converted when they are opened.
const FORMAT: u64 = 3;

/// Errors of the store; each names the store path and what to do.
#[derive(Debug, Error)]
pub enum JournalError {
    #[error(
        "store {path} is in use by another mosaic-shipper process (its lock is held); \
         stop that process or point store.path elsewhere"
    )]
    Locked { path: PathBuf },
    /// The store cannot be used as it is: sled refuses it, a record in it
    /// is damaged, or it is missing, empty or behind what its marker says
    /// was committed.
    #[error(
        "store {path} cannot be used: {detail}. The agent did not start on it. To start over with a \
         new store, run the agent once with --reset-store (it moves the journal aside to \
         {path}.broken-<time>), or move it aside by hand (mv {path} {path}.broken); the logs \
         are then read again from the start and sinks may receive rows they already have"
    )]
    Open { path: PathBuf, detail: String },
    #[error("no store at {path}: the agent has not run with this configuration yet")]
    Missing { path: PathBuf },
    /// sled failed (an I/O error: a full disk, a read error). Fatal: the
    /// agent stops so that a supervisor restarts it.
    #[error("store {path}: {op} failed: {detail}")]
    Io {
        path: PathBuf,
        op: &'static str,
        detail: String,
    },
    /// A record read back is not what was stored (its checksum fails, it
    /// does not decode). Fatal, and the store is refused from then on.
    #[error(
        "store {path}: damaged record in {what}: {detail}. The agent stops rather than skip \
         it, and refuses this store from now on; start over with --reset-store (the logs are \
         read again from the start) or move the store aside"
    )]
    Corrupt {
        path: PathBuf,
        what: String,
        detail: String,
    },
    /// An operation the journal declines (an import already done); nothing
    /// is wrong with the store.
    #[error("store {path}: {op} failed: {detail}")]
    Refused {
        path: PathBuf,
        op: &'static str,
        detail: String,
    },
    /// The store's files went away under the running agent. Fatal; the
    /// marker records it, so the next start refuses the store.
    #[error(
        "store {path} was deleted while the agent was running ({detail}); stopping. The next \
         start refuses it: start over with --reset-store (the logs are read again from the \
         start and sinks may receive rows they already have)"
    )]
    Gone { path: PathBuf, detail: String },
}

impl JournalError {
    /// Whether the agent must stop on this error (the store is failing or
    /// damaged) rather than retry.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            JournalError::Io { .. } | JournalError::Corrupt { .. } | JournalError::Gone { .. }
        )
    }
}

/// A sink's durable position: the last sequence number it acknowledged and
/// the sink's own recovery state (e.g. committed file lengths).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkCursor {
    pub seq: u64,
    pub state: Vec<u8>,
}

/// Handle to the store. Cheap to share behind an `Arc`.
///
/// sled's handles are dropped by hand ([`Drop`] below): not at all once the
/// store has failed.
pub struct Journal {
    path: PathBuf,
    db: ManuallyDrop<sled::Db>,
    /// Where each row block is, by its first sequence number (a
    /// [`Location`]); the blocks are in `segments`.
    blocks: ManuallyDrop<sled::Tree>,
    segments: Arc<Segments>,
    /// The blocks committed or read last, decoded once for every sink.
    recent: recent::Recent,
    /// Makes segments and sled durable in the background.
    flusher: Option<Flusher>,
    files: ManuallyDrop<sled::Tree>,
    sinks: ManuallyDrop<sled::Tree>,
    meta: ManuallyDrop<sled::Tree>,
    /// Bundles imported into this journal (transfer.rs).
    imports: ManuallyDrop<sled::Tree>,
    /// Rows of runs a sink refused, and the records of those runs
    /// (set_aside.rs).
    set_aside: ManuallyDrop<sled::Tree>,
    refused: ManuallyDrop<sled::Tree>,
    /// Run ids the sinks show under other names (set_aside.rs).
    run_names: ManuallyDrop<sled::Tree>,
    /// Checkpoint files shipped as W&B artifacts (artifacts.rs).
    artifacts: ManuallyDrop<sled::Tree>,
    /// Artifact records written by this process (the status snapshot is
    /// refreshed when it changes).
    artifact_writes: std::sync::atomic::AtomicU64,
    /// The sinks whose acknowledgements gate deletion.
    enabled_sinks: Vec<String>,
    /// Last committed sequence number; sinks wait on it.
    last_seq: watch::Sender<u64>,
    /// Lowest cursor of the enabled sinks; `--once` and back-pressure wait on it.
    acked: watch::Sender<u64>,
    /// Counts changes to the set-aside runs made by `set-aside retry` and
    /// `drop` (set_aside.rs): a running sink session starts anew on it.
    set_aside_changes: watch::Sender<u64>,
    /// `(sink, run)` pairs dropped by this process while it runs: a sink
    /// session may still hold rows it read as theirs, which are then given
    /// up with the rest instead of being taken for damage.
    dropped: Mutex<std::collections::HashSet<(String, String)>>,
    /// Serialises deletions so that byte accounting stays exact.
    compact_lock: Mutex<()>,
    /// The first fatal error ([`JournalError::is_fatal`]) met, in words;
    /// the agent watches it and stops.
    failed: watch::Sender<Option<String>>,
    /// The marker as last written (`None` before the first write, and
    /// for inspection, which never writes it).
    marker: Mutex<Option<Marker>>,
    /// Serialises [`Journal::record_progress`].
    progress_lock: Mutex<()>,
    /// Device and inode of sled's `db` file when opened: the store was
    /// deleted or replaced under the agent when they change.
    db_identity: Option<(u64, u64)>,
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
/// The tree of row blocks before format 3 (the blocks themselves).
const OLD_ROWS_TREE: &str = "rows";
/// Blocks moved to segment files per transaction when converting.
const CONVERT_BATCH: usize = 64;
/// Stored as it is (8 bytes), not sealed: any other value is refused.
const FORMAT_KEY: &[u8] = b"format";

/// sled's files that every store has: a marker without them is a store
/// deleted or cut down.
const SLED_FILES: [&str; 2] = ["db", "conf"];

/// Why a transaction was aborted.
#[derive(Debug, Clone)]
pub(crate) enum TxAbort {
    /// A value read inside it is damaged.
    Damaged { what: String, detail: String },
    /// The operation is declined (nothing is wrong with the store).
    Refused(String),
}

type TxResult<T> = Result<T, ConflictableTransactionError<TxAbort>>;

fn what_key(key: &[u8]) -> String {
    match key_u64(key) {
        Some(n) => format!("#{n}"),
        None => String::from_utf8_lossy(key).into_owned(),
    }
}

/// A sealed value read in a transaction, unsealed.
fn tx_get(tree: &sled::transaction::TransactionalTree, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => match unseal(key, &v) {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(detail) => Err(ConflictableTransactionError::Abort(TxAbort::Damaged {
                what: format!("journal key {}", what_key(key)),
                detail,
            })),
        },
    }
}

fn tx_u64(tree: &sled::transaction::TransactionalTree, key: &[u8]) -> TxResult<u64> {
    Ok(tx_get(tree, key)?
        .and_then(|v| key_u64(&v))
        .unwrap_or_default())
}

fn tx_put(tree: &sled::transaction::TransactionalTree, key: &[u8], value: &[u8]) -> TxResult<()> {
    tree.insert(key, seal(key, value))?;
    Ok(())
}

impl Journal {
    /// Opens (or creates) the store at `path`. A store that exists but
    /// cannot be read is an error, never silently recreated; so is one its
    /// marker says was used before and that is now missing, empty,
    /// damaged or behind the marker.
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
        let cannot_create = |e: std::io::Error| JournalError::Open {
            path: path.to_path_buf(),
            detail: format!("cannot create the directory: {e}"),
        };
        crate::util::create_private_dir(path).map_err(cannot_create)?;
        let marker = read_marker(path)?;
        if let Some(m) = &marker {
            expect_sled_files(path, m)?;
        }
        crate::util::create_private_dir(&path.join("journal")).map_err(cannot_create)?;
        let journal = Self::open_db(path, enabled_sinks, true, cache_bytes, marker)?;
        crate::util::restrict_tree(&path.join("journal"));
        for name in enabled_sinks {
            journal.init_cursor(name)?;
        }
        journal.acked.send_replace(journal.min_cursor()?);
        // Sinks switched off since the last run may have held rows back.
        journal.compact()?;
        journal.record_progress()?;
        Ok(journal)
    }

    /// Opens an existing store for inspection (`status`): nothing is
    /// created, no cursor initialised, no row deleted, the marker left as
    /// it is (but checked as on any open).
    pub fn open_existing(path: &Path) -> Result<Journal, JournalError> {
        let marker = read_marker(path)?;
        if let Some(m) = &marker {
            expect_sled_files(path, m)?;
        }
        if !path.join("journal").is_dir() {
            return Err(JournalError::Missing {
                path: path.to_path_buf(),
            });
        }
        Self::open_db(path, &[], false, DEFAULT_CACHE_BYTES, marker)
    }

    /// Opens sled, waiting a moment for a lock that is being let go: a
    /// store closed in this process is unlocked by sled's flusher thread
    /// shortly after the handle is dropped. A store another process holds
    /// is reported as `Locked` after that moment.
    fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, JournalError> {
        let mut tries = 0;
        loop {
            // Before every try, not once: while the lock is still held
            // (a handle of this process being let go) this leaves the file
            // alone, and the try that gets the lock must not find it.
            drop_unpublished_snapshots(&path.join("journal"));
            let opened = sled::Config::new()
                .path(path.join("journal"))
                // The journal's flusher (segments.rs) flushes sled, after
                // the segment files.
                .flush_every_ms(None)
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
                Err(e) => return Err(sled_open_error(path, "open", e)),
            }
        }
    }

    fn open_db(
        path: &Path,
        enabled_sinks: &[&str],
        create: bool,
        cache_bytes: u64,
        marker: Option<Marker>,
    ) -> Result<Journal, JournalError> {
        let db = Self::open_sled(path, cache_bytes)?;
        let refuse = |detail: String| JournalError::Open {
            path: path.to_path_buf(),
            detail,
        };
        let open_err = |e: sled::Error| sled_open_error(path, "read", e);
        let meta = db.open_tree("meta").map_err(open_err)?;
        let mut fresh = false;
        // The format found, when older than this build's.
        let mut convert = None;
        match meta.get(FORMAT_KEY).map_err(open_err)? {
            None if marker.is_some() => {
                let m = marker.as_ref().expect("checked");
                return Err(refuse(format!(
                    "it came back empty (sled opened it with no journal in it), but its marker \
                     {} records a store used before, with rows up to #{}",
                    marker::path(path).display(),
                    m.progress.next_seq.saturating_sub(1)
                )));
            }
            None if create && db.tree_names().len() <= 2 => {
                meta.insert(FORMAT_KEY, &u64_key(FORMAT))
                    .map_err(open_err)?;
                fresh = true;
            }
            None => {
                return Err(refuse(
                    "it is not a mosaic-shipper journal (no format marker)".into(),
                ))
            }
            Some(v) if key_u64(&v) == Some(FORMAT) => {}
            Some(v) if matches!(key_u64(&v), Some(1 | 2)) => convert = key_u64(&v),
            Some(v) => {
                return Err(refuse(format!(
                    "unknown journal format {:?} (this build reads format {FORMAT})",
                    key_u64(&v)
                )))
            }
        }
        let db_identity = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path.join("journal/db"))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        let blocks = db.open_tree("blocks").map_err(open_err)?;
        let segments = Arc::new(open_segments(path, &blocks).map_err(|e| match e {
            SegmentError::Io(detail) => JournalError::Io {
                path: path.to_path_buf(),
                op: "open the row segments",
                detail,
            },
            SegmentError::Damaged { what, detail } => refuse(format!("{what}: {detail}")),
        })?);
        let flusher = Flusher::start(segments.clone(), db.clone(), path.to_path_buf());
        let journal = Journal {
            path: path.to_path_buf(),
            blocks: ManuallyDrop::new(blocks),
            segments,
            recent: Default::default(),
            flusher: Some(flusher),
            files: ManuallyDrop::new(db.open_tree("files").map_err(open_err)?),
            sinks: ManuallyDrop::new(db.open_tree("sinks").map_err(open_err)?),
            imports: ManuallyDrop::new(db.open_tree("imports").map_err(open_err)?),
            set_aside: ManuallyDrop::new(db.open_tree("set_aside").map_err(open_err)?),
            refused: ManuallyDrop::new(db.open_tree("set_aside_runs").map_err(open_err)?),
            run_names: ManuallyDrop::new(db.open_tree("run_names").map_err(open_err)?),
            artifacts: ManuallyDrop::new(db.open_tree("artifacts").map_err(open_err)?),
            artifact_writes: Default::default(),
            meta: ManuallyDrop::new(meta),
            db: ManuallyDrop::new(db),
            enabled_sinks: enabled_sinks.iter().map(|s| s.to_string()).collect(),
            last_seq: watch::channel(0).0,
            acked: watch::channel(0).0,
            set_aside_changes: watch::channel(0).0,
            dropped: Mutex::default(),
            compact_lock: Mutex::new(()),
            failed: watch::channel(None).0,
            marker: Mutex::new(None),
            progress_lock: Mutex::new(()),
            db_identity,
        };
        if let Some(from) = convert {
            let old_rows = journal.db.open_tree(OLD_ROWS_TREE).map_err(open_err)?;
            if from == 1 {
                journal.convert_from_format_1(&old_rows)?;
            }
            journal
                .convert_from_format_2(&old_rows)
                .map_err(|e| match e {
                    JournalError::Corrupt { what, detail, .. } => {
                        refuse(format!("damaged record in {what}: {detail}"))
                    }
                    e => e,
                })?;
            drop(old_rows);
            journal
                .db
                .drop_tree(OLD_ROWS_TREE)
                .map_err(journal.io("drop the old rows tree"))?;
            journal.flush()?;
        }
        journal.verify().map_err(|e| refuse(e.to_string()))?;
        if fresh {
            // Made now, so that the marker can name it.
            journal.journal_id()?;
        }
        if let Some(m) = marker {
            let id = journal
                .stored_journal_id()
                .map_err(|e| refuse(e.to_string()))?;
            if id.as_deref() != Some(m.store_id.as_str()) {
                return Err(refuse(format!(
                    "it is not the store its marker {} describes (journal id {:?}, the marker \
                     says {:?})",
                    marker::path(path).display(),
                    id.unwrap_or_default(),
                    m.store_id
                )));
            }
            let have = journal.progress().map_err(|e| refuse(e.to_string()))?;
            if let Some(why) = have.behind(&m.progress) {
                return Err(refuse(format!(
                    "it is behind what its marker {} records as committed: {why}; sled lost \
                     writes it had made durable (its files were damaged, cut or replaced)",
                    marker::path(path).display()
                )));
            }
            *journal.marker.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
        }
        let last = journal.last_seq()?;
        journal.last_seq.send_replace(last);
        Ok(journal)
    }

    /// Checks every record against its checksum: the small ones
    /// (metadata, cursors, file checkpoints, import records) and every
    /// pending row block, so that a damaged block is reported when the
    /// store is opened, not when a sink reaches it (hours later, or never
    /// for rows staged for W&B). Rows are checked again when read. The
    /// cost is one read of the pending rows at open (`scripts/bench-open`
    /// measures it: the bytes are read at the disk's speed, the checksum
    /// costs little beside that).
    fn verify(&self) -> Result<(), JournalError> {
        for (name, tree) in [
            ("meta", &self.meta),
            ("sinks", &self.sinks),
            ("files", &self.files),
            ("imports", &self.imports),
        ] {
            for item in tree.iter() {
                let (k, v) = item.map_err(self.io("read the journal"))?;
                if name == "meta" && &*k == FORMAT_KEY {
                    continue;
                }
                unseal(&k, &v).map_err(|e| {
                    self.damaged(format!("{name} record {}", String::from_utf8_lossy(&k)), e)
                })?;
            }
        }
        for item in self.blocks.iter() {
            let (k, v) = item.map_err(self.io("read the journal"))?;
            let loc = self.location(&k, &v)?;
            self.segments
                .check(&loc)
                .map_err(|e| self.damaged(block_what(&k, &loc), e))?;
            let block = self
                .segments
                .read(key_u64(&k).unwrap_or_default(), &loc)
                .map_err(|e| self.segment_error("read a row block", e))?;
            if block_len(&block).is_none() {
                return Err(self.damaged(block_what(&k, &loc), "block shorter than its count"));
            }
        }
        self.files()?;
        self.counters()?;
        Ok(())
    }

    /// A block's recorded location, checked against its checksum.
    fn location(&self, key: &[u8], stored: &[u8]) -> Result<Location, JournalError> {
        let what = || format!("the location of the rows from #{}", what_key(key));
        let v = unseal(key, stored).map_err(|e| self.damaged(what(), e))?;
        Location::decode(v).map_err(|e| self.damaged(what(), e))
    }

    fn segment_error(&self, op: &'static str, e: SegmentError) -> JournalError {
        match e {
            SegmentError::Io(detail) => self.fatal(JournalError::Io {
                path: self.path.clone(),
                op,
                detail,
            }),
            SegmentError::Damaged { what, detail } => self.damaged(what, detail),
        }
    }

    /// Moves the blocks of a format 2 journal (values in the `rows` tree)
    /// to segment files, a batch per transaction, then marks the journal
    /// format 3. Interrupted, it goes on at the next open: the blocks
    /// moved are recorded in `blocks`, the rest are still in `rows`.
    fn convert_from_format_2(&self, old: &sled::Tree) -> Result<(), JournalError> {
        let mut moved = 0u64;
        loop {
            let batch: Vec<(sled::IVec, sled::IVec)> = old
                .iter()
                .take(CONVERT_BATCH)
                .collect::<Result<_, _>>()
                .map_err(self.io("read the journal"))?;
            if batch.is_empty() {
                break;
            }
            let mut st = self.segments.lock();
            let mut placed = Vec::with_capacity(batch.len());
            let mut was = 0u64;
            for (k, v) in &batch {
                let what = || format!("rows from #{} (journal key {0})", what_key(k));
                let block = unseal(k, v).map_err(|e| self.damaged(what(), e))?;
                let first = key_u64(k).ok_or_else(|| self.damaged(what(), "a key of 8 bytes"))?;
                let loc = st
                    .append(&self.segments, first, block)
                    .map_err(|e| self.segment_error("convert the journal to format 3", e))?;
                was += 8 + v.len() as u64;
                placed.push((k.clone(), loc));
            }
            (old, &*self.blocks, &*self.meta)
                .transaction(|(old_t, blocks_t, meta_t)| {
                    let mut bytes = tx_u64(meta_t, STORED_BYTES)?.saturating_sub(was);
                    for (k, loc) in &placed {
                        old_t.remove(k)?;
                        tx_put(blocks_t, k, &loc.encode())?;
                        bytes += loc.len;
                    }
                    tx_put(meta_t, STORED_BYTES, &u64_key(bytes))?;
                    Ok(())
                })
                .map_err(|e| self.tx_err("convert the journal to format 3", e))?;
            drop(st);
            moved += batch.len() as u64;
        }
        self.meta
            .insert(FORMAT_KEY, &u64_key(FORMAT))
            .map_err(self.io("convert the journal to format 3"))?;
        tracing::info!(store = %self.path.display(), blocks = moved, "journal converted to format 3 (row blocks in segment files)");
        Ok(())
    }

    /// Seals every value of a format 1 journal (stored without
    /// checksums), in one transaction.
    fn convert_from_format_1(&self, old_rows: &sled::Tree) -> Result<(), JournalError> {
        let collect = |tree: &sled::Tree| -> Result<Vec<(sled::IVec, sled::IVec)>, JournalError> {
            tree.iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(self.io("read the journal"))
        };
        let rows = collect(old_rows)?;
        let files = collect(&self.files)?;
        let sinks = collect(&self.sinks)?;
        let meta = collect(&self.meta)?;
        let imports = collect(&self.imports)?;
        let stored: u64 = rows.iter().map(|(_, v)| 8 + v.len() as u64 + 4).sum();
        (
            old_rows,
            &*self.files,
            &*self.sinks,
            &*self.meta,
            &*self.imports,
        )
            .transaction(|(rows_t, files_t, sinks_t, meta_t, imports_t)| {
                for (tree, items) in [
                    (rows_t, &rows),
                    (files_t, &files),
                    (sinks_t, &sinks),
                    (imports_t, &imports),
                ] {
                    for (k, v) in items {
                        tx_put(tree, k, v)?;
                    }
                }
                for (k, v) in &meta {
                    if &**k != FORMAT_KEY && &**k != STORED_BYTES {
                        tx_put(meta_t, k, v)?;
                    }
                }
                tx_put(meta_t, STORED_BYTES, &u64_key(stored))?;
                meta_t.insert(FORMAT_KEY, &u64_key(2))?;
                Ok(())
            })
            .map_err(|e| self.tx_err("convert the journal to format 2", e))?;
        tracing::info!(store = %self.path.display(), "journal converted to format 2 (checksums on every record)");
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a fatal error (the first one counts), noting damage in the
    /// marker so that the next start refuses the store.
    fn fatal(&self, e: JournalError) -> JournalError {
        // sled's error when its files were deleted under it ("No such
        // file") says less than what happened.
        let e = match e {
            JournalError::Io { .. } if self.failed.borrow().is_none() => {
                match self.missing_files() {
                    Some(detail) => JournalError::Gone {
                        path: self.path.clone(),
                        detail,
                    },
                    None => e,
                }
            }
            e => e,
        };
        if e.is_fatal() {
            let text = e.to_string();
            let first = self.failed.send_if_modified(|f| {
                if f.is_none() {
                    *f = Some(text.clone());
                    true
                } else {
                    false
                }
            });
            let note = match &e {
                JournalError::Corrupt { what, detail, .. } => {
                    Some(format!("damaged record in {what}: {detail}"))
                }
                JournalError::Gone { detail, .. } => Some(format!(
                    "it was deleted while the agent was running ({detail})"
                )),
                _ => None,
            };
            if let (true, Some(note)) = (first, note) {
                self.note_damage(&note);
            }
        }
        e
    }

    fn damaged(&self, what: String, detail: impl std::fmt::Display) -> JournalError {
        self.fatal(JournalError::Corrupt {
            path: self.path.clone(),
            what,
            detail: detail.to_string(),
        })
    }

    fn io(&self, op: &'static str) -> impl Fn(sled::Error) -> JournalError + '_ {
        move |e| {
            self.fatal(JournalError::Io {
                path: self.path.clone(),
                op,
                detail: e.to_string(),
            })
        }
    }

    fn tx_err(&self, op: &'static str, e: TransactionError<TxAbort>) -> JournalError {
        match e {
            TransactionError::Abort(TxAbort::Damaged { what, detail }) => {
                self.damaged(what, detail)
            }
            TransactionError::Abort(TxAbort::Refused(detail)) => JournalError::Refused {
                path: self.path.clone(),
                op,
                detail,
            },
            TransactionError::Storage(e) => self.io(op)(e),
        }
    }

    /// Resolves with the first fatal error met (in words): the store is
    /// failing (sled's I/O errors, a full disk), damaged, or was deleted.
    /// The agent stops then; retrying cannot help.
    pub fn failed(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.failed.subscribe();
        async move {
            loop {
                if let Some(e) = rx.borrow_and_update().clone() {
                    return e;
                }
                if rx.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }

    /// The first fatal error met, if any.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Refuses every operation once the store has failed: after a write
    /// error sled's memory may hold what its files do not (an ack whose
    /// flush failed), and a sink acting on that (creating a file its
    /// durable state does not know) would deliver rows twice after the
    /// restart. What is durable is exactly what a restart starts from.
    fn live(&self) -> Result<(), JournalError> {
        match &*self.failed.borrow() {
            None => Ok(()),
            Some(first) => Err(JournalError::Io {
                path: self.path.clone(),
                op: "use",
                detail: format!("the store stopped after an earlier failure ({first})"),
            }),
        }
    }

    /// A sealed value, unsealed; damage is a fatal error naming `key`.
    fn get(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        op: &'static str,
    ) -> Result<Option<Vec<u8>>, JournalError> {
        self.live()?;
        match tree.get(key).map_err(self.io(op))? {
            None => Ok(None),
            Some(v) => unseal(key, &v)
                .map(|b| Some(b.to_vec()))
                .map_err(|e| self.damaged(format!("journal key {}", what_key(key)), e)),
        }
    }

    fn put(
        &self,
        tree: &sled::Tree,
        key: &[u8],
        value: &[u8],
        op: &'static str,
    ) -> Result<(), JournalError> {
        self.live()?;
        tree.insert(key, seal(key, value)).map_err(self.io(op))?;
        Ok(())
    }

    fn meta_u64(&self, key: &[u8]) -> Result<u64, JournalError> {
        Ok(self
            .get(&self.meta, key, "read meta")?
            .and_then(|v| key_u64(&v))
            .unwrap_or_default())
    }

    /// A sink seen for the first time starts at the oldest row still held.
    fn init_cursor(&self, name: &str) -> Result<(), JournalError> {
        if self
            .get(&self.sinks, name.as_bytes(), "read cursor")?
            .is_some()
        {
            return Ok(());
        }
        let first = self
            .blocks
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
        Ok(self.meta_u64(NEXT_SEQ)?.saturating_sub(1))
    }

    /// Bytes of rows currently held (keys and values).
    pub fn stored_bytes(&self) -> Result<u64, JournalError> {
        self.meta_u64(STORED_BYTES)
    }

    /// Totals over all files ever read.
    pub fn counters(&self) -> Result<Counters, JournalError> {
        match self.get(&self.meta, COUNTERS, "read meta")? {
            None => Ok(Counters::default()),
            Some(v) => serde_json::from_slice(&v).map_err(|e| self.damaged("counters".into(), e)),
        }
    }

    /// What only grows, as the marker records it.
    fn progress(&self) -> Result<Progress, JournalError> {
        Ok(Progress {
            next_seq: self.meta_u64(NEXT_SEQ)?,
            lines_read: self.counters()?.lines,
            cursors: self
                .cursors()?
                .into_iter()
                .map(|(name, c)| (name, c.seq))
                .collect(),
        })
    }

    /// Allocates a new id for a file seen for the first time.
    pub fn new_file_id(&self) -> Result<u64, JournalError> {
        self.live()?;
        self.meta
            .transaction(|meta_t| {
                let n = tx_u64(meta_t, NEXT_FILE_ID)? + 1;
                tx_put(meta_t, NEXT_FILE_ID, &u64_key(n))?;
                Ok(n)
            })
            .map_err(|e| self.tx_err("allocate file id", e))
    }

    /// Every file checkpoint, in id order.
    pub fn files(&self) -> Result<Vec<FileState>, JournalError> {
        self.live()?;
        let mut out = Vec::new();
        for item in self.files.iter() {
            let (k, v) = item.map_err(self.io("read files"))?;
            let what = || format!("file checkpoint {}", what_key(&k));
            let json = unseal(&k, &v).map_err(|e| self.damaged(what(), e))?;
            let state = serde_json::from_slice(json).map_err(|e| self.damaged(what(), e))?;
            out.push(state);
        }
        Ok(out)
    }

    /// Atomically appends `rows`, stores the files' new checkpoints and
    /// adds `delta` to the counters. Returns the last sequence number
    /// assigned. Several files go in one commit because each sled
    /// transaction writes and syncs sled's log buffer twice (0.34's
    /// `pin_log`): a hundred runs written at once would otherwise cost a
    /// hundred transactions per look.
    pub fn commit_ingest(
        &self,
        files: &[FileState],
        rows: Vec<Row>,
        delta: &Counters,
    ) -> Result<u64, JournalError> {
        let last = self.commit(files, &rows, delta)?;
        if !rows.is_empty() {
            let first = last + 1 - rows.len() as u64;
            self.recent.committed(first, Arc::new(rows));
        }
        Ok(last)
    }

    /// Appends rows that come from no file: run events the agent itself
    /// knows of (init mode's exit code, for W&B rows that are staged).
    /// Returns the last sequence number assigned.
    pub fn commit_events(&self, rows: &[Row]) -> Result<u64, JournalError> {
        self.commit(&[], rows, &Counters::default())
    }

    fn commit(
        &self,
        files: &[FileState],
        rows: &[Row],
        delta: &Counters,
    ) -> Result<u64, JournalError> {
        self.live()?;
        let block = (!rows.is_empty()).then(|| encode_block(rows));
        let files_json: Vec<(u64, Vec<u8>)> = files
            .iter()
            .map(|f| (f.id, serde_json::to_vec(f).expect("file state serialises")))
            .collect();
        // Held until the transaction recording the block is done (see
        // segments.rs).
        let mut segments = self.segments.lock();
        let placed = match &block {
            Some(block) => {
                let first = self.meta_u64(NEXT_SEQ)?.max(1);
                let loc = segments
                    .append(&self.segments, first, block)
                    .map_err(|e| self.segment_error("append rows", e))?;
                Some((first, loc))
            }
            None => None,
        };
        let last = (&*self.blocks, &*self.files, &*self.meta)
            .transaction(|(blocks_t, files_t, meta_t)| {
                let mut next = tx_u64(meta_t, NEXT_SEQ)?.max(1);
                let mut bytes = tx_u64(meta_t, STORED_BYTES)?;
                if let Some((first, loc)) = &placed {
                    if *first != next {
                        return Err(ConflictableTransactionError::Abort(TxAbort::Refused(
                            format!("rows were committed from #{next} meanwhile, not #{first}"),
                        )));
                    }
                    bytes += loc.len;
                    tx_put(blocks_t, &u64_key(next), &loc.encode())?;
                    next += rows.len() as u64;
                }
                for (id, json) in &files_json {
                    tx_put(files_t, &u64_key(*id), json)?;
                }
                let mut counters: Counters = match tx_get(meta_t, COUNTERS)? {
                    Some(v) => serde_json::from_slice(&v).map_err(|e| {
                        ConflictableTransactionError::Abort(TxAbort::Damaged {
                            what: "counters".into(),
                            detail: e.to_string(),
                        })
                    })?,
                    None => Counters::default(),
                };
                counters.add(delta);
                tx_put(meta_t, NEXT_SEQ, &u64_key(next))?;
                tx_put(meta_t, STORED_BYTES, &u64_key(bytes))?;
                tx_put(
                    meta_t,
                    COUNTERS,
                    &serde_json::to_vec(&counters).expect("counters serialise"),
                )?;
                Ok(next - 1)
            })
            .map_err(|e| self.tx_err("commit rows", e))?;
        drop(segments);
        self.last_seq.send_replace(last);
        Ok(last)
    }

    /// Drops the checkpoint of a file that was read to its end and is gone.
    pub fn forget_file(&self, id: u64) -> Result<(), JournalError> {
        self.live()?;
        self.files
            .remove(u64_key(id))
            .map_err(self.io("forget file"))?;
        Ok(())
    }

    /// The rows of the block recorded at `loc`, read from its segment and
    /// checked against its checksum.
    fn block_rows(&self, key: &[u8], loc: &Location) -> Result<Vec<Row>, JournalError> {
        let first = key_u64(key).unwrap_or_default();
        let block = self
            .segments
            .read(first, loc)
            .map_err(|e| self.segment_error("read rows", e))?;
        let rows = decode_block(&block).map_err(|e| self.damaged(block_what(key, loc), e))?;
        if rows.len() as u64 != loc.rows {
            return Err(self.damaged(
                block_what(key, loc),
                format!("{} rows in the block, {} recorded", rows.len(), loc.rows),
            ));
        }
        Ok(rows)
    }

    /// Rows after `after`, in sequence order: whole blocks (one per ingest
    /// commit) until at least `max` rows are taken, so a block is decoded
    /// once, not once per `max` rows. A block whose checksum fails is a
    /// fatal error naming its rows (see [`JournalError::Corrupt`]): a row
    /// is never skipped silently.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Vec<Entry>, JournalError> {
        self.live()?;
        let want = after.saturating_add(1);
        // The block holding `want` starts at or before it.
        let start = match self
            .blocks
            .range(..=u64_key(want))
            .next_back()
            .transpose()
            .map_err(self.io("read rows"))?
        {
            Some((k, v)) if key_u64(&k).unwrap_or(0) + self.location(&k, &v)?.rows > want => {
                key_u64(&k).unwrap_or(want)
            }
            _ => want,
        };
        let mut out = Vec::new();
        for item in self.blocks.range(u64_key(start)..) {
            if out.len() >= max {
                break;
            }
            let (k, v) = item.map_err(self.io("read rows"))?;
            let first = key_u64(&k).unwrap_or_default();
            let loc = self.location(&k, &v)?;
            let (block, read) = match self.recent.get(first, loc.rows) {
                Some(block) => (block, None),
                None => {
                    let block = Arc::new(self.block_rows(&k, &loc)?);
                    (block.clone(), Some((first, block)))
                }
            };
            let skip = want.saturating_sub(first) as usize;
            out.extend((skip..block.len()).map(|i| Entry {
                seq: first + i as u64,
                row: RowRef::in_block(&block, i),
            }));
            if let Some((first, block)) = read {
                self.recent.read(first, block);
            }
        }
        self.recent.trim();
        Ok(out)
    }

    pub fn cursor(&self, sink: &str) -> Result<SinkCursor, JournalError> {
        match self.get(&self.sinks, sink.as_bytes(), "read cursor")? {
            None => Ok(SinkCursor::default()),
            Some(v) if v.len() >= 8 => Ok(SinkCursor {
                seq: key_u64(&v[..8]).unwrap_or_default(),
                state: v[8..].to_vec(),
            }),
            Some(_) => Err(self.damaged(format!("cursor of sink {sink}"), "shorter than 8 bytes")),
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
        self.put(&self.sinks, sink.as_bytes(), &v, "write cursor")
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
        self.live()?;
        let _guard = self.compact_lock.lock().unwrap_or_else(|p| p.into_inner());
        let upto = self.min_cursor()?;
        let mut keys = Vec::new();
        let mut freed = 0u64;
        for item in self.blocks.range(..=u64_key(upto)) {
            let (k, v) = item.map_err(self.io("read rows"))?;
            let loc = self.location(&k, &v)?;
            let last = key_u64(&k).unwrap_or(0) + loc.rows.max(1) - 1;
            if last > upto {
                break; // partly acknowledged: kept until all of it is
            }
            freed += loc.len;
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
        self.release_segments()?;
        self.acked.send_replace(upto);
        Ok(())
    }

    /// Deletes the segment files no recorded block is in any more, once
    /// sled has made the removal of their blocks durable: a crash then
    /// cannot bring back a location in a file that is gone.
    fn release_segments(&self) -> Result<(), JournalError> {
        let mut st = self.segments.lock();
        let oldest = match self.blocks.first().map_err(self.io("read rows"))? {
            Some((k, v)) => Some(self.location(&k, &v)?.segment),
            None => None,
        };
        let unused = st.unused(oldest);
        if unused.is_empty() {
            return Ok(());
        }
        st.sync(&self.segments)
            .map_err(|e| self.segment_error("sync the row segments", SegmentError::Io(e)))?;
        self.db.flush().map_err(self.io("flush"))?;
        st.delete(&self.segments, &unused)
            .map_err(|e| self.segment_error("delete delivered rows", SegmentError::Io(e)))
    }

    fn delete_rows(&self, keys: &[sled::IVec], freed: u64) -> Result<(), JournalError> {
        self.live()?;
        (&*self.blocks, &*self.meta)
            .transaction(|(blocks_t, meta_t)| {
                for k in keys {
                    blocks_t.remove(k)?;
                }
                let bytes = tx_u64(meta_t, STORED_BYTES)?;
                tx_put(meta_t, STORED_BYTES, &u64_key(bytes.saturating_sub(freed)))?;
                Ok(())
            })
            .map_err(|e| self.tx_err("delete acknowledged rows", e))
    }

    /// Watches the last committed sequence number.
    pub fn subscribe_rows(&self) -> watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// Watches changes to the set-aside runs (`set-aside retry`, `drop`).
    pub fn subscribe_set_aside(&self) -> watch::Receiver<u64> {
        self.set_aside_changes.subscribe()
    }

    /// Watches the lowest cursor of the enabled sinks.
    pub fn subscribe_acked(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    pub fn enabled_sinks(&self) -> &[String] {
        &self.enabled_sinks
    }

    /// How often the journal is made durable in the background: what a
    /// crash can cost is re-reading that much of the sources. The agent
    /// sets the sinks' shortest flush interval, so that a trickle pays
    /// one fsync per interval, as the sinks' own flushes do.
    pub fn set_flush_interval(&self, interval: std::time::Duration) {
        if let Some(f) = &self.flusher {
            f.set_interval(interval);
        }
    }

    /// Makes everything committed so far durable on disk.
    pub fn flush(&self) -> Result<(), JournalError> {
        self.live()?;
        // The segments first, under their lock: sled then records no block
        // whose bytes are not durable (segments.rs).
        let mut st = self.segments.lock();
        st.sync(&self.segments)
            .map_err(|e| self.segment_error("sync the row segments", SegmentError::Io(e)))?;
        self.db.flush().map_err(self.io("flush"))?;
        Ok(())
    }

    /// The store's files: sled's and the row segments.
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        let sled = self.db.size_on_disk().map_err(self.io("measure"))?;
        Ok(sled + self.segments.bytes())
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let failed = self.failed.borrow().is_some();
        if let Some(mut f) = self.flusher.take() {
            f.stop(!failed);
        }
        if failed {
            // sled's handles flush when the last one goes, and after a
            // write error (a full disk) sled 0.34.7's flush waits forever
            // for a write it will never make: the agent would hang instead
            // of exiting. They are leaked; the process is stopping, and
            // what was durable is what the restart starts from.
            return;
        }
        // SAFETY: each handle is dropped once, here, and never used again
        // (`self` is being dropped).
        if let Err(e) = self.segments.lock().sync(&self.segments) {
            tracing::error!(store = %self.path.display(), error = %e, "the row segments could not be synced on close");
        }
        unsafe {
            ManuallyDrop::drop(&mut self.blocks);
            ManuallyDrop::drop(&mut self.files);
            ManuallyDrop::drop(&mut self.sinks);
            ManuallyDrop::drop(&mut self.meta);
            ManuallyDrop::drop(&mut self.imports);
            ManuallyDrop::drop(&mut self.set_aside);
            ManuallyDrop::drop(&mut self.refused);
            ManuallyDrop::drop(&mut self.run_names);
            ManuallyDrop::drop(&mut self.artifacts);
            ManuallyDrop::drop(&mut self.db);
        }
    }
}

/// A recorded block, in words: its rows and where they are.
fn block_what(key: &[u8], loc: &Location) -> String {
    let first = key_u64(key).unwrap_or_default();
    let at = format!(
        "segment {} at byte {}",
        segments::file_name(loc.segment),
        loc.offset
    );
    match loc.rows {
        n if n > 0 => format!("rows #{first}..#{} ({at})", first + n - 1),
        _ => format!("the rows from #{first} ({at})"),
    }
}

/// The segment files of the store at `path`, checked against the first
/// and last block `blocks` records, and repaired after a crash.
fn open_segments(path: &Path, blocks: &sled::Tree) -> Result<Segments, SegmentError> {
    let read = |item: sled::Result<Option<(sled::IVec, sled::IVec)>>| -> Result<Option<Location>, SegmentError> {
        let Some((k, v)) = item.map_err(|e| SegmentError::Io(e.to_string()))? else {
            return Ok(None);
        };
        let damaged = |detail: String| SegmentError::Damaged {
            what: format!("the location of the rows from #{}", what_key(&k)),
            detail,
        };
        let v = unseal(&k, &v).map_err(damaged)?;
        Location::decode(v).map(Some).map_err(damaged)
    };
    let first = read(blocks.first())?;
    let last = read(blocks.last())?;
    Segments::open(&path.join("journal/segments"), first, last, true)
}

/// sled's error while opening the store: a full disk, a read-only file
/// system or a permission is said as such (starting over would not help,
/// freeing space or fixing the permission does); any other (sled finds its
/// files corrupt or cut) refuses the store.
fn sled_open_error(path: &Path, op: &'static str, e: sled::Error) -> JournalError {
    let environmental = |io: &std::io::Error| {
        matches!(
            io.raw_os_error(),
            Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
        ) || io.kind() == std::io::ErrorKind::PermissionDenied
            || io.to_string().contains("No space left")
    };
    match e {
        sled::Error::Io(io) if environmental(&io) => JournalError::Io {
            path: path.to_path_buf(),
            op,
            detail: format!(
                "{io} (sled's files under {})",
                path.join("journal").display()
            ),
        },
        e => JournalError::Open {
            path: path.to_path_buf(),
            detail: format!("sled cannot {op} it: {e}"),
        },
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
    fn sinks_share_the_rows_of_recent_blocks_and_read_older_ones_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["a", "b"]).unwrap();
        // Three times the rows kept, in blocks of `per`.
        let per = 64;
        let total = 3 * recent::KEEP_ROWS as i64;
        for first in (1..=total).step_by(per) {
            let rows = (first..first + per as i64).map(row).collect();
            j.commit_ingest(&[file(1, first as u64)], rows, &Counters::default())
                .unwrap();
        }
        // Two sinks reading everything: the newest blocks (kept after the
        // first read) are the same rows in memory, the older ones equal.
        let a = j.read_after(0, usize::MAX).unwrap();
        let b = j.read_after(0, usize::MAX).unwrap();
        assert_eq!(a.len() as i64, total);
        let kept_from = total as usize - recent::KEEP_ROWS;
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!((x.seq, y.seq), (i as u64 + 1, i as u64 + 1));
            assert_eq!(x.row, row(i as i64 + 1));
            assert_eq!(y.row, x.row);
            assert_eq!(x.row.shares_block_with(&y.row), i >= kept_from, "row {i}");
        }
        // Read from the middle of a block, after a reopen (nothing recent):
        // the same rows, from the segment files.
        drop((a, b, j));
        let j = Journal::open(dir.path(), &["a", "b"]).unwrap();
        let c = j.read_after(3, usize::MAX).unwrap();
        assert_eq!(c[0].seq, 4);
        assert_eq!(c.len() as i64, total - 3);
        assert!(c.iter().all(|e| e.row == row(e.seq as i64)));
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
            j.commit_ingest(&[file(1, 30)], vec![row(1), row(2)], &delta)
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
        assert_eq!(
            j.commit_ingest(&[file(1, 40)], vec![row(3)], &delta)
                .unwrap(),
            3
        );
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

    /// A store with rows, cursors and a file checkpoint, closed.
    fn used_store(store: &Path) {
        let j = Journal::open(store, &["jsonl"]).unwrap();
        j.commit_ingest(&[file(1, 30)], vec![row(1), row(2)], &Counters::default())
            .unwrap();
        j.ack("jsonl", 1, vec![]).unwrap();
        j.record_progress().unwrap();
    }

    fn refusal(store: &Path) -> String {
        let err = Journal::open(store, &["jsonl"])
            .err()
            .expect("must be refused");
        assert!(matches!(err, JournalError::Open { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains(&store.display().to_string()), "{msg}");
        assert!(msg.contains("--reset-store"), "{msg}");
        msg
    }

    #[test]
    fn a_store_used_before_is_never_taken_for_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        used_store(&store);
        let m = marker::read(&store).unwrap().unwrap();
        assert_eq!(m.progress.next_seq, 3);
        assert_eq!(m.progress.cursors["jsonl"], 1);
        // Reopening an intact store is fine, and it is checked as well.
        drop(Journal::open(&store, &["jsonl"]).unwrap());

        for gone in ["db", "conf"] {
            let copy = dir.path().join(format!("without-{gone}"));
            copy_dir(&store, &copy);
            std::fs::remove_file(copy.join("journal").join(gone)).unwrap();
            let msg = refusal(&copy);
            assert!(msg.contains(&format!("journal/{gone} is missing")), "{msg}");
            assert!(
                !copy.join("journal").join(gone).exists(),
                "nothing was created"
            );
        }
        let copy = dir.path().join("emptied");
        copy_dir(&store, &copy);
        std::fs::remove_dir_all(copy.join("journal")).unwrap();
        let msg = refusal(&copy);
        assert!(msg.contains("is missing"), "{msg}");
        assert!(matches!(
            Journal::open_existing(&copy),
            Err(JournalError::Open { .. })
        ));

        // A different (new) store under an old marker.
        let copy = dir.path().join("swapped");
        copy_dir(&store, &copy);
        std::fs::remove_dir_all(copy.join("journal")).unwrap();
        let other = dir.path().join("other");
        drop(Journal::open(&other, &["jsonl"]).unwrap());
        copy_dir(&other.join("journal"), &copy.join("journal"));
        assert!(refusal(&copy).contains("not the store its marker"));

        // Behind the marker: sled lost what it had made durable.
        let copy = dir.path().join("behind");
        copy_dir(&store, &copy);
        let mut m = marker::read(&copy).unwrap().unwrap();
        m.progress.next_seq = 10;
        marker::write(&copy, &m).unwrap();
        assert!(refusal(&copy).contains("rows up to #9"));
        let mut m = marker::read(&store).unwrap().unwrap();
        m.progress.cursors.insert("jsonl".into(), 2);
        marker::write(&copy, &m).unwrap();
        assert!(refusal(&copy).contains("sink jsonl's cursor is at #1"));
    }

    #[test]
    fn a_damaged_row_stops_the_journal_and_the_store_is_refused_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        used_store(&store);
        {
            let j = Journal::open(&store, &["jsonl"]).unwrap();
            j.commit_events(&[row(3), row(4)]).unwrap();
            // One bit of the block of #3..#4 flipped, as a disk would.
            let v = j.blocks.get(u64_key(3)).unwrap().unwrap();
            let loc = Location::decode(unseal(&u64_key(3), &v).unwrap()).unwrap();
            let seg = j.segments.path(loc.segment);
            let mut bytes = std::fs::read(&seg).unwrap();
            bytes[loc.offset as usize + 20] ^= 0x10;
            std::fs::write(&seg, bytes).unwrap();
            let err = j.read_after(2, 10).unwrap_err();
            assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("rows #3..#4")
                    && msg.contains("checksum")
                    && msg.contains(&seg.display().to_string())
                    && msg.contains("--reset-store"),
                "{msg}"
            );
            assert!(j.failure().is_some());
            // Nothing goes on after it: not even what still works.
            assert!(j.read_after(0, 10).is_err());
            assert!(j.ack("jsonl", 2, vec![]).is_err());
            assert!(j.flush().is_err());
        }
        let msg = refusal(&store);
        assert!(msg.contains("rows #3..#4"), "{msg}");
        // The failed journal's sled handles are leaked (see `Drop`), with
        // sled's lock: in this process the store stays locked.
        assert!(matches!(
            reset_store(&store),
            Err(JournalError::Locked { .. })
        ));
    }

    #[test]
    fn reset_store_moves_the_journal_aside_and_a_new_one_starts() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        assert_eq!(reset_store(&store).unwrap(), None, "nothing to move");
        used_store(&store);
        let old_id = marker::read(&store).unwrap().unwrap().store_id;
        std::fs::remove_file(store.join("journal/db")).unwrap();
        refusal(&store);
        let aside = reset_store(&store).unwrap().unwrap();
        assert!(aside.join("journal/conf").exists() && aside.join(marker::FILE).exists());
        assert!(aside
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("store.broken-"));
        let j = Journal::open(&store, &["jsonl"]).unwrap();
        assert_eq!(j.last_seq().unwrap(), 0, "a new store");
        assert_ne!(j.journal_id().unwrap(), old_id);
        assert!(matches!(
            reset_store(&store),
            Err(JournalError::Locked { .. })
        ));
    }

    #[test]
    fn the_store_deleted_under_an_open_journal_is_told_and_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let j = Journal::open(&store, &["jsonl"]).unwrap();
        j.commit_events(&[row(1)]).unwrap();
        j.check_presence().unwrap();
        // The marker alone is written again.
        std::fs::remove_file(marker::path(&store)).unwrap();
        j.check_presence().unwrap();
        assert!(marker::path(&store).exists());
        std::fs::remove_dir_all(&store).unwrap();
        let err = j.check_presence().unwrap_err();
        assert!(matches!(err, JournalError::Gone { .. }), "{err}");
        assert!(j
            .failure()
            .unwrap()
            .contains("deleted while the agent was running"));
        drop(j);
        let msg = refusal(&store);
        assert!(msg.contains("deleted while the agent was running"), "{msg}");
    }

    #[test]
    fn a_format_1_journal_is_sealed_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        {
            // What format 1 wrote: the same trees, values without checksums.
            let db = sled::open(store.join("journal")).unwrap();
            let meta = db.open_tree("meta").unwrap();
            let block = encode_block(&[row(1), row(2)]);
            meta.insert(FORMAT_KEY, &u64_key(1)).unwrap();
            meta.insert(NEXT_SEQ, &u64_key(3)).unwrap();
            meta.insert(STORED_BYTES, &u64_key(8 + block.len() as u64))
                .unwrap();
            meta.insert(b"journal_id", b"0123").unwrap();
            db.open_tree("rows")
                .unwrap()
                .insert(u64_key(1), block)
                .unwrap();
            let f = serde_json::to_vec(&file(1, 30)).unwrap();
            db.open_tree("files")
                .unwrap()
                .insert(u64_key(1), f)
                .unwrap();
            let mut cursor = u64_key(1).to_vec();
            cursor.extend_from_slice(b"st");
            db.open_tree("sinks")
                .unwrap()
                .insert("jsonl", cursor)
                .unwrap();
            db.flush().unwrap();
        }
        let j = Journal::open(&store, &["jsonl"]).unwrap();
        assert_eq!(j.last_seq().unwrap(), 2);
        assert_eq!(j.files().unwrap()[0].offset, 30);
        assert_eq!(j.cursor("jsonl").unwrap().state, b"st");
        assert_eq!(j.journal_id().unwrap(), "0123");
        assert_eq!(j.read_after(1, 10).unwrap()[0].row, row(2));
        j.ack("jsonl", 2, vec![]).unwrap();
        assert_eq!(j.stored_bytes().unwrap(), 0, "accounting stays exact");
        assert_eq!(marker::read(&store).unwrap().unwrap().store_id, "0123");
    }

    /// Rows of about 1 KiB each, so that a few commits fill a segment.
    fn wide_rows(from: i64, n: i64) -> Vec<Row> {
        (from..from + n)
            .map(|step| {
                let mut r = row(step);
                r.values = (0..40)
                    .map(|i| (format!("metric/{i:03}"), step as f64))
                    .collect();
                r
            })
            .collect()
    }

    fn segment_files(store: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(store.join("journal/segments"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn delivered_rows_give_their_segment_files_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let j = Journal::open(&store, &["a"]).unwrap();
        let mut last = 0;
        while j.segments.bytes() < 2 * segments::RETIRE_BYTES {
            last = j.commit_events(&wide_rows(last as i64 + 1, 500)).unwrap();
        }
        assert_eq!(segment_files(&store).len(), 1);
        j.ack("a", last / 2, vec![]).unwrap();
        assert_eq!(
            segment_files(&store).len(),
            1,
            "half of it is still pending"
        );
        assert!(j.stored_bytes().unwrap() > 0);
        j.ack("a", last, vec![]).unwrap();
        assert_eq!(j.stored_bytes().unwrap(), 0);
        assert!(segment_files(&store).is_empty(), "every row delivered");
        assert_eq!(j.segments.bytes(), 0);
        // A short active segment is kept for the next rows, and deleted by
        // the next open once delivered.
        let last = j.commit_events(&wide_rows(1, 10)).unwrap();
        j.ack("a", last, vec![]).unwrap();
        assert_eq!(segment_files(&store).len(), 1);
        drop(j);
        let j = Journal::open(&store, &["a"]).unwrap();
        assert!(segment_files(&store).is_empty());
        assert_eq!(j.size_on_disk().unwrap(), j.db.size_on_disk().unwrap());
    }

    #[test]
    fn what_a_crash_leaves_past_the_last_commit_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        {
            let j = Journal::open(&store, &["a"]).unwrap();
            j.commit_events(&[row(1), row(2)]).unwrap();
        }
        let seg = segment_files(&store).pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        // An append whose transaction never committed, and a segment
        // started for it.
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.extend_from_slice(&[0xEE; 300]);
        std::fs::write(&seg, bytes).unwrap();
        let orphan = store.join("journal/segments").join(segments::file_name(3));
        std::fs::write(&orphan, b"half a block").unwrap();
        let j = Journal::open(&store, &["a"]).unwrap();
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), len);
        assert!(!orphan.exists());
        assert_eq!(j.commit_events(&[row(3)]).unwrap(), 3);
        let seqs: Vec<u64> = j.read_after(0, 10).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn a_segment_file_missing_or_cut_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        used_store(&store);
        let seg = segment_files(&store).pop().unwrap();
        let copy = dir.path().join("missing");
        copy_dir(&store, &copy);
        std::fs::remove_file(copy.join("journal/segments").join(seg.file_name().unwrap())).unwrap();
        let msg = refusal(&copy);
        assert!(msg.contains("is missing") && msg.contains(".seg"), "{msg}");
        let copy = dir.path().join("cut");
        copy_dir(&store, &copy);
        let cut = copy.join("journal/segments").join(seg.file_name().unwrap());
        let len = std::fs::metadata(&cut).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let msg = refusal(&copy);
        assert!(msg.contains(&cut.display().to_string()), "{msg}");
    }

    #[test]
    fn a_format_2_journal_moves_its_rows_to_segment_files_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        {
            // What format 2 wrote: sealed blocks in the `rows` tree.
            let db = sled::open(store.join("journal")).unwrap();
            let meta = db.open_tree("meta").unwrap();
            let rows = db.open_tree(OLD_ROWS_TREE).unwrap();
            let mut stored = 0;
            for (first, block) in [
                (1u64, encode_block(&[row(1), row(2)])),
                (3, encode_block(&[row(3)])),
            ] {
                let sealed = seal(&u64_key(first), &block);
                stored += 8 + sealed.len() as u64;
                rows.insert(u64_key(first), sealed).unwrap();
            }
            meta.insert(FORMAT_KEY, &u64_key(2)).unwrap();
            for (k, v) in [(NEXT_SEQ, u64_key(4)), (STORED_BYTES, u64_key(stored))] {
                meta.insert(k, seal(k, &v)).unwrap();
            }
            let mut cursor = u64_key(1).to_vec();
            cursor.extend_from_slice(b"st");
            db.open_tree("sinks")
                .unwrap()
                .insert("jsonl", seal(b"jsonl", &cursor))
                .unwrap();
            db.flush().unwrap();
        }
        let j = Journal::open(&store, &["jsonl"]).unwrap();
        assert!(!j
            .db
            .tree_names()
            .iter()
            .any(|n| &**n == OLD_ROWS_TREE.as_bytes()));
        assert_eq!(
            j.meta.get(FORMAT_KEY).unwrap().as_deref(),
            Some(&u64_key(FORMAT)[..])
        );
        assert_eq!(j.last_seq().unwrap(), 3);
        assert_eq!(j.cursor("jsonl").unwrap().state, b"st");
        let rows: Vec<Row> = j
            .read_after(1, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.row.into_row())
            .collect();
        assert_eq!(rows, [row(2), row(3)]);
        assert_eq!(j.stored_bytes().unwrap(), j.segments.bytes() - 8);
        j.ack("jsonl", 3, vec![]).unwrap();
        assert_eq!(j.stored_bytes().unwrap(), 0, "accounting stays exact");
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
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
