//! The W&B artifact manifest (version 1) and the digests W&B's SDK computes
//! (wandb 0.31.0: `ArtifactManifestV1.digest`, `md5_file_b64`; the bytes
//! it uploads are recorded in tests/fixtures/wandb-sdk-artifacts.json).
//!
//! - a file's digest: MD5 of its content, base64;
//! - the artifact's digest: MD5, hex, of `wandb-artifact-manifest-v1\n`
//!   then `<name>:<file digest>\n` per entry, sorted by name, so that
//!   identical content under the same names is the same digest and the
//!   server deduplicates it;
//! - the manifest file (`wandb_manifest.json`) as core writes it, whose
//!   own MD5 (base64) is announced before it is uploaded.

use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};
use serde_json::{json, Value};

use crate::sink::wandb::redact::base64;

/// One file of a version.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name inside the artifact.
    pub name: String,
    pub md5_b64: String,
    pub size: u64,
    /// Where the file is on this machine (core writes it into the
    /// manifest as `local_path`).
    pub local_path: String,
    /// The version the content was first uploaded with (the server's
    /// answer to `CreateArtifactFiles`).
    pub birth_artifact_id: Option<String>,
}

/// MD5 of the file at `path`, base64, and the bytes read; in 1 MiB
/// pieces, never the whole file in memory.
pub fn md5_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = f.read(&mut buf)?;
        if got == 0 {
            break;
        }
        h.update(&buf[..got]);
        n += got as u64;
    }
    Ok((base64(&h.finalize()), n))
}

/// The artifact digest of `entries` (see the module documentation).
pub fn artifact_digest(entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = Md5::new();
    h.update(b"wandb-artifact-manifest-v1\n");
    for e in sorted {
        h.update(format!("{}:{}\n", e.name, e.md5_b64).as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `wandb_manifest.json` for `entries`.
pub fn manifest_json(entries: &[Entry]) -> Vec<u8> {
    let mut contents = serde_json::Map::new();
    for e in entries {
        let mut v = json!({"digest": e.md5_b64, "size": e.size, "local_path": e.local_path});
        if let Some(b) = &e.birth_artifact_id {
            v["birthArtifactID"] = Value::from(b.as_str());
        }
        v["skip_cache"] = Value::Bool(false);
        contents.insert(e.name.clone(), v);
    }
    let m = json!({
        "version": 1,
        "storagePolicy": "wandb-storage-policy-v1",
        "storagePolicyConfig": {"storageLayout": "V2"},
        "contents": contents,
    });
    serde_json::to_vec(&m).expect("manifest serialises")
}

/// MD5 of bytes, base64 (the manifest's announced digest).
pub fn md5_b64(bytes: &[u8]) -> String {
    base64(&Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_sdks() {
        // From tests/fixtures/wandb-sdk-artifacts.json: 13000 bytes of
        // "checkpoint A\n" as `model.pth`.
        let content = b"checkpoint A\n".repeat(1000);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.pth");
        std::fs::write(&p, &content).unwrap();
        let (md5, n) = md5_file(&p).unwrap();
        assert_eq!((md5.as_str(), n), ("bV/5n6v9X237rQX74ZvCZw==", 13000));
        let e = Entry {
            name: "model.pth".into(),
            md5_b64: md5,
            size: n,
            local_path: p.display().to_string(),
            birth_artifact_id: None,
        };
        assert_eq!(artifact_digest(&[e]), "5fc76619f9021659d3367b608d1a8b8b");
    }
}
