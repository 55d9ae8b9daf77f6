//! The artifact records of an offline run directory (the SDK's offline
//! `run.log_artifact`, or the agent's checkpoints written offline), logged
//! by `sync` with the online uploader's protocol
//! ([`crate::sink::wandb::artifact::version`]), in log order.
//!
//! Exactly once: how far each record got is kept in
//! `run-<id>.wandb.mosaic-artifacts` beside the log (record number ->
//! created version id, or done), written atomically before the first
//! file is sent and after the commit. A sync interrupted at any point
//! resumes the same server-side version; a repeated sync (also with
//! `--include-synced`) creates no second one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::offline_run::OfflineRun;
use crate::sink::wandb::artifact::manifest;
use crate::sink::wandb::artifact::multipart::PartPolicy;
use crate::sink::wandb::artifact::protocol::Target;
use crate::sink::wandb::artifact::version::{self, Logged, Progress, Resume, Version, VersionFile};
use crate::sink::wandb::artifact::ArtifactError;
use crate::sink::wandb::client::Client;
use crate::sink::wandb::http::WandbError;
use crate::sink::wandb::offline::records::ArtifactRecord;

/// How far one record got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Step {
    Created {
        artifact_id: String,
        base_artifact_id: Option<String>,
    },
    Done {
        artifact_id: String,
        deduplicated: bool,
    },
    Skipped {
        reason: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    run_id: String,
    /// By record number among the log's artifact records.
    records: BTreeMap<usize, Step>,
}

fn progress_file(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".mosaic-artifacts");
    PathBuf::from(name)
}

fn load(path: &Path, run: &str) -> Saved {
    let fresh = || Saved {
        run_id: run.to_string(),
        records: BTreeMap::new(),
    };
    let Ok(text) = std::fs::read(path) else {
        return fresh();
    };
    match serde_json::from_slice::<Saved>(&text) {
        Ok(s) if s.run_id == run => s,
        Ok(_) | Err(_) => {
            tracing::warn!(file = %path.display(), "artifact sync progress unreadable or of another run; logging the records as new (the server deduplicates identical content)");
            fresh()
        }
    }
}

/// Temp file, fsync, rename: the old state or the new, never a torn one.
fn store(path: &Path, saved: &Saved) -> Result<(), ArtifactError> {
    use std::io::Write;
    let tmp = {
        let mut n = path.as_os_str().to_owned();
        n.push(".tmp");
        PathBuf::from(n)
    };
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(saved).expect("serialises"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        ArtifactError::Progress(format!(
            "cannot save artifact sync progress {}: {e}",
            path.display()
        ))
    })
}

/// [`Progress`] of one record, kept in the progress file.
struct Kept<'a> {
    path: &'a Path,
    saved: &'a mut Saved,
    n: usize,
}

impl Progress for Kept<'_> {
    fn created(&mut self, r: &Resume) -> Result<(), ArtifactError> {
        self.saved.records.insert(
            self.n,
            Step::Created {
                artifact_id: r.artifact_id.clone(),
                base_artifact_id: r.base_artifact_id.clone(),
            },
        );
        store(self.path, self.saved)
    }

    fn unchanged(&self, f: &VersionFile) -> bool {
        std::fs::metadata(&f.path).is_ok_and(|m| m.len() == f.size)
    }
}

/// What logging a directory's records did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// New versions committed now.
    pub committed: usize,
    /// Records the server already held (same digest): aliases moved.
    pub deduplicated: usize,
    /// Records done by an earlier sync.
    pub before: usize,
    /// Records not logged, with why.
    pub skipped: Vec<String>,
}

/// The version a record describes, or why it cannot be logged here.
fn version_of(a: &ArtifactRecord) -> Result<Version, String> {
    if !a.finalize {
        return Err("not finalized (a distributed artifact's part)".into());
    }
    let Some(m) = &a.manifest else {
        return Err("no manifest".into());
    };
    let mut files = Vec::new();
    for e in &m.contents {
        if !e.r#ref.is_empty() {
            return Err(format!(
                "entry {} is a reference ({}), which only `wandb sync` logs",
                e.path, e.r#ref
            ));
        }
        if e.local_path.is_empty() {
            return Err(format!("entry {} has no local file", e.path));
        }
        files.push(VersionFile {
            name: e.path.clone(),
            md5_b64: e.digest.clone(),
            size: u64::try_from(e.size).unwrap_or(0),
            path: PathBuf::from(&e.local_path),
        });
    }
    let entries: Vec<manifest::Entry> = files
        .iter()
        .map(|f| manifest::Entry {
            name: f.name.clone(),
            md5_b64: f.md5_b64.clone(),
            size: f.size,
            local_path: String::new(),
            birth_artifact_id: None,
        })
        .collect();
    let digest = manifest::artifact_digest(&entries);
    if !a.digest.is_empty() && a.digest != digest {
        return Err(format!(
            "its digest {} is not the manifest's {digest}",
            a.digest
        ));
    }
    Ok(Version {
        collection: a.name.clone(),
        type_name: a.r#type.clone(),
        aliases: a.aliases.clone(),
        metadata: if a.metadata.is_empty() {
            "{}".into()
        } else {
            a.metadata.clone()
        },
        description: (!a.description.is_empty()).then(|| a.description.clone()),
        digest,
        files,
    })
}

/// Logs every artifact record of `run` not logged before, in order, as
/// versions of W&B run `t` (which exists: its rows went first).
pub async fn log_records(
    client: &Client,
    run: &OfflineRun,
    t: &Target<'_>,
) -> Result<Counts, ArtifactError> {
    let mut out = Counts::default();
    if run.artifacts.is_empty() {
        return Ok(out);
    }
    let path = progress_file(&run.file);
    let mut saved = load(&path, &run.run_id);
    for (n, a) in run.artifacts.iter().enumerate() {
        let resume = match saved.records.get(&n) {
            Some(Step::Done { .. } | Step::Skipped { .. }) => {
                out.before += 1;
                continue;
            }
            Some(Step::Created {
                artifact_id,
                base_artifact_id,
            }) => Some(Resume {
                artifact_id: artifact_id.clone(),
                base_artifact_id: base_artifact_id.clone(),
            }),
            None => None,
        };
        let skip = |out: &mut Counts, saved: &mut Saved, reason: String| {
            tracing::warn!(dir = %run.dir.display(), artifact = %a.name, %reason, "artifact record not logged");
            out.skipped
                .push(format!("{} (record {n}): {reason}", a.name));
            saved.records.insert(n, Step::Skipped { reason });
            store(&path, saved)
        };
        let v = match version_of(a) {
            Ok(v) => v,
            Err(reason) => {
                skip(&mut out, &mut saved, reason)?;
                continue;
            }
        };
        if let Some(f) = v
            .files
            .iter()
            .find(|f| std::fs::metadata(&f.path).map_or(true, |m| m.len() != f.size))
        {
            // Not skipped for good: the file may be restored and synced again.
            return Err(ArtifactError::Progress(format!(
                "{}: artifact {} (record {n}): its file {} is missing or not {} bytes",
                run.dir.display(),
                a.name,
                f.path.display(),
                f.size
            )));
        }
        let mut kept = Kept {
            path: &path,
            saved: &mut saved,
            n,
        };
        let logged = match version::log_version(
            client.http(),
            client.base_url(),
            t,
            &v,
            resume,
            &PartPolicy::default(),
            &mut kept,
        )
        .await
        {
            Ok(logged) => logged,
            // W&B refused this version itself (not the key or the project):
            // set aside, as a run's rows are, so the records after it go on.
            Err(ArtifactError::Wandb(e @ WandbError::GraphQlRun { .. })) => {
                skip(&mut out, &mut saved, e.to_string())?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let step = match logged {
            Logged::Committed { artifact_id } => {
                out.committed += 1;
                Step::Done {
                    artifact_id,
                    deduplicated: false,
                }
            }
            Logged::Deduplicated { artifact_id } => {
                out.deduplicated += 1;
                Step::Done {
                    artifact_id,
                    deduplicated: true,
                }
            }
            Logged::Changed { file } => {
                return Err(ArtifactError::Progress(format!(
                "{}: artifact {} (record {n}): {file} changed while it was uploaded; not committed",
                run.dir.display(),
                a.name
            )))
            }
        };
        saved.records.insert(n, step);
        store(&path, &saved)?;
    }
    Ok(out)
}
