//! Checkpoint files in bundles: the versions recorded for W&B artifacts
//! travel with the rows, each as a file of the bundle (`checkpoint-<n>`)
//! with its SHA-256 in `files` and what the journal knew of it in
//! `artifacts`.
//!
//! Files are streamed in 1 MiB pieces, never read whole: checkpoints can
//! be gigabytes. On export the copy is hashed (SHA-256 for the bundle,
//! MD5 for W&B) while it is written, and a file that changed meanwhile
//! stays behind, pending, for a later export. On import each file is
//! checked against both digests while it is copied into the store, where
//! `sync` (or the online sink) logs it and then deletes the copy.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::Md5;
use sha2::{Digest, Sha256};

use super::manifest::{ArtifactEntry, FileEntry};
use super::publish::Staging;
use super::BundleError;
use crate::journal::artifacts::{ArtifactFile, ArtifactState};
use crate::journal::Journal;

/// Where an importing store keeps the checkpoint copies it took.
pub const STORE_DIR: &str = "checkpoints";

/// What a copy found: length, SHA-256 (hex), MD5 (base64).
pub struct Digests {
    pub bytes: u64,
    pub sha256: String,
    pub md5_b64: String,
}

/// Copies `from` to `to` (when given) in 1 MiB pieces, hashing what
/// passes; `to` is fsynced.
pub fn copy_hashed(from: &Path, to: Option<&mut std::fs::File>) -> std::io::Result<Digests> {
    let mut src = std::fs::File::open(from)?;
    let (mut sha, mut md5) = (Sha256::new(), Md5::new());
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let mut to = to;
    loop {
        let got = src.read(&mut buf)?;
        if got == 0 {
            break;
        }
        sha.update(&buf[..got]);
        md5.update(&buf[..got]);
        if let Some(out) = to.as_deref_mut() {
            out.write_all(&buf[..got])?;
        }
        bytes += got as u64;
    }
    if let Some(out) = to {
        out.sync_all()?;
    }
    Ok(Digests {
        bytes,
        sha256: sha.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        md5_b64: crate::sink::wandb::redact::base64(&md5.finalize()),
    })
}

/// The checkpoint versions an export carries.
pub struct Carried {
    pub files: Vec<FileEntry>,
    pub entries: Vec<ArtifactEntry>,
    /// The journal records, to mark exported once the bundle is handed over.
    pub records: Vec<ArtifactFile>,
    pub warnings: Vec<String>,
}

/// Copies every version waiting for W&B (recorded, nothing sent yet) into
/// the bundle being written. A version whose file is gone or changed is
/// left pending here, with a warning.
pub fn carry(
    journal: &Journal,
    staging: &Staging,
    runs_dir: &Path,
) -> Result<Carried, BundleError> {
    let mut out = Carried {
        files: Vec::new(),
        entries: Vec::new(),
        records: Vec::new(),
        warnings: Vec::new(),
    };
    for f in journal.artifact_files()? {
        if f.state != ArtifactState::Pending {
            continue;
        }
        let src = f.path(runs_dir);
        let name = format!("checkpoint-{}", f.seq);
        let mut file = staging.create(&name)?;
        let copied = copy_hashed(&src, Some(&mut file));
        let problem = match &copied {
            Err(e) => Some(format!("cannot read it: {e}")),
            Ok(d) if d.bytes != f.size || !f.unchanged(&src) => {
                Some("it changed while it was copied".to_string())
            }
            Ok(d) if f.md5_b64.as_ref().is_some_and(|m| *m != d.md5_b64) => {
                Some("its content is not the one found complete".to_string())
            }
            Ok(_) => None,
        };
        let d = match (problem, copied) {
            (None, Ok(d)) => d,
            (problem, _) => {
                drop(file);
                staging.remove(&name)?;
                out.warnings.push(format!(
                    "checkpoint {} of run {} ({}) is not in the bundle: {}; it stays pending here",
                    f.rel_path,
                    f.run_id,
                    src.display(),
                    problem.unwrap_or_default()
                ));
                continue;
            }
        };
        out.files.push(FileEntry {
            path: name.clone(),
            bytes: d.bytes,
            sha256: d.sha256,
        });
        out.entries.push(ArtifactEntry {
            file: name,
            run_id: f.run_id.clone(),
            rel_path: f.rel_path.clone(),
            size: f.size,
            mtime_ns: f.mtime_ns,
            md5_b64: d.md5_b64,
            step: f.step,
        });
        out.records.push(f);
    }
    Ok(out)
}

/// Marks the carried versions as exported in `bundle_id` (after the
/// bundle took over its rows). A crash before this leaves them pending:
/// the next export carries them again, and import takes each once.
pub fn mark_exported(
    journal: &Journal,
    records: Vec<ArtifactFile>,
    bundle_id: &str,
) -> Result<(), BundleError> {
    for mut f in records {
        f.state = ArtifactState::Exported {
            bundle_id: bundle_id.to_string(),
        };
        journal.put_artifact_file(&f)?;
    }
    Ok(())
}

/// SHA-256 of a bundle file, streamed.
pub fn sha256_of(path: &Path) -> std::io::Result<(u64, String)> {
    copy_hashed(path, None).map(|d| (d.bytes, d.sha256))
}

/// Copies the bundle's checkpoint versions that the store does not know
/// yet into `<store>/checkpoints/<bundle id>/`, checking each copy's
/// SHA-256 and MD5 against the manifest. Nothing is recorded yet.
pub fn take(
    dir: &Path,
    store: &Path,
    bundle_id: &str,
    entries: &[ArtifactEntry],
    files: &[FileEntry],
    journal: &Journal,
) -> Result<Vec<ArtifactFile>, BundleError> {
    let refuse = |reason: String| BundleError::Refused {
        dir: dir.to_path_buf(),
        reason,
    };
    let known: std::collections::HashSet<Vec<u8>> =
        journal.artifact_files()?.iter().map(|f| f.key()).collect();
    let into = store.join(STORE_DIR).join(bundle_id);
    let mut taken = Vec::new();
    for a in entries {
        let record = ArtifactFile {
            run_id: a.run_id.clone(),
            rel_path: a.rel_path.clone(),
            size: a.size,
            mtime_ns: a.mtime_ns,
            md5_b64: Some(a.md5_b64.clone()),
            step: a.step,
            state: ArtifactState::Pending,
            seq: 0,
            stored: None,
        };
        if known.contains(&record.key()) {
            // From an earlier bundle (an export repeated after a crash).
            continue;
        }
        let io =
            |op: &'static str, path: PathBuf| move |source| BundleError::Io { op, path, source };
        std::fs::create_dir_all(&into).map_err(io("create", into.clone()))?;
        let dest = into.join(&a.file);
        let mut out = std::fs::File::create(&dest).map_err(io("create", dest.clone()))?;
        let d = copy_hashed(&dir.join(&a.file), Some(&mut out))
            .map_err(io("copy into the store", dest.clone()))?;
        let want = files
            .iter()
            .find(|f| f.path == a.file)
            .map(|f| f.sha256.to_ascii_lowercase());
        let bad = if Some(&d.sha256) != want.as_ref() {
            Some(format!(
                "{}: SHA-256 mismatch while copying it: {} (changed since it was checked)",
                a.file, d.sha256
            ))
        } else if d.md5_b64 != a.md5_b64 {
            Some(format!(
                "{}: MD5 {} is not the {} the manifest gives for checkpoint {} of run {}",
                a.file, d.md5_b64, a.md5_b64, a.rel_path, a.run_id
            ))
        } else {
            None
        };
        if let Some(reason) = bad {
            let _ = std::fs::remove_file(&dest);
            return Err(refuse(reason));
        }
        taken.push(ArtifactFile {
            stored: Some(dest.display().to_string()),
            ..record
        });
    }
    Ok(taken)
}

/// Records the taken versions (of [`take`]), pending, after the store's own.
pub fn record(journal: &Journal, taken: Vec<ArtifactFile>) -> Result<usize, BundleError> {
    let n = taken.len();
    for (seq, mut f) in (journal.next_artifact_seq()?..).zip(taken) {
        f.seq = seq;
        journal.put_artifact_file(&f)?;
    }
    Ok(n)
}
