//! "Complete" for a file the agent cannot ask its writer about: the same
//! size and modification time at two looks `settle` apart, and a
//! modification time at least `settle` old.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::CompleteFile;

/// What was seen of each file at earlier looks.
pub struct Stability {
    settle: Duration,
    /// Per path: the identity last seen and when it was first seen so.
    watching: BTreeMap<PathBuf, (u64, i128, SystemTime)>,
    /// Versions already handed on (path, size, mtime), not again.
    handed: BTreeMap<PathBuf, (u64, i128)>,
}

impl Stability {
    pub fn new(settle: Duration) -> Stability {
        Stability {
            settle,
            watching: BTreeMap::new(),
            handed: BTreeMap::new(),
        }
    }

    /// Files seen but not complete yet.
    pub fn waiting(&self) -> usize {
        self.watching.len()
    }

    /// Takes one look at `seen` (every matching file now) and returns the
    /// versions that are complete and not handed on before.
    pub fn look(
        &mut self,
        seen: BTreeMap<PathBuf, CompleteFile>,
        now: SystemTime,
    ) -> Vec<CompleteFile> {
        self.watching.retain(|p, _| seen.contains_key(p));
        let mut out = Vec::new();
        for (path, f) in seen {
            let id = (f.size, f.mtime_ns);
            if self.handed.get(&path) == Some(&id) {
                continue;
            }
            let since = match self.watching.get(&path) {
                Some((size, mtime, since)) if (*size, *mtime) == id => *since,
                _ => {
                    self.watching.insert(path.clone(), (id.0, id.1, now));
                    now
                }
            };
            let age = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i128 - f.mtime_ns)
                .unwrap_or(0);
            let stable_for = now.duration_since(since).unwrap_or_default();
            if stable_for >= self.settle && age >= self.settle.as_nanos() as i128 {
                self.handed.insert(path.clone(), id);
                self.watching.remove(&path);
                out.push(f);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64, mtime_s: i128) -> CompleteFile {
        CompleteFile {
            run_id: "r".into(),
            rel_path: "checkpoints/a.pth".into(),
            path: "/runs/r/checkpoints/a.pth".into(),
            size,
            mtime_ns: mtime_s * 1_000_000_000,
        }
    }

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_file_is_complete_after_two_equal_looks_a_settle_apart() {
        let mut st = Stability::new(Duration::from_secs(5));
        let one = |f: CompleteFile| BTreeMap::from([(f.path.clone(), f)]);
        assert!(st.look(one(file(10, 100)), at(101)).is_empty());
        // Growing: the clock restarts.
        assert!(st.look(one(file(20, 103)), at(104)).is_empty());
        assert!(st.look(one(file(20, 103)), at(108)).is_empty());
        assert_eq!(st.look(one(file(20, 103)), at(109)).len(), 1);
        // Handed on once.
        assert!(st.look(one(file(20, 103)), at(120)).is_empty());
        // Rewritten: a new version, complete once it settles.
        assert!(st.look(one(file(20, 130)), at(131)).is_empty());
        assert_eq!(st.look(one(file(20, 130)), at(136)).len(), 1);
    }
}
