//! One artifact version through core's `ArtifactSaver.Save` sequence
//! ([`protocol`]), resumable: the one implementation of the protocol that
//! the online uploader (checkpoints from the journal) and `sync` (artifact
//! records of offline run directories) share. The caller persists what
//! [`Progress::created`] hands it before any file is sent, and passes it
//! back as `resume` after a crash, so the same server-side version is
//! completed instead of a second one created.

use std::path::PathBuf;

use super::manifest;
use super::multipart::{self, PartPolicy};
use super::protocol::{self, Announced, NewVersion, Target};
use super::ArtifactError;
use crate::sink::wandb::http::Http;

/// A file of a version, read from `path` when the server asks for it.
#[derive(Debug, Clone)]
pub struct VersionFile {
    pub name: String,
    pub md5_b64: String,
    pub size: u64,
    pub path: PathBuf,
}

/// A version to log.
#[derive(Debug, Clone)]
pub struct Version {
    pub collection: String,
    pub type_name: String,
    pub aliases: Vec<String>,
    /// JSON text.
    pub metadata: String,
    pub description: Option<String>,
    /// The manifest digest ([`manifest::artifact_digest`] of the files).
    pub digest: String,
    pub files: Vec<VersionFile>,
}

/// A version created on the server and not committed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub artifact_id: String,
    pub base_artifact_id: Option<String>,
}

/// How a version ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logged {
    /// Committed as a new version.
    Committed { artifact_id: String },
    /// The server held a committed version with the same digest: no new
    /// version, the aliases moved onto it.
    Deduplicated { artifact_id: String },
    /// A file was not what was announced after it was sent: not committed.
    Changed { file: String },
}

/// What the caller keeps between the steps.
pub trait Progress {
    /// The server created the version (PENDING); durable before returning.
    fn created(&mut self, r: &Resume) -> Result<(), ArtifactError>;
    /// Whether `f` still is the content announced (checked after its upload).
    fn unchanged(&self, f: &VersionFile) -> bool;
}

/// Logs `v` (see the module documentation); files of `policy`'s
/// threshold and more go in parts.
pub async fn log_version(
    http: &Http,
    base: &str,
    t: &Target<'_>,
    v: &Version,
    resume: Option<Resume>,
    policy: &PartPolicy,
    progress: &mut (dyn Progress + Send + Sync),
) -> Result<Logged, ArtifactError> {
    let r = match resume {
        Some(r) => r,
        None => {
            let aliases: Vec<&str> = v.aliases.iter().map(String::as_str).collect();
            let created = protocol::create_artifact(
                http,
                base,
                t,
                &NewVersion {
                    collection: &v.collection,
                    type_name: &v.type_name,
                    digest: &v.digest,
                    aliases: &aliases,
                    metadata: &v.metadata,
                    description: v.description.as_deref(),
                },
            )
            .await?;
            if created.state == "COMMITTED" {
                return Ok(Logged::Deduplicated {
                    artifact_id: created.id,
                });
            }
            let r = Resume {
                artifact_id: created.id,
                base_artifact_id: created.latest_id,
            };
            progress.created(&r)?;
            r
        }
    };
    let (id, base_id) = (r.artifact_id.as_str(), r.base_artifact_id.as_deref());
    let (manifest_id, _) = protocol::create_manifest(http, base, t, id, base_id, None).await?;
    // Part MD5s as core computes them, just before announcing the files
    // (as core does): a read of the file, part by part.
    let mut split = Vec::with_capacity(v.files.len());
    for f in &v.files {
        split.push(match policy.parts(f.size) {
            None => None,
            Some(parts) => {
                let (p, ps) = (f.path.clone(), parts.clone());
                let hexes = tokio::task::spawn_blocking(move || multipart::hash_parts(&p, &ps))
                    .await
                    .expect("hashing does not panic")
                    .map_err(|e| {
                        ArtifactError::Progress(format!(
                            "cannot read {} to hash its parts: {e}",
                            f.path.display()
                        ))
                    })?;
                let numbered: Vec<(u64, String)> =
                    parts.iter().map(|p| p.number).zip(hexes).collect();
                Some((parts, numbered))
            }
        });
    }
    let announced: Vec<Announced> = v
        .files
        .iter()
        .zip(&split)
        .map(|(f, s)| Announced {
            name: &f.name,
            md5_b64: &f.md5_b64,
            parts: s.as_ref().map(|(_, n)| n.as_slice()),
        })
        .collect();
    let answers = protocol::create_files(http, base, t, id, &manifest_id, &announced).await?;
    let mut entries = Vec::new();
    for ((f, answer), s) in v.files.iter().zip(answers).zip(&split) {
        let birth = answer.birth.clone();
        if let (Some(urls), Some((parts, hexes))) = (&answer.multipart, s) {
            protocol::put_parts(http, base, t, &answer, urls, &f.path, parts, hexes).await?;
            if !progress.unchanged(f) {
                return Ok(Logged::Changed {
                    file: f.path.display().to_string(),
                });
            }
        } else if let Some(to) = &answer.upload {
            protocol::put_file(http, t, to, &f.path, f.size).await?;
            if !progress.unchanged(f) {
                // What was sent may not be what was hashed: never commit it.
                return Ok(Logged::Changed {
                    file: f.path.display().to_string(),
                });
            }
        }
        entries.push(manifest::Entry {
            name: f.name.clone(),
            md5_b64: f.md5_b64.clone(),
            size: f.size,
            local_path: f.path.display().to_string(),
            birth_artifact_id: Some(birth),
        });
    }
    let bytes = manifest::manifest_json(&entries);
    let (_, to) =
        protocol::create_manifest(http, base, t, id, base_id, Some(&manifest::md5_b64(&bytes)))
            .await?;
    let to = to.expect("create_manifest returns the URL when asked for it");
    protocol::put_manifest(http, t, &to, bytes).await?;
    protocol::commit(http, base, t, id).await?;
    Ok(Logged::Committed {
        artifact_id: r.artifact_id,
    })
}
