//! What `mosaic-shipper status` reports, and the snapshot a running agent
//! keeps of it.
//!
//! sled allows one process per store, so while the agent runs `status`
//! cannot open the journal; the agent therefore writes the same report to
//! `<store>/status.json` every few seconds, and `status` reads that.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::SourceKind;
use crate::journal::{ImportRecord, Journal, JournalError, RunName, SetAsideRun};
use crate::sink::RunnerStatus;
use crate::stats::Counters;

/// The report; its JSON form is stable for scripts (fields are only added).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// "store" when read from the journal, "snapshot" when from a running agent.
    pub source: String,
    /// Unix seconds when the report was made.
    pub taken_at: f64,
    pub store: StoreStatus,
    pub files: Vec<FileStatus>,
    pub sinks: Vec<SinkStatus>,
    /// Totals over every file ever read.
    pub counters: Counters,
    /// Files matching a pattern that cannot be opened, with the error.
    pub unreadable: BTreeMap<String, String>,
    /// Bundles imported into this store (`import`), in import order.
    #[serde(default)]
    pub imports: Vec<ImportRecord>,
    /// The followed files' figures by source name.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceSummary>,
    /// The followed files' figures by source kind (`lines`, `tfevents`,
    /// `document`).
    #[serde(default)]
    pub kinds: BTreeMap<String, KindSummary>,
    /// Run ids the sinks show under other names (unsafe or colliding
    /// characters, too long): the original and the names used.
    #[serde(default)]
    pub mapped_runs: Vec<RunName>,
    /// Checkpoint versions found complete, for W&B artifacts, in the
    /// order found.
    #[serde(default)]
    pub artifacts: Vec<ArtifactStatus>,
}

/// One checkpoint version and how far its upload got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactStatus {
    pub run_id: String,
    /// Relative to the run directory.
    pub path: String,
    pub size: u64,
    /// `pending`, `uploading`, `uploaded`, `deduplicated` (W&B held the
    /// same content: no new version) or `skipped`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The file's modification time (ns) of the version, to tell a file
    /// rewritten since from the version recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_ns: Option<i128>,
}

/// The `state` of a matching file the journal has no version of yet:
/// still being written, or not settled (`artifacts.settle_ms`).
pub const BEING_WRITTEN: &str = "being written";

impl ArtifactStatus {
    fn of(f: &crate::journal::artifacts::ArtifactFile) -> ArtifactStatus {
        ArtifactStatus {
            run_id: f.run_id.clone(),
            path: f.rel_path.clone(),
            size: f.size,
            mtime_ns: Some(f.mtime_ns),
            state: f.state_name().to_string(),
            reason: match &f.state {
                crate::journal::artifacts::ArtifactState::Skipped { reason } => {
                    Some(reason.clone())
                }
                _ => None,
            },
        }
    }
}

/// What the files of one source gave. Over the files followed now (a
/// deleted file's figures stay in the totals only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceSummary {
    pub kind: SourceKind,
    pub files: u64,
    /// Lines (records) taken from its files.
    pub lines: u64,
    pub rows: u64,
    /// Files followed but not read (the agent's own event files).
    pub ignored_files: u64,
    /// Files that yielded lines and no row: the ones to `explain`.
    pub files_without_rows: u64,
}

/// What the files of one kind gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KindSummary {
    pub files: u64,
    pub lines: u64,
    pub rows: u64,
    pub ignored_files: u64,
    pub files_without_rows: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreStatus {
    pub path: PathBuf,
    /// The journal's files: sled's and the row segments.
    pub size_on_disk: u64,
    /// Bytes of rows held, the figure `store.max_bytes` caps.
    pub stored_bytes: u64,
    pub last_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    pub id: u64,
    pub path: String,
    pub dev: u64,
    pub ino: u64,
    pub fingerprint_len: u32,
    pub fingerprint_crc32c: u32,
    /// Committed byte offset: just past the last complete line taken.
    pub offset: u64,
    pub counters: Counters,
    /// The source that found the file (empty in checkpoints older than
    /// sources) and its kind.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub kind: SourceKind,
    /// Why the file is followed but not read (e.g. an event file the
    /// agent wrote itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

impl FileStatus {
    /// It yielded lines and never a row (nor a point another source of
    /// its run delivered first), and is not ignored.
    pub fn without_rows(&self) -> bool {
        self.ignored.is_none()
            && self.counters.lines > 0
            && self.counters.rows == 0
            && self.counters.duplicates == 0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkStatus {
    pub name: String,
    pub enabled: bool,
    pub cursor: u64,
    /// Rows journaled but not yet acknowledged by this sink.
    pub pending: u64,
    /// How far behind the sink is, in seconds: now minus the wall time of
    /// the oldest row it has not acknowledged (the time the worker logged
    /// it, else when it was read); 0 when nothing is pending.
    #[serde(default)]
    pub lag_seconds: f64,
    /// The running agent's figures for this sink's runner (retries, last
    /// progress); only in a running agent's snapshot, for sinks it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<crate::sink::RunnerStatus>,
    /// Rows of runs this sink refused, kept in the store (`mosaic-shipper
    /// set-aside` retries or drops them); not counted in `pending`.
    #[serde(default)]
    pub set_aside_rows: u64,
    /// Those runs, with the reason.
    #[serde(default)]
    pub set_aside: Vec<SetAsideRun>,
    /// W&B sinks: runs left to the worker's own W&B run (run id to the
    /// SDK's run directory), which this sink does not ship.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub left_to_worker: BTreeMap<String, String>,
}

pub const SNAPSHOT_FILE: &str = "status.json";

impl Status {
    /// Reads the report from an open journal.
    pub fn collect(
        journal: &Journal,
        enabled: &[&str],
        unreadable: BTreeMap<String, String>,
    ) -> Result<Status, JournalError> {
        let last_seq = journal.last_seq()?;
        let now = crate::util::now_secs();
        let lag = |cursor: u64| -> Result<f64, JournalError> {
            if cursor >= last_seq {
                return Ok(0.0);
            }
            let oldest = journal.read_after(cursor, 1)?;
            Ok(oldest
                .first()
                .map_or(0.0, |e| (now - e.row.wall_time).max(0.0)))
        };
        let mut sinks = Vec::new();
        let aside = journal.set_aside_runs(None)?;
        let aside_of = |name: &str| -> Vec<SetAsideRun> {
            aside.iter().filter(|r| r.sink == name).cloned().collect()
        };
        for (name, c) in journal.cursors()? {
            let set_aside = aside_of(&name);
            let left_to_worker = if name.starts_with("wandb") {
                crate::sink::wandb::worker_tracks::left_to_workers(&c.state)
            } else {
                BTreeMap::new()
            };
            sinks.push(SinkStatus {
                enabled: enabled.contains(&name.as_str()),
                cursor: c.seq,
                pending: last_seq.saturating_sub(c.seq),
                lag_seconds: lag(c.seq)?,
                runner: None,
                set_aside_rows: set_aside.iter().map(|r| r.rows).sum(),
                set_aside,
                name,
                left_to_worker,
            });
        }
        for name in enabled {
            if !sinks.iter().any(|s| s.name == *name) {
                sinks.push(SinkStatus {
                    name: name.to_string(),
                    enabled: true,
                    cursor: 0,
                    pending: last_seq,
                    lag_seconds: lag(0)?,
                    runner: None,
                    left_to_worker: BTreeMap::new(),
                    set_aside_rows: 0,
                    set_aside: Vec::new(),
                });
            }
        }
        let mut imports = journal.imports()?;
        imports.sort_by_key(|r| r.local_first);
        Ok(Status {
            source: "store".into(),
            taken_at: crate::util::now_secs(),
            store: StoreStatus {
                path: journal.path().to_path_buf(),
                size_on_disk: journal.size_on_disk()?,
                stored_bytes: journal.stored_bytes()?,
                last_seq,
            },
            files: journal
                .files()?
                .into_iter()
                .map(|f| FileStatus {
                    id: f.id,
                    path: f.path,
                    dev: f.dev,
                    ino: f.ino,
                    fingerprint_len: f.fp_len,
                    fingerprint_crc32c: f.fp,
                    offset: f.offset,
                    counters: f.counters,
                    source: f.source,
                    kind: f.kind,
                    ignored: f.ignored,
                })
                .collect(),
            sinks,
            counters: journal.counters()?,
            unreadable,
            imports,
            sources: BTreeMap::new(),
            kinds: BTreeMap::new(),
            mapped_runs: journal.run_names()?,
            artifacts: journal
                .artifact_files()?
                .iter()
                .map(ArtifactStatus::of)
                .collect(),
        }
        .summarized())
    }

    /// Fills in the per-source and per-kind figures from the files.
    fn summarized(mut self) -> Status {
        self.sources.clear();
        self.kinds.clear();
        for f in &self.files {
            let s = self.sources.entry(f.source.clone()).or_default();
            s.kind = f.kind;
            let k = self.kinds.entry(f.kind.as_str().to_string()).or_default();
            let ignored = u64::from(f.ignored.is_some());
            let silent = u64::from(f.without_rows());
            s.files += 1;
            s.lines += f.counters.lines;
            s.rows += f.counters.rows;
            s.ignored_files += ignored;
            s.files_without_rows += silent;
            k.files += 1;
            k.lines += f.counters.lines;
            k.rows += f.counters.rows;
            k.ignored_files += ignored;
            k.files_without_rows += silent;
        }
        self
    }

    /// Adds the running agent's runner figures to the sinks it runs.
    pub fn with_runners(mut self, runners: &[(&str, RunnerStatus)]) -> Status {
        for sink in &mut self.sinks {
            sink.runner = runners
                .iter()
                .find(|(name, _)| *name == sink.name)
                .map(|(_, r)| *r);
        }
        self
    }

    /// Adds the checkpoint files found now (run, path, size, modification
    /// time) that no version recorded matches, as [`BEING_WRITTEN`].
    pub fn with_unsettled(mut self, files: Vec<(String, String, u64, i128)>) -> Status {
        for (run_id, path, size, mtime) in files {
            let known = self.artifacts.iter().any(|a| {
                a.run_id == run_id
                    && a.path == path
                    && a.size == size
                    && a.mtime_ns.map_or(true, |m| m == mtime)
            });
            if !known {
                self.artifacts.push(ArtifactStatus {
                    run_id,
                    path,
                    size,
                    state: BEING_WRITTEN.into(),
                    reason: None,
                    mtime_ns: Some(mtime),
                });
            }
        }
        self
    }

    /// Writes the snapshot atomically (temp file + rename).
    pub fn write_snapshot(&self, store: &Path) -> std::io::Result<()> {
        let mut snap = self.clone();
        snap.source = "snapshot".into();
        let tmp = store.join(format!("{SNAPSHOT_FILE}.tmp"));
        crate::util::write_private(
            &tmp,
            &serde_json::to_vec_pretty(&snap).expect("status serialises"),
        )?;
        std::fs::rename(&tmp, store.join(SNAPSHOT_FILE))
    }

    pub fn read_snapshot(store: &Path) -> std::io::Result<Status> {
        let bytes = std::fs::read(store.join(SNAPSHOT_FILE))?;
        let status: Status = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        // A snapshot written before the summaries existed has none.
        Ok(if status.sources.is_empty() {
            status.summarized()
        } else {
            status
        })
    }

    /// The human-readable form.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let age = crate::util::now_secs() - self.taken_at;
        if self.source == "snapshot" {
            let _ = writeln!(s, "(the agent is running; snapshot from {age:.0}s ago)");
        }
        let _ = writeln!(
            s,
            "store {}: {} bytes on disk, {} bytes of rows held, last row #{}",
            self.store.path.display(),
            self.store.size_on_disk,
            self.store.stored_bytes,
            self.store.last_seq
        );
        let _ = writeln!(s, "\nsinks:");
        for k in &self.sinks {
            let _ = write!(
                s,
                "  {:<12} {:<8} cursor #{:<10} pending {}",
                k.name,
                if k.enabled { "enabled" } else { "disabled" },
                k.cursor,
                k.pending
            );
            if k.pending > 0 {
                let _ = write!(s, " (lag {:.0}s)", k.lag_seconds);
            }
            if let Some(r) = &k.runner {
                let _ = write!(s, "  retries {}", r.retries);
            }
            if k.set_aside_rows > 0 || !k.set_aside.is_empty() {
                let _ = write!(s, "  set aside {} rows", k.set_aside_rows);
            }
            let _ = writeln!(s);
            for r in &k.set_aside {
                let _ = writeln!(
                    s,
                    "    set aside: run {:?}, {} rows{}: {}",
                    r.run,
                    r.rows,
                    if r.retry { " (retry pending)" } else { "" },
                    r.reason
                );
            }
            for (run, own) in &k.left_to_worker {
                let _ = writeln!(
                    s,
                    "    run {run}: left to the worker's own W&B run {own} (when_worker_tracks = \"skip\")"
                );
            }
        }
        if self.sinks.iter().any(|k| !k.set_aside.is_empty()) {
            let _ = writeln!(
                s,
                "  (`mosaic-shipper set-aside retry --sink S --run R` delivers them again, \
                 `set-aside drop` gives them up)"
            );
        }
        if !self.mapped_runs.is_empty() {
            let _ = writeln!(s, "\nrun ids shown under other names:");
            for m in &self.mapped_runs {
                if m.path == m.wandb {
                    let _ = writeln!(s, "  {:?} -> {}", m.run, m.path);
                } else {
                    let _ = writeln!(s, "  {:?} -> {} (W&B: {})", m.run, m.path, m.wandb);
                }
            }
        }
        if !self.sources.is_empty() {
            let _ = writeln!(s, "\nsources:");
            let width = self
                .sources
                .keys()
                .map(|n| n.len().max(6))
                .max()
                .unwrap_or(6);
            for (name, x) in &self.sources {
                let name = if name.is_empty() { "(none)" } else { name };
                let _ = write!(
                    s,
                    "  {name:<width$}  {:<8}  {:>5} files  {:>10} lines  {:>10} rows",
                    x.kind.as_str(),
                    x.files,
                    x.lines,
                    x.rows
                );
                let _ = writeln!(s, "{}", notes(x.ignored_files, x.files_without_rows));
            }
            let _ = writeln!(s, "\nby kind:");
            for (kind, x) in &self.kinds {
                let _ = write!(
                    s,
                    "  {kind:<width$}  {:<8}  {:>5} files  {:>10} lines  {:>10} rows",
                    "", x.files, x.lines, x.rows
                );
                let _ = writeln!(s, "{}", notes(x.ignored_files, x.files_without_rows));
            }
        }
        let _ = writeln!(s, "\nfiles:");
        for f in &self.files {
            let _ = write!(
                s,
                "  {}\n    source {} ({})  dev {} ino {} fingerprint {:08x}/{}  offset {}  lines {} \
                 rows {}",
                f.path,
                if f.source.is_empty() { "(none)" } else { &f.source },
                f.kind.as_str(),
                f.dev,
                f.ino,
                f.fingerprint_crc32c,
                f.fingerprint_len,
                f.offset,
                f.counters.lines,
                f.counters.rows
            );
            if let Some(why) = &f.ignored {
                let _ = write!(s, "  [ignored: {why}]");
            } else if f.without_rows() {
                let _ = write!(
                    s,
                    "  [lines but no rows: see `mosaic-shipper explain FILE`]"
                );
            }
            let _ = writeln!(s);
        }
        let c = &self.counters;
        let _ = writeln!(
            s,
            "\ntotals: {} lines, {} rows, {} ordinary lines, {} invalid JSON, {} invalid UTF-8, \
             {} oversized, {} rejected records, {} skipped values, {} truncations, {} unterminated",
            c.lines,
            c.rows,
            c.unmatched,
            c.invalid_json,
            c.invalid_utf8,
            c.oversized,
            c.rejected,
            c.skipped_values,
            c.truncations,
            c.unterminated
        );
        for (path, err) in &self.unreadable {
            let _ = writeln!(s, "unreadable: {path}: {err}");
        }
        if !self.artifacts.is_empty() {
            let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
            for a in &self.artifacts {
                *by_state.entry(a.state.as_str()).or_default() += 1;
            }
            let counts: Vec<String> = by_state.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let _ = writeln!(
                s,
                "\nartifacts (checkpoints for W&B): {}",
                counts.join(", ")
            );
            for a in &self.artifacts {
                let _ = write!(s, "  {} {} {} bytes: {}", a.run_id, a.path, a.size, a.state);
                if let Some(r) = &a.reason {
                    let _ = write!(s, " ({r})");
                }
                let _ = writeln!(s);
            }
        }
        if !self.imports.is_empty() {
            let _ = writeln!(s, "\nimported bundles:");
        }
        for r in &self.imports {
            let _ = writeln!(
                s,
                "  {}: {} rows #{}..#{} of journal {} on {} ({}), here #{}..#{}",
                r.bundle_id,
                r.rows,
                r.first,
                r.last,
                r.source_journal,
                r.source_host,
                r.source_store,
                r.local_first,
                r.local_last
            );
        }
        s
    }
}

/// The tail of a summary line: files ignored, files without rows.
fn notes(ignored: u64, without_rows: u64) -> String {
    let mut parts = Vec::new();
    if ignored > 0 {
        parts.push(format!("{ignored} ignored (the agent's own)"));
    }
    if without_rows > 0 {
        parts.push(format!(
            "{without_rows} with lines but no rows: `mosaic-shipper explain FILE` says why"
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("  ({})", parts.join("; "))
    }
}
