//! Checkpoint versions into a run's offline log, as the SDK's offline
//! `run.log_artifact` writes them: an `ArtifactRecord` (type `model`,
//! alias `latest`, the manifest with the file's MD5 and `local_path`), so
//! that `wandb sync` of the directory creates the same versions online.
//!
//! `wandb sync` reads the file from `local_path`, possibly long after, and
//! the worker may have rewritten the checkpoint by then; so, as the SDK
//! stages a copy, the file is copied into the offline run directory
//! (`artifacts/<n>-<file name>`), its MD5 computed while copying.
//!
//! Exactly once: the keys of the versions written are part of the sink's
//! committed state, so a record cut by recovery is written again and a
//! committed one never; the journal's record is marked `Offline` only
//! once its key is committed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use md5::{Digest, Md5};

use super::records::{
    ArtifactManifest, ArtifactManifestEntry, ArtifactRecord, StoragePolicyConfigItem,
};
use crate::config::ArtifactsConfig;
use crate::journal::artifacts::ArtifactFile;
use crate::journal::Journal;
use crate::sink::wandb::artifact::{artifact_name, manifest, metadata};
use crate::sink::wandb::redact::base64;

/// Where the offline sink finds the versions to write.
#[derive(Clone)]
pub struct ArtifactFeed {
    pub journal: Arc<Journal>,
    pub cfg: ArtifactsConfig,
}

/// Copies `src` to `dest` (created, then fsynced) in 1 MiB pieces;
/// returns the copy's MD5 (base64) and length.
pub fn stage_copy(src: &Path, dest: &Path) -> std::io::Result<(String, u64)> {
    if let Some(d) = dest.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut from = std::fs::File::open(src)?;
    let mut to = std::fs::File::create(dest)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = from.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        to.write_all(&buf[..got])?;
        n += got as u64;
    }
    to.sync_all()?;
    Ok((base64(&h.finalize()), n))
}

/// The staged copy's path for `f` in offline run directory `dir`.
pub fn staged_path(dir: &Path, f: &ArtifactFile) -> PathBuf {
    let base = f.rel_path.rsplit('/').next().unwrap_or(&f.rel_path);
    dir.join("artifacts").join(format!("{}-{base}", f.seq))
}

fn random_id() -> String {
    use rand::Rng;
    const A: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut r = rand::thread_rng();
    (0..25)
        .map(|_| A[r.gen_range(0..A.len())] as char)
        .collect()
}

/// The record for version `f` of W&B run `run`, staged at `local`.
pub fn record(
    f: &ArtifactFile,
    run: &str,
    project: &str,
    entity: &str,
    md5: &str,
    local: &Path,
) -> ArtifactRecord {
    let name = f
        .rel_path
        .rsplit('/')
        .next()
        .unwrap_or(&f.rel_path)
        .to_string();
    let entry = manifest::Entry {
        name: name.clone(),
        md5_b64: md5.to_string(),
        size: f.size,
        local_path: local.display().to_string(),
        birth_artifact_id: None,
    };
    ArtifactRecord {
        run_id: run.to_string(),
        project: project.to_string(),
        entity: entity.to_string(),
        r#type: "model".into(),
        name: artifact_name(run, &f.rel_path),
        digest: manifest::artifact_digest(std::slice::from_ref(&entry)),
        description: String::new(),
        metadata: metadata(f),
        aliases: vec!["latest".into()],
        manifest: Some(ArtifactManifest {
            version: 1,
            storage_policy: "wandb-storage-policy-v1".into(),
            storage_policy_config: vec![StoragePolicyConfigItem {
                key: "storageLayout".into(),
                value_json: "\"V2\"".into(),
            }],
            contents: vec![ArtifactManifestEntry {
                path: name,
                digest: md5.to_string(),
                r#ref: String::new(),
                size: f.size as i64,
                local_path: entry.local_path,
            }],
        }),
        finalize: true,
        client_id: random_id(),
        sequence_client_id: random_id(),
        digest_algorithm: "MANIFEST_MD5".into(),
    }
}
