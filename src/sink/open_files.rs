//! A bounded set of open output files (event files, jsonl files), least
//! recently used closed first.
//!
//! An agent that ships thousands of runs must not hold a descriptor per
//! run; most runs are idle at any moment. Closing is cheap and reopening
//! for a positional append is exact, so the bound costs little.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// See the module documentation.
pub struct OpenFiles {
    capacity: usize,
    tick: u64,
    files: HashMap<PathBuf, (File, u64)>,
}

impl OpenFiles {
    pub fn new(capacity: usize) -> OpenFiles {
        OpenFiles {
            capacity: capacity.max(1),
            tick: 0,
            files: HashMap::new(),
        }
    }

    /// The open handle of `path` (opened for writing, created when absent,
    /// never truncated), closing the least recently used one if the set is
    /// full. Returns whether the file was created by this call.
    pub fn get(&mut self, path: &Path) -> io::Result<(&File, bool)> {
        self.tick += 1;
        let tick = self.tick;
        if !self.files.contains_key(path) {
            if self.files.len() >= self.capacity {
                let oldest = self
                    .files
                    .iter()
                    .min_by_key(|(_, (_, used))| *used)
                    .map(|(p, _)| p.clone());
                if let Some(p) = oldest {
                    self.files.remove(&p);
                }
            }
            let (file, created) = match OpenOptions::new().write(true).open(path) {
                Ok(f) => (f, false),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let f = OpenOptions::new().write(true).create_new(true).open(path)?;
                    (f, true)
                }
                Err(e) => return Err(e),
            };
            self.files.insert(path.to_path_buf(), (file, tick));
            let entry = self.files.get(path).expect("just inserted");
            return Ok((&entry.0, created));
        }
        let entry = self.files.get_mut(path).expect("checked above");
        entry.1 = tick;
        Ok((&entry.0, false))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Closes every file (recovery reopens what it needs).
    pub fn clear(&mut self) {
        self.files.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_capacity_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let p = |i: usize| dir.path().join(format!("f{i}"));
        let mut files = OpenFiles::new(2);
        assert!(files.get(&p(0)).unwrap().1, "created");
        assert!(files.get(&p(1)).unwrap().1);
        assert!(!files.get(&p(0)).unwrap().1, "still open");
        files.get(&p(2)).unwrap(); // evicts f1, the least recently used
        assert_eq!(files.len(), 2);
        assert!(files.files.contains_key(&p(0)));
        assert!(!files.files.contains_key(&p(1)));
        assert!(!files.get(&p(1)).unwrap().1, "reopened, not created");
    }
}
