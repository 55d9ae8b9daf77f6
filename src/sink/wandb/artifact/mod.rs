//! Checkpoint files as versions of W&B `model` artifacts, exactly once.
//!
//! Naming, as `run.log_model(path)` of W&B's SDK names what it logs: the
//! artifact (collection) `run-<W&B run id>-<file name>`, type `model`,
//! holding the one file under its file name, alias `latest`, metadata
//! `{"step", "source_path", "size"}` (step: the number in the file's
//! name, when there is one). A file rewritten in place, or the same name
//! in another checkpoint directory (`checkpoint_000010/x.pkl`,
//! `checkpoint_000020/x.pkl`), is a new version of the same artifact; the
//! same content again has the same digest, so the server keeps one
//! version and moves `latest` onto it. The run "logged" every version
//! (`runName`), which is the lineage W&B shows.
//!
//! Exactly once (the journal's `ArtifactFile` states, each durable before
//! the next network step): a version found complete is recorded Pending;
//! `CreateArtifact`'s id is recorded (Created) before any file is sent; a
//! restart resumes that same server-side version, whose files the server
//! then reports held (a file is uploaded again, in full, only if its
//! upload had not finished); Done is recorded after `CommitArtifact`. A
//! version is committed only after its manifest and every file arrived,
//! so a crash never leaves a partial version, and no step creates a second
//! version of the same content. The upload itself is streamed from the
//! file, with the W&B client's retry policy and proxy; a file of 2 GiB
//! and more in parts, as the SDK sends it ([`multipart`]), each part read
//! and sent on its own. An upload cut by a crash is not resumed part by
//! part: the restart asks for new URLs and sends the file again in full.

pub mod manifest;
pub mod multipart;
pub mod protocol;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::ArtifactsConfig;
use crate::journal::artifacts::{ArtifactFile, ArtifactFinder, ArtifactState};
use crate::journal::Journal;
use crate::sink::wandb::client::Client;
use crate::sink::wandb::graphql::UpsertInput;
use crate::sink::wandb::http::WandbError;
use crate::sink::wandb::{wandb_run_id, WandbSettings};
use crate::sink::Mode;
use protocol::Target;
use version::{Logged, Resume, Version, VersionFile};

/// The artifact name for a file of a run: `run-<run id>-<file name>`,
/// with characters W&B does not allow in names replaced by `-`.
pub fn artifact_name(wandb_run: &str, rel_path: &str) -> String {
    let base = rel_path.rsplit('/').next().unwrap_or(rel_path);
    format!("run-{wandb_run}-{base}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The metadata of a version, in the SDK's key order.
pub fn metadata(f: &ArtifactFile) -> String {
    let mut m = serde_json::Map::new();
    if let Some(s) = f.step {
        m.insert("step".into(), s.into());
    }
    m.insert("source_path".into(), f.rel_path.clone().into());
    m.insert("size".into(), f.size.into());
    serde_json::Value::Object(m).to_string()
}

/// Why an artifact pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    Wandb(#[from] WandbError),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The progress of an upload could not be kept (file and reason).
    #[error("{0}")]
    Progress(String),
}

/// A journal record as the [`version::Progress`] of its upload.
struct Journaled<'a> {
    journal: &'a Journal,
    f: ArtifactFile,
}

impl version::Progress for Journaled<'_> {
    fn created(&mut self, r: &Resume) -> Result<(), ArtifactError> {
        self.f.state = ArtifactState::Created {
            artifact_id: r.artifact_id.clone(),
            base_artifact_id: r.base_artifact_id.clone(),
        };
        self.journal.put_artifact_file(&self.f)?;
        Ok(())
    }

    fn unchanged(&self, file: &VersionFile) -> bool {
        self.f.unchanged(&file.path)
    }
}

/// Finds complete checkpoint files and ships them (module documentation).
pub struct ArtifactShipper {
    /// Records complete files in the journal before each pass (`None`:
    /// `sync`, which only ships what was recorded).
    finder: Option<Box<dyn ArtifactFinder>>,
    journal: Arc<Journal>,
    /// `None` when W&B rows are staged: versions are only recorded, for
    /// `mosaic-shipper sync` to upload ([`ship_staged`]).
    client: Option<Client>,
    settings: WandbSettings,
    cfg: ArtifactsConfig,
    /// W&B runs announced (UpsertBucket) by this process.
    announced: std::collections::HashSet<String>,
}

impl ArtifactShipper {
    /// `upload`: ship versions as they complete (W&B online); otherwise
    /// only record them (staged). `finder` records the complete files.
    pub fn new(
        cfg: &ArtifactsConfig,
        settings: WandbSettings,
        journal: Arc<Journal>,
        upload: bool,
        finder: Option<Box<dyn ArtifactFinder>>,
    ) -> anyhow::Result<ArtifactShipper> {
        Ok(ArtifactShipper {
            finder,
            journal,
            client: if upload {
                Some(Client::new(&settings)?)
            } else {
                None
            },
            settings,
            cfg: cfg.clone(),
            announced: Default::default(),
        })
    }

    /// Looks and ships every `poll_interval_ms` until told to drain; then
    /// ships what is complete by the deadline and returns. A failed pass
    /// is logged and retried at the next look (versions stay journaled).
    pub async fn run(mut self, mut mode: watch::Receiver<Mode>) -> Result<(), ArtifactError> {
        let poll = Duration::from_millis(self.cfg.poll_interval_ms.max(10));
        let mut failures = 0u32;
        loop {
            let draining = match *mode.borrow() {
                Mode::Run => None,
                Mode::Drain { until } => Some(until),
            };
            if let Some(f) = self.finder.as_mut() {
                f.record_complete(&self.journal)?;
            }
            let shipped = if self.client.is_some() {
                self.ship_pending().await
            } else {
                Ok(())
            };
            match shipped {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "artifact upload failed; retrying at the next look");
                    if draining.is_some() && failures >= 3 {
                        return Err(e);
                    }
                }
            }
            if let Some(until) = draining {
                let pending = if self.client.is_some() {
                    self.pending()?
                } else {
                    0
                };
                let waiting = self.finder.as_ref().map_or(0, |f| f.waiting());
                if (pending == 0 && waiting == 0) || std::time::Instant::now() >= until {
                    return Ok(());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = mode.changed() => {}
            }
        }
    }

    fn pending(&self) -> Result<usize, ArtifactError> {
        Ok(self
            .journal
            .artifact_files()?
            .iter()
            .filter(|f| {
                matches!(
                    f.state,
                    ArtifactState::Pending | ArtifactState::Created { .. }
                )
            })
            .count())
    }

    async fn ship_pending(&mut self) -> Result<(), ArtifactError> {
        for f in self.journal.artifact_files()? {
            if matches!(
                f.state,
                ArtifactState::Pending | ArtifactState::Created { .. }
            ) {
                self.ship(f).await?;
            }
        }
        Ok(())
    }

    fn path_of(&self, f: &ArtifactFile) -> PathBuf {
        f.path(&self.cfg.runs_dir)
    }

    /// Moves one version through its states to Done (or Skipped).
    async fn ship(&mut self, mut f: ArtifactFile) -> Result<(), ArtifactError> {
        let path = self.path_of(&f);
        if f.md5_b64.is_none() {
            let p = path.clone();
            let hashed = tokio::task::spawn_blocking(move || manifest::md5_file(&p))
                .await
                .expect("hashing does not panic");
            match hashed {
                Ok((md5, n)) if n == f.size && f.unchanged(&path) => f.md5_b64 = Some(md5),
                Ok(_) => return self.skip(f, "the file changed while it was read"),
                Err(e) => return self.skip(f, &format!("cannot read it: {e}")),
            }
            self.journal.put_artifact_file(&f)?;
        }
        let Some(mut client) = self.client.take() else {
            return Ok(());
        };
        let r = self.ship_with(&mut client, f.clone(), &path).await;
        self.client = Some(client);
        match r {
            // W&B refused this version itself (GraphQL errors about it, not
            // about the key or the project): asking again gets the same
            // answer, and the versions after it must not wait behind it.
            Err(ArtifactError::Wandb(e @ WandbError::GraphQlRun { .. })) => {
                self.skip(f, &e.to_string())
            }
            r => r,
        }
    }

    /// The network part of [`ship`](Self::ship), from a hashed version.
    async fn ship_with(
        &mut self,
        client: &mut Client,
        f: ArtifactFile,
        path: &Path,
    ) -> Result<(), ArtifactError> {
        let md5 = f.md5_b64.clone().expect("hashed before");
        let run = wandb_run_id(&f.run_id);
        let entity = client
            .entity(self.settings.entity.as_deref())
            .await?
            .unwrap_or_default();
        let project = self.settings.project.clone();
        let t = Target {
            entity: &entity,
            project: &project,
            run: &run,
            display: &f.run_id,
        };
        if !self.announced.contains(&run) {
            // The run must exist before it can log a version; this creates
            // it, or leaves an existing one as it is (no config, no state).
            client
                .upsert(&UpsertInput {
                    id: None,
                    name: &run,
                    project: &project,
                    entity: (!entity.is_empty()).then_some(entity.as_str()),
                    display_name: Some(&f.run_id),
                    config: None,
                    host: None,
                    program: None,
                })
                .await?;
            self.announced.insert(run.clone());
        }
        let name = artifact_name(&run, &f.rel_path);
        let file = VersionFile {
            name: f
                .rel_path
                .rsplit('/')
                .next()
                .unwrap_or(&f.rel_path)
                .to_string(),
            md5_b64: md5,
            size: f.size,
            path: path.to_path_buf(),
        };
        let entry = manifest::Entry {
            name: file.name.clone(),
            md5_b64: file.md5_b64.clone(),
            size: f.size,
            local_path: path.display().to_string(),
            birth_artifact_id: None,
        };
        let v = Version {
            collection: name.clone(),
            type_name: "model".into(),
            aliases: vec!["latest".into()],
            metadata: metadata(&f),
            description: None,
            digest: manifest::artifact_digest(std::slice::from_ref(&entry)),
            files: vec![file],
        };
        let resume = match &f.state {
            ArtifactState::Created {
                artifact_id,
                base_artifact_id,
            } => Some(Resume {
                artifact_id: artifact_id.clone(),
                base_artifact_id: base_artifact_id.clone(),
            }),
            _ => None,
        };
        let mut journaled = Journaled {
            journal: &self.journal,
            f: f.clone(),
        };
        let policy = multipart::PartPolicy {
            threshold: self.cfg.multipart_threshold_bytes,
            part_size: self.cfg.multipart_part_bytes,
        };
        let logged = version::log_version(
            client.http(),
            client.base_url(),
            &t,
            &v,
            resume,
            &policy,
            &mut journaled,
        )
        .await?;
        let mut f = journaled.f;
        let (artifact_id, deduplicated) = match logged {
            Logged::Changed { .. } => {
                return self.skip(f, "the file changed while it was uploaded")
            }
            Logged::Deduplicated { artifact_id } => {
                tracing::info!(run = %f.run_id, artifact = %name, "W&B already holds this content; no new version (latest moved to it)");
                (artifact_id, true)
            }
            Logged::Committed { artifact_id } => {
                tracing::info!(run = %f.run_id, artifact = %name, file = %path.display(), "checkpoint logged as a new W&B artifact version");
                (artifact_id, false)
            }
        };
        f.state = ArtifactState::Done {
            artifact_id,
            deduplicated,
        };
        self.journal.put_artifact_file(&f)?;
        drop_stored(&f);
        Ok(())
    }

    fn skip(&self, mut f: ArtifactFile, reason: &str) -> Result<(), ArtifactError> {
        tracing::warn!(run = %f.run_id, file = %self.path_of(&f).display(), reason, "checkpoint not shipped");
        f.state = ArtifactState::Skipped {
            reason: reason.to_string(),
        };
        self.journal.put_artifact_file(&f)?;
        Ok(())
    }
}

/// `mosaic-shipper sync`: uploads the versions the agent recorded while
/// W&B rows were staged (the checkpoint files must still be where they
/// were found). Returns (versions done now, versions still pending).
pub async fn ship_staged(
    cfg: &ArtifactsConfig,
    settings: WandbSettings,
    journal: Arc<Journal>,
) -> anyhow::Result<(usize, usize)> {
    let mut s = ArtifactShipper::new(cfg, settings, journal, true, None)?;
    let before = s.pending()?;
    if before == 0 {
        return Ok((0, 0));
    }
    s.ship_pending().await?;
    let after = s.pending()?;
    Ok((before - after, after))
}

/// Deletes the store's copy of a version logged (imported from a bundle):
/// W&B has it now, and the store should not grow by every checkpoint.
fn drop_stored(f: &ArtifactFile) {
    if let Some(p) = &f.stored {
        if let Err(e) = std::fs::remove_file(p) {
            tracing::warn!(file = %p, error = %e, "cannot delete the store's copy of a logged checkpoint");
        }
    }
}
