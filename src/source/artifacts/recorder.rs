//! The artifact source's side of the journal: complete checkpoint files
//! recorded as versions (Pending, or Skipped over a byte limit), for the
//! W&B uploader to ship. It exists so that the uploader (a sink) never
//! reads run directories itself: it calls [`ArtifactFinder`], which the
//! journal defines, and reads records back.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::{step_in_name, ArtifactSource, CompleteFile};
use crate::config::ArtifactsConfig;
use crate::journal::artifacts::{ArtifactFile, ArtifactFinder, ArtifactState};
use crate::journal::{Journal, JournalError};

/// Finds complete files ([`ArtifactSource`]) and records them, applying
/// `artifacts.max_file_bytes` and `artifacts.max_run_bytes`.
pub struct Recorder {
    source: ArtifactSource,
    max_file_bytes: u64,
    max_run_bytes: u64,
}

impl Recorder {
    /// An invalid glob in `cfg.paths` is an error naming it.
    pub fn new(cfg: &ArtifactsConfig) -> Result<Recorder, String> {
        Ok(Recorder {
            source: ArtifactSource::new(
                &cfg.runs_dir,
                &cfg.paths,
                Duration::from_millis(cfg.settle_ms),
            )?,
            max_file_bytes: cfg.max_file_bytes,
            max_run_bytes: cfg.max_run_bytes,
        })
    }
}

impl ArtifactFinder for Recorder {
    fn record_complete(&mut self, journal: &Journal) -> Result<(), JournalError> {
        let found = self.source.scan(SystemTime::now());
        if found.is_empty() {
            return Ok(());
        }
        let known = journal.artifact_files()?;
        let mut seq = journal.next_artifact_seq()?;
        let mut run_bytes: HashMap<String, u64> = Default::default();
        for f in known
            .iter()
            .filter(|f| !matches!(f.state, ArtifactState::Skipped { .. }))
        {
            *run_bytes.entry(f.run_id.clone()).or_default() += f.size;
        }
        for c in found {
            let mut rec = record(&c, seq);
            if known.iter().any(|k| k.key() == rec.key()) {
                continue;
            }
            seq += 1;
            let used = run_bytes.entry(c.run_id.clone()).or_default();
            if c.size > self.max_file_bytes {
                rec.state = ArtifactState::Skipped {
                    reason: format!(
                        "larger than artifacts.max_file_bytes ({} > {})",
                        c.size, self.max_file_bytes
                    ),
                };
            } else if *used + c.size > self.max_run_bytes {
                rec.state = ArtifactState::Skipped {
                    reason: format!(
                        "the run's artifacts would pass artifacts.max_run_bytes ({} + {} > {})",
                        used, c.size, self.max_run_bytes
                    ),
                };
            } else {
                *used += c.size;
            }
            if let ArtifactState::Skipped { reason } = &rec.state {
                tracing::warn!(run = %c.run_id, file = %c.path.display(), %reason, "checkpoint not shipped");
            } else {
                tracing::info!(run = %c.run_id, file = %c.path.display(), size = c.size, "checkpoint complete; shipping it as a W&B artifact");
            }
            journal.put_artifact_file(&rec)?;
        }
        Ok(())
    }

    fn waiting(&self) -> usize {
        self.source.waiting()
    }
}

fn record(c: &CompleteFile, seq: u64) -> ArtifactFile {
    ArtifactFile {
        run_id: c.run_id.clone(),
        rel_path: c.rel_path.clone(),
        size: c.size,
        mtime_ns: c.mtime_ns,
        md5_b64: None,
        step: step_in_name(&c.rel_path),
        state: ArtifactState::Pending,
        seq,
        stored: None,
    }
}
