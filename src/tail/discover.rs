//! Finding the files to follow: glob expansion, rotated siblings, and an
//! order that reads older rotations first.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};

/// The source patterns, with the rotated-sibling patterns derived from them.
#[derive(Debug, Clone)]
pub struct Sources {
    patterns: Vec<String>,
    rotated: Vec<String>,
}

impl Sources {
    pub fn new(patterns: &[String], follow_rotated: bool) -> Sources {
        Sources {
            patterns: patterns.to_vec(),
            rotated: if follow_rotated {
                patterns.iter().map(|p| format!("{p}.[0-9]*")).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Every path matching the sources now, oldest rotation first within a
    /// family (`x.log.3`, `x.log.2`, `x.log.1`, `x.log`).
    pub fn expand(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let opts = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        for (pattern, rotated) in self
            .patterns
            .iter()
            .map(|p| (p, false))
            .chain(self.rotated.iter().map(|p| (p, true)))
        {
            // Patterns were validated when the configuration was loaded.
            let Ok(paths) = glob::glob_with(pattern, opts) else {
                continue;
            };
            // Unreadable directories are skipped here; an unreadable file
            // is reported when it is opened.
            for path in paths.flatten() {
                if !rotated || rotation_number(&path).is_some() {
                    out.push(path);
                }
            }
        }
        out.sort_by_key(|p| order_key(p));
        out.dedup();
        out
    }

    /// Directories whose changes may bring new matches: the longest
    /// wildcard-free prefix of each pattern.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .patterns
            .iter()
            .map(|p| {
                let mut root = PathBuf::new();
                for comp in Path::new(p).components() {
                    let s = comp.as_os_str().to_string_lossy();
                    if s.contains(['*', '?', '[', '{']) {
                        break;
                    }
                    root.push(comp);
                }
                if root.as_os_str().is_empty() || root == Path::new(p) {
                    root = Path::new(p)
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                }
                if root.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    root
                }
            })
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }
}

/// `Some(n)` for `name.N`, the numbering of Python's RotatingFileHandler
/// and logrotate; `None` for anything else (`x.log.1.gz` is not text).
pub fn rotation_number(path: &Path) -> Option<u64> {
    let ext = path.extension()?.to_str()?;
    if ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ext.parse().ok()
}

/// Sort key that puts a rotation family together, oldest file first.
pub fn order_key(path: &Path) -> (PathBuf, Reverse<u64>) {
    match rotation_number(path) {
        Some(n) => (path.with_extension(""), Reverse(n)),
        None => (path.to_path_buf(), Reverse(0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_siblings_come_oldest_first_and_compressed_ones_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("runs/R1/logs");
        std::fs::create_dir_all(&logs).unwrap();
        for name in [
            "w.log",
            "w.log.1",
            "w.log.10",
            "w.log.2",
            "w.log.1.gz",
            "a.jsonl",
            ".hidden.log",
        ] {
            std::fs::write(logs.join(name), b"x\n").unwrap();
        }
        let pat = format!("{}/runs/*/logs/*.log", dir.path().display());
        let pat2 = format!("{}/runs/*/logs/*.jsonl", dir.path().display());
        let s = Sources::new(&[pat, pat2], true);
        let names: Vec<_> = s
            .expand()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            ["a.jsonl", "w.log.10", "w.log.2", "w.log.1", "w.log"]
        );
        assert_eq!(s.roots(), vec![dir.path().join("runs")]);
    }
}
