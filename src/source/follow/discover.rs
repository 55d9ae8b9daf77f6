//! Finding the files to follow: glob expansion, rotated siblings, and an
//! order that reads older rotations first.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};

use crate::config::{SourceConfig, SourceKind};

/// The source patterns, with the rotated-sibling patterns derived from them.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Each pattern with the index of its source in `sources`, and whether
    /// it is a derived rotated-sibling pattern.
    patterns: Vec<(String, usize, bool)>,
    /// `patterns` compiled, to test single paths that file-system events
    /// name without listing whole trees (see [`Sources::expand_paths`]).
    compiled: Vec<Option<glob::Pattern>>,
    excludes: Vec<(glob::Pattern, usize)>,
    sources: Vec<SourceConfig>,
}

/// A path the sources match now, with the source that matched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    /// Index into [`Sources::get`].
    pub source: usize,
}

impl Sources {
    pub fn new(sources: &[SourceConfig], follow_rotated: bool) -> Sources {
        let mut patterns = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            for p in &s.paths {
                patterns.push((p.clone(), i, false));
            }
        }
        if follow_rotated {
            for (i, s) in sources.iter().enumerate() {
                // Only line files rotate: event files and documents are
                // written whole under new names.
                if s.kind == SourceKind::Lines {
                    for p in &s.paths {
                        patterns.push((format!("{p}.[0-9]*"), i, true));
                    }
                }
            }
        }
        let excludes = sources
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.exclude
                    .iter()
                    .filter_map(move |p| glob::Pattern::new(p).ok().map(|p| (p, i)))
            })
            .collect();
        let compiled = patterns
            .iter()
            .map(|(p, ..)| glob::Pattern::new(p).ok())
            .collect();
        Sources {
            patterns,
            compiled,
            excludes,
            sources: sources.to_vec(),
        }
    }

    /// The source configuration at `index` (as in [`Found::source`]).
    pub fn get(&self, index: usize) -> &SourceConfig {
        &self.sources[index]
    }

    /// Every path matching the sources now, oldest rotation first within a
    /// family (`x.log.3`, `x.log.2`, `x.log.1`, `x.log`). A path matched by
    /// several sources belongs to the first.
    pub fn expand(&self) -> Vec<Found> {
        let mut out: Vec<Found> = Vec::new();
        let opts = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        for (pattern, source, rotated) in &self.patterns {
            // Patterns were validated when the configuration was loaded.
            let Ok(paths) = glob::glob_with(pattern, opts) else {
                continue;
            };
            // Unreadable directories are skipped here; an unreadable file
            // is reported when it is opened.
            for path in paths.flatten() {
                if *rotated && rotation_number(&path).is_none() {
                    continue;
                }
                let excluded = self
                    .excludes
                    .iter()
                    .any(|(p, i)| i == source && p.matches_path_with(&path, opts));
                if !excluded {
                    out.push(Found {
                        path,
                        source: *source,
                    });
                }
            }
        }
        sort_found(out)
    }

    /// What [`Sources::expand`] would list at or below `paths` (files, or
    /// directories walked to [`MAX_WALK_DEPTH`]), without listing anything
    /// else: the targeted look that a file-system event asks for.
    pub fn expand_paths(&self, paths: &[PathBuf]) -> Vec<Found> {
        let mut candidates = Vec::new();
        for p in paths {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => walk(p, MAX_WALK_DEPTH, &mut candidates),
                Ok(_) => candidates.push(p.clone()),
                Err(_) => {} // gone: the scan notices what it held there
            }
        }
        let mut out = Vec::new();
        for path in candidates {
            if let Some((source, _)) = self.source_of(&path) {
                out.push(Found { path, source });
            }
        }
        sort_found(out)
    }

    /// The source that [`expand`](Self::expand) would list `path` under
    /// (the first whose patterns match it), with the pattern that matched
    /// (a rotated-sibling pattern shows as `<pattern>.[0-9]*`); `None`
    /// when no source reads it. Matching is by name only, as the listing
    /// sees it: `*` stays within one directory, `**` crosses them, a
    /// leading dot must be literal.
    pub fn source_of(&self, path: &Path) -> Option<(usize, &str)> {
        // What glob's directory walk does: `*` stays within one component
        // and does not match a leading dot.
        let opts = glob::MatchOptions {
            require_literal_leading_dot: true,
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let exclude_opts = glob::MatchOptions {
            require_literal_leading_dot: true,
            ..glob::MatchOptions::new()
        };
        for ((text, source, rotated), pattern) in self.patterns.iter().zip(&self.compiled) {
            let Some(pattern) = pattern else { continue };
            if !pattern.matches_path_with(path, opts) {
                continue;
            }
            if *rotated && rotation_number(path).is_none() {
                continue;
            }
            let excluded = self
                .excludes
                .iter()
                .any(|(p, i)| i == source && p.matches_path_with(path, exclude_opts));
            if !excluded {
                return Some((*source, text.as_str()));
            }
        }
        None
    }

    /// Every pattern with the name of its source, in the order they are
    /// tried (to say what a path did not match).
    pub fn patterns(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.patterns
            .iter()
            .map(|(p, i, _)| (self.sources[*i].name.as_str(), p.as_str()))
    }

    /// Directories whose changes may bring new matches: the longest
    /// wildcard-free prefix of each pattern.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut roots: Vec<PathBuf> = self
            .patterns
            .iter()
            .map(|(p, ..)| {
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

/// How deep a targeted look walks below a directory an event names (a new
/// run directory holds its files a few levels down).
const MAX_WALK_DEPTH: usize = 8;

/// Every non-directory entry at or below `dir`, real directories only
/// (a symlinked directory is left to the periodic full scan).
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => {
                if depth > 0 {
                    walk(&path, depth - 1, out);
                }
            }
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}

/// Oldest rotation first within a family; of duplicates (a path matched by
/// several sources, or named twice) the first entry stays.
fn sort_found(mut out: Vec<Found>) -> Vec<Found> {
    // Stable: of duplicates, the first source's entry stays first.
    out.sort_by_key(|f| order_key(&f.path));
    out.dedup_by(|b, a| a.path == b.path);
    out
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

    fn lines(name: &str, paths: &[&str]) -> SourceConfig {
        SourceConfig {
            name: name.into(),
            kind: SourceKind::Lines,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            exclude: Vec::new(),
            run_id_from_path: None,
            console: Vec::new(),
        }
    }

    #[test]
    fn a_path_belongs_to_the_first_source_and_excludes_apply_to_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let tb = dir.path().join("runs/R1/tensorboard/sub");
        std::fs::create_dir_all(&tb).unwrap();
        for name in [
            "events.out.tfevents.1.h",
            "events.out.tfevents.2.h.skip",
            "result.json",
        ] {
            std::fs::write(tb.join(name), b"x").unwrap();
        }
        let root = dir.path().display();
        let mut events = lines(
            "events",
            &[&format!(
                "{root}/runs/*/tensorboard/**/events.out.tfevents.*"
            )],
        );
        events.kind = SourceKind::Tfevents;
        events.exclude = vec![format!("{root}/**/*.skip")];
        let all = lines("all", &[&format!("{root}/runs/*/tensorboard/**/*.*")]);
        let s = Sources::new(&[events, all], true);
        let got: Vec<_> = s
            .expand()
            .iter()
            .map(|f| {
                (
                    f.path.file_name().unwrap().to_string_lossy().to_string(),
                    s.get(f.source).name.clone(),
                )
            })
            .collect();
        let want = [
            ("events.out.tfevents.1.h", "events"),
            ("events.out.tfevents.2.h.skip", "all"),
            ("result.json", "all"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);
        // Asked about one path, the answer is the listing's.
        for f in s.expand() {
            assert_eq!(s.source_of(&f.path).map(|(i, _)| i), Some(f.source));
        }
        assert_eq!(s.source_of(&dir.path().join("runs/R1/other.txt")), None);
        assert_eq!(
            s.source_of(&tb.join("deeper/dir/x.y")).map(|(i, _)| i),
            Some(1)
        );
    }

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
        let s = Sources::new(&[lines("a", &[&pat, &pat2])], true);
        let names: Vec<_> = s
            .expand()
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            ["a.jsonl", "w.log.10", "w.log.2", "w.log.1", "w.log"]
        );
        assert_eq!(s.roots(), vec![dir.path().join("runs")]);
        let found = |name: &str| s.source_of(&logs.join(name)).map(|(_, p)| p.to_string());
        assert_eq!(found("w.log.2"), Some(format!("{pat}.[0-9]*")));
        assert_eq!(found("w.log"), Some(pat.clone()));
        assert_eq!(found("w.log.1.gz"), None);
        assert_eq!(found(".hidden.log"), None);
        // `*` does not cross a directory.
        assert_eq!(found("sub/w.log"), None);
    }

    #[test]
    fn a_targeted_look_lists_what_the_full_listing_has_there() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for run in ["R1", "R2"] {
            let logs = root.join("runs").join(run).join("logs");
            std::fs::create_dir_all(logs.join("deeper")).unwrap();
            for name in [
                "w.log",
                "w.log.1",
                "w.log.1.gz",
                ".h.log",
                "deeper/x.log",
                "o.txt",
            ] {
                std::fs::write(logs.join(name), b"x\n").unwrap();
            }
            let tb = root.join("runs").join(run).join("tensorboard/sub");
            std::fs::create_dir_all(&tb).unwrap();
            std::fs::write(tb.join("events.out.tfevents.1.h"), b"x").unwrap();
        }
        let r = root.display();
        let mut events = lines(
            "events",
            &[&format!("{r}/runs/*/tensorboard/**/events.out.tfevents.*")],
        );
        events.kind = SourceKind::Tfevents;
        let s = Sources::new(
            &[lines("a", &[&format!("{r}/runs/*/logs/*.log")]), events],
            true,
        );
        let r1: Vec<Found> = s
            .expand()
            .into_iter()
            .filter(|f| f.path.starts_with(root.join("runs/R1")))
            .collect();
        assert_eq!(r1.len(), 3, "{r1:?}");
        assert_eq!(s.expand_paths(&[root.join("runs/R1")]), r1);
        let one = root.join("runs/R2/logs/w.log.1");
        assert_eq!(
            s.expand_paths(&[
                one.clone(),
                root.join("runs/R2/logs/o.txt"),
                root.join("gone")
            ]),
            vec![Found {
                path: one,
                source: 0
            }]
        );
        assert_eq!(s.expand_paths(&[root.join("runs")]), s.expand());
    }
}
