//! `manifest.json`: what a bundle holds, where it came from, and the
//! SHA-256 of each of its files.
//!
//! It is written last, so a directory with a manifest is a finished
//! export. It is parsed strictly (unknown fields, formats and versions are
//! refused): a bundle moves between machines that may run different
//! builds, and guessing at a format we do not know could put rows into a
//! journal wrongly, which no later step can undo.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The `format` value of every bundle manifest.
pub const FORMAT: &str = "mosaic-shipper-bundle";
/// The manifest version this build writes and reads.
pub const VERSION: u64 = 1;
/// File names inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";
pub const ROWS_FILE: &str = "rows.bin";

/// The manifest of a bundle (docs/bundle.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u64,
    /// Derived from the source journal, the rows' range and the rows'
    /// digest: the same rows exported twice get the same id.
    pub bundle_id: String,
    /// Unix seconds.
    pub created: u64,
    pub source: Source,
    /// Source sequence numbers of the first and last row.
    pub seq: SeqRange,
    /// The bundle exported before this one from the same journal, if any:
    /// it must be imported first.
    pub previous: Option<Previous>,
    pub rows: u64,
    /// Every run id in the rows, sorted.
    pub runs: Vec<String>,
    pub files: Vec<FileEntry>,
    /// Checkpoint versions recorded for W&B artifacts, each with its file
    /// among `files` (absent when there are none, so a bundle without
    /// checkpoints reads as before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<ArtifactEntry>,
}

/// One checkpoint version a bundle carries: what the source journal knew
/// of it, and which file of the bundle holds its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactEntry {
    /// The bundle's file holding the content (listed in `files`, with
    /// its SHA-256).
    pub file: String,
    pub run_id: String,
    /// Relative to the run directory on the source machine.
    pub rel_path: String,
    pub size: u64,
    /// The file's modification time on the source, nanoseconds.
    pub mtime_ns: i128,
    /// MD5 of the content, base64: the digest W&B's manifest carries,
    /// checked again on import.
    pub md5_b64: String,
    pub step: Option<i64>,
}

/// Where the rows were journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub host: String,
    pub store: String,
    pub journal_id: String,
}

/// An inclusive range of source sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

/// The predecessor of a bundle: its id and rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Previous {
    pub bundle_id: String,
    pub seq: SeqRange,
}

/// One file of the bundle, relative to its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("manifest serialises");
        out.push(b'\n');
        out
    }

    /// Parses and checks a manifest's text; the error says what is wrong.
    pub fn parse(text: &[u8]) -> Result<Manifest, String> {
        // Format and version first, so that a bundle from a newer build is
        // named as such rather than as a list of unexpected fields.
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("not valid JSON: {e}"))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(format!(
                    "format is {other:?}, not {FORMAT:?}: not a mosaic-shipper bundle"
                ))
            }
            None => {
                return Err(format!(
                    "no \"format\": {FORMAT:?}: not a mosaic-shipper bundle"
                ))
            }
        }
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "bundle version {v}; this build reads version {VERSION} (import it with the build that exported it, or a newer one)"
                ))
            }
            None => return Err("no \"version\" number".into()),
        }
        let m: Manifest = serde_json::from_value(value).map_err(|e| e.to_string())?;
        m.check()?;
        Ok(m)
    }

    /// Consistency a well-formed manifest must have by itself.
    fn check(&self) -> Result<(), String> {
        if self.bundle_id.is_empty() || self.source.journal_id.is_empty() {
            return Err("bundle_id and source.journal_id must not be empty".into());
        }
        if self.seq.first == 0 || self.seq.first > self.seq.last {
            return Err(format!(
                "seq {}..{} is not a range of sequence numbers",
                self.seq.first, self.seq.last
            ));
        }
        if self.rows != self.seq.last - self.seq.first + 1 {
            return Err(format!(
                "rows is {}, but seq {}..{} spans {} rows",
                self.rows,
                self.seq.first,
                self.seq.last,
                self.seq.last - self.seq.first + 1
            ));
        }
        if let Some(p) = &self.previous {
            if p.seq.last >= self.seq.first {
                return Err(format!(
                    "previous bundle {} ends at #{}, not before this one's first row #{}",
                    p.bundle_id, p.seq.last, self.seq.first
                ));
            }
        }
        let mut names = BTreeSet::new();
        for f in &self.files {
            let plain = !f.path.is_empty()
                && !f.path.contains('/')
                && f.path != "."
                && f.path != ".."
                && f.path != MANIFEST_FILE;
            if !plain {
                return Err(format!(
                    "files lists {:?}: only plain file names beside manifest.json are allowed",
                    f.path
                ));
            }
            if !names.insert(f.path.as_str()) {
                return Err(format!("files lists {:?} twice", f.path));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("the sha256 of {:?} is not 64 hex digits", f.path));
            }
        }
        if !names.contains(ROWS_FILE) {
            return Err(format!("files does not list {ROWS_FILE}"));
        }
        let mut carried = BTreeSet::new();
        for a in &self.artifacts {
            let listed = self.file(&a.file);
            if a.file == ROWS_FILE || listed.is_none() {
                return Err(format!(
                    "artifact {} of run {} names file {:?}, which files does not list",
                    a.rel_path, a.run_id, a.file
                ));
            }
            if !carried.insert(a.file.as_str()) {
                return Err(format!("two artifacts name file {:?}", a.file));
            }
            let bytes = listed.map_or(0, |f| f.bytes);
            if bytes != a.size {
                return Err(format!(
                    "artifact {} of run {} is {} bytes, its file {:?} {bytes}",
                    a.rel_path, a.run_id, a.size, a.file
                ));
            }
        }
        if let Some(f) = self
            .files
            .iter()
            .find(|f| f.path != ROWS_FILE && !carried.contains(f.path.as_str()))
        {
            return Err(format!(
                "files lists {:?}, which is neither {ROWS_FILE} nor an artifact's",
                f.path
            ));
        }
        Ok(())
    }

    /// The entry of `path` in `files`.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            bundle_id: "b".into(),
            created: 1,
            source: Source {
                host: "h".into(),
                store: "/s".into(),
                journal_id: "j".into(),
            },
            seq: SeqRange { first: 5, last: 9 },
            previous: None,
            rows: 5,
            runs: vec!["R".into()],
            files: vec![FileEntry {
                path: ROWS_FILE.into(),
                bytes: 10,
                sha256: "0".repeat(64),
            }],
            artifacts: Vec::new(),
        }
    }

    fn edited(f: impl FnOnce(&mut serde_json::Value)) -> Result<Manifest, String> {
        let mut v = serde_json::to_value(sample()).unwrap();
        f(&mut v);
        Manifest::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn a_manifest_round_trips_and_inconsistent_ones_are_refused() {
        assert_eq!(Manifest::parse(&sample().to_json()).unwrap(), sample());
        let err = |f: fn(&mut serde_json::Value)| edited(f).unwrap_err();
        assert!(err(|v| v["version"] = 2.into()).contains("version 2"));
        assert!(err(|v| v["format"] = "zip".into()).contains("not a mosaic-shipper bundle"));
        assert!(err(|v| v["rows"] = 6.into()).contains("rows is 6"));
        assert!(err(|v| v["extra"] = 1.into()).contains("extra"));
        assert!(err(|v| v["files"][0]["path"] = "../x".into()).contains("plain file names"));
        assert!(err(|v| v["files"][0]["path"] = "other.bin".into()).contains("rows.bin"));
        assert!(err(|v| {
            v["previous"] = serde_json::json!({"bundle_id": "p", "seq": {"first": 1, "last": 5}})
        })
        .contains("previous"));
        let mut with = sample();
        with.files.push(FileEntry {
            path: "checkpoint-0".into(),
            bytes: 3,
            sha256: "1".repeat(64),
        });
        assert!(Manifest::parse(&with.to_json())
            .unwrap_err()
            .contains("neither rows.bin nor an artifact's"));
        with.artifacts.push(ArtifactEntry {
            file: "checkpoint-0".into(),
            run_id: "R".into(),
            rel_path: "checkpoints/a.pth".into(),
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
            md5_b64: "x".into(),
            step: None,
        });
        assert_eq!(Manifest::parse(&with.to_json()).unwrap(), with);
        with.artifacts[0].size = 4;
        assert!(Manifest::parse(&with.to_json())
            .unwrap_err()
            .contains("4 bytes"));
        assert!(Manifest::parse(b"{not json")
            .unwrap_err()
            .contains("not valid JSON"));
    }
}
