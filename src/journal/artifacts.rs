//! What the journal keeps about checkpoint files shipped as W&B model
//! artifacts: one record per version of a file (a run, a path relative to
//! its run directory, and the size and modification time it was complete
//! with), and how far its upload got.
//!
//! The journal owns these types because it stores them: `source::artifacts`
//! finds the files and records them ([`ArtifactFinder`]),
//! `sink::wandb::artifact` moves a record through its states; neither
//! knows the other. Every state change is one sled write, flushed before the next
//! network step, so that after a SIGKILL at any point the uploader resumes
//! the same version (the same artifact id once the server gave one) instead
//! of creating another.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Journal, JournalError};

/// One complete version of a checkpoint file, and its upload's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactFile {
    /// The MOSAIC run id (the run directory's name).
    pub run_id: String,
    /// Path relative to the run directory, `/`-separated.
    pub rel_path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the epoch, when found complete.
    pub mtime_ns: i128,
    /// MD5 of the content, base64, as W&B's manifest carries it (`None`
    /// until hashed).
    #[serde(default)]
    pub md5_b64: Option<String>,
    /// The step in the file's name (`checkpoint_000010`, `step_500`), if any.
    #[serde(default)]
    pub step: Option<i64>,
    pub state: ArtifactState,
    /// Order of discovery (versions are logged in this order).
    pub seq: u64,
    /// A copy of the file kept in the store (a version imported from a
    /// bundle: the run directory is on another machine), absolute. `None`:
    /// the file is read from the run directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
}

/// How far one version got. Forward only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArtifactState {
    /// Complete and counted within the limits; nothing sent yet.
    Pending,
    /// `CreateArtifact` answered with this id (a PENDING version on the
    /// server: invisible until committed). A restart resumes with it.
    Created {
        artifact_id: String,
        /// The collection's latest version then (the manifest's base).
        base_artifact_id: Option<String>,
    },
    /// Committed, or the server already held a committed version with the
    /// same digest (`deduplicated`: no new version, the alias moved).
    Done {
        artifact_id: String,
        deduplicated: bool,
    },
    /// Written, with a copy of the file, into the run's W&B offline log
    /// (`run-<id>.wandb` in `dir`): `wandb sync` of that directory logs it.
    Offline { dir: String },
    /// Not shipped: over a byte limit, or the file changed while being
    /// read. Counted and logged once.
    Skipped { reason: String },
    /// Carried, with a copy of the file, in bundle `bundle_id` (`export`):
    /// the machine that imports it logs it.
    Exported { bundle_id: String },
}

impl ArtifactFile {
    /// The record's key: run, path, then the version's identity.
    pub fn key(&self) -> Vec<u8> {
        format!(
            "{}\0{}\0{:040}\0{:020}",
            self.run_id, self.rel_path, self.mtime_ns, self.size
        )
        .into_bytes()
    }

    /// A short word for `status`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            ArtifactState::Pending => "pending",
            ArtifactState::Created { .. } => "uploading",
            ArtifactState::Done {
                deduplicated: false,
                ..
            } => "uploaded",
            ArtifactState::Done {
                deduplicated: true, ..
            } => "deduplicated",
            ArtifactState::Offline { .. } => "written offline",
            ArtifactState::Skipped { .. } => "skipped",
            ArtifactState::Exported { .. } => "exported",
        }
    }

    /// Where the file is read from: its copy in the store, or the run
    /// directory under `runs_dir`.
    pub fn path(&self, runs_dir: &Path) -> PathBuf {
        match &self.stored {
            Some(p) => PathBuf::from(p),
            None => runs_dir.join(&self.run_id).join(&self.rel_path),
        }
    }

    /// The file at `path` still is the version found: the same size and,
    /// in a run directory, the same modification time (a copy in the store
    /// has no writer, and its own modification time).
    pub fn unchanged(&self, path: &Path) -> bool {
        std::fs::metadata(path)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                let mtime = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
                m.len() == self.size && (self.stored.is_some() || mtime == self.mtime_ns)
            })
            .unwrap_or(false)
    }
}

/// What finds complete checkpoint files and records them in the journal
/// (Pending, or Skipped over a limit). `source::artifacts` implements it;
/// the W&B artifact uploader calls it before each pass, so that it looks
/// at the run directories on its own schedule without importing the
/// source: records flow source -> journal -> sink.
pub trait ArtifactFinder: Send {
    /// Records the versions that became complete since the last look.
    fn record_complete(&mut self, journal: &Journal) -> Result<(), JournalError>;
    /// Matching files seen that are not complete yet.
    fn waiting(&self) -> usize;
}

impl Journal {
    /// Every artifact record, in discovery order.
    pub fn artifact_files(&self) -> Result<Vec<ArtifactFile>, JournalError> {
        let mut out = Vec::new();
        for kv in self.artifacts.iter() {
            let (_, v) = kv.map_err(self.io("read artifact records"))?;
            match serde_json::from_slice::<ArtifactFile>(&v) {
                Ok(f) => out.push(f),
                Err(e) => {
                    tracing::warn!(error = %e, "an artifact record of the journal cannot be read; ignored")
                }
            }
        }
        out.sort_by_key(|f| f.seq);
        Ok(out)
    }

    /// Stores `file` (new, or its new state) and makes it durable before
    /// returning: the next network step may depend on it.
    pub fn put_artifact_file(&self, file: &ArtifactFile) -> Result<(), JournalError> {
        let v = serde_json::to_vec(file).expect("artifact record serialises");
        self.artifacts
            .insert(file.key(), v)
            .map_err(self.io("store an artifact record"))?;
        self.artifacts
            .flush()
            .map_err(self.io("flush artifact records"))?;
        self.artifact_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Artifact records written by this process so far.
    pub fn artifact_writes(&self) -> u64 {
        self.artifact_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The next discovery number.
    pub fn next_artifact_seq(&self) -> Result<u64, JournalError> {
        Ok(self
            .artifact_files()?
            .iter()
            .map(|f| f.seq + 1)
            .max()
            .unwrap_or(0))
    }
}
