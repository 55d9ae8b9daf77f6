//! The online sink's copy of each run's `output.log` file.
//!
//! Besides streaming console lines over file_stream, the SDK keeps the
//! run's console in `files/output.log` (each line's text and a newline,
//! stdout and stderr in the order they were captured, no times) and
//! uploads that file as a run file when the run ends (wandb core,
//! `core/internal/runconsolelogs/outputfilewriter.go`: `Finish` uploads
//! it; tests/fixtures/wandb-sdk-overview.json, `online.output_log_file`).
//! The online sink has no run directory, so it keeps the copy under the
//! store, one file per W&B run, until the run's end is committed.
//!
//! Exactly once: the sink's saved state holds each run's byte length of
//! the copy, advanced with the console offsets as lines are taken. Lines
//! taken again after a crash or a failed session start at the committed
//! length, so the copy is cut back to it before they are written; a copy
//! shorter than that (removed or damaged by hand) is not written to again
//! and not uploaded: the streamed lines stay the run's Logs tab.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The directory of the copies in the agent's store.
pub const STORE_DIR: &str = "wandb-output";

/// Where the copies live (`<store>/wandb-output/`).
#[derive(Debug, Clone)]
pub struct OutputFiles {
    dir: PathBuf,
}

/// What became of a write to a copy.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    Done,
    /// The copy is shorter than the lines before these: left alone.
    Short {
        on_disk: u64,
    },
}

impl OutputFiles {
    pub fn new(dir: PathBuf) -> OutputFiles {
        OutputFiles { dir }
    }

    /// The copy of W&B run `run` (its id: letters, digits, `-`, `_`).
    pub fn path(&self, run: &str) -> PathBuf {
        self.dir.join(format!("{run}.output.log"))
    }

    /// Writes `bytes` at byte `at` of `run`'s copy, made durable; a tail
    /// past `at` (lines of an attempt that was not committed) is cut first.
    pub fn write(&self, run: &str, at: u64, bytes: &[u8]) -> std::io::Result<Written> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(run);
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let on_disk = f.metadata()?.len();
        if on_disk < at {
            return Ok(Written::Short { on_disk });
        }
        if on_disk > at {
            f.set_len(at)?;
        }
        f.seek(SeekFrom::Start(at))?;
        f.write_all(bytes)?;
        f.sync_data()?;
        Ok(Written::Done)
    }

    /// `run`'s copy if it holds `len` bytes (what the committed lines
    /// add up to): its first `len` bytes; `None` if it is missing or
    /// shorter.
    pub fn read(&self, run: &str, len: u64) -> Option<Vec<u8>> {
        let mut bytes = read_if_there(&self.path(run))?;
        if (bytes.len() as u64) < len {
            return None;
        }
        bytes.truncate(len as usize);
        Some(bytes)
    }

    /// Removes `run`'s copy (its end is committed), if it is there.
    pub fn remove(&self, run: &str) {
        let path = self.path(run);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove a finished run's output.log copy");
            }
        }
    }
}

fn read_if_there(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the run's output.log copy");
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_tail_is_cut_and_a_short_copy_is_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let files = OutputFiles::new(tmp.path().join("out"));
        assert_eq!(files.write("r", 0, b"a\nb\n").unwrap(), Written::Done);
        // b\n was not committed: taken again, with c\n after it.
        assert_eq!(files.write("r", 2, b"b\nc\n").unwrap(), Written::Done);
        assert_eq!(files.read("r", 6).unwrap(), b"a\nb\nc\n");
        assert_eq!(files.read("r", 4).unwrap(), b"a\nb\n");
        assert_eq!(files.read("r", 7), None);
        std::fs::write(files.path("r"), b"a\n").unwrap();
        assert_eq!(
            files.write("r", 6, b"d\n").unwrap(),
            Written::Short { on_disk: 2 }
        );
        files.remove("r");
        files.remove("r");
        assert_eq!(files.read("r", 0), None);
    }
}
