//! The agent's log files: one per day, rotated early by size, and the
//! oldest removed so that there are never more than `max_files` of them
//! nor more than `max_bytes` in total.
//!
//! tracing-appender's own roller caps the number of files only, so a flood
//! (a worker writing random bytes, a server answering 429 in a loop) could
//! fill the store's file system with one day's file. Here a day's file is
//! cut into segments of a quarter of the budget (`mosaic-shipper.DAY.log`,
//! then `mosaic-shipper.DAY.1.log`, ...), and after each cut the oldest
//! segments go until the others fit in the budget less one segment: the
//! total stays below `max_bytes` (plus at most one line).
//!
//! The directory is made 0700 and the files 0600 whatever the umask: the
//! logs name files, runs and servers that are nobody else's business.
//!
//! [`reopen`] (the daemon's SIGHUP) makes the next line open its file by
//! name again, so that an outside `logrotate` that moved the file away
//! (`create`) gets the agent writing to a new one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::util::create_private_dir;
use std::path::{Path, PathBuf};

/// Bumped by [`reopen`]; a segment opened under an older value is
/// opened again by name before the next line.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Makes every log file be opened again by name before its next line.
pub fn reopen() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

const PREFIX: &str = "mosaic-shipper.";
const SUFFIX: &str = ".log";

/// See the module documentation.
pub struct Rolling {
    dir: PathBuf,
    max_files: usize,
    max_bytes: u64,
    segment_cap: u64,
    current: Option<Segment>,
}

struct Segment {
    file: File,
    day: String,
    index: u32,
    size: u64,
    generation: u64,
}

impl Rolling {
    /// Opens (creating) `dir` and today's newest segment.
    pub fn new(dir: &Path, max_files: usize, max_bytes: u64) -> io::Result<Rolling> {
        create_private_dir(dir)?;
        let mut r = Rolling {
            dir: dir.to_path_buf(),
            max_files: max_files.max(1),
            max_bytes: max_bytes.max(4096),
            segment_cap: (max_bytes / 4).max(1024),
            current: None,
        };
        let day = today();
        let index = r
            .segments()?
            .into_iter()
            .filter(|(d, _, _, _)| *d == day)
            .map(|(_, i, _, _)| i)
            .max()
            .unwrap_or(0);
        r.open(day, index)?;
        r.prune()?;
        Ok(r)
    }

    fn path_of(&self, day: &str, index: u32) -> PathBuf {
        if index == 0 {
            self.dir.join(format!("{PREFIX}{day}{SUFFIX}"))
        } else {
            self.dir.join(format!("{PREFIX}{day}.{index}{SUFFIX}"))
        }
    }

    fn open(&mut self, day: String, index: u32) -> io::Result<()> {
        let generation = GENERATION.load(Ordering::SeqCst);
        let path = self.path_of(&day, index);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        // A file from an older version, or made under another umask.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let size = file.metadata()?.len();
        self.current = Some(Segment {
            file,
            day,
            index,
            size,
            generation,
        });
        Ok(())
    }

    /// The log files in the directory: (day, index, size, path), oldest first.
    fn segments(&self) -> io::Result<Vec<(String, u32, u64, PathBuf)>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(mid) = name
                .strip_prefix(PREFIX)
                .and_then(|n| n.strip_suffix(SUFFIX))
            else {
                continue;
            };
            let (day, index) = match mid.split_once('.') {
                Some((d, i)) => match i.parse() {
                    Ok(i) => (d.to_string(), i),
                    Err(_) => continue,
                },
                None => (mid.to_string(), 0),
            };
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((day, index, size, e.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Removes the oldest segments (never the current one) until the
    /// others number fewer than `max_files` and fit in the budget less one
    /// segment.
    fn prune(&self) -> io::Result<()> {
        let current = self.current.as_ref().map(|c| self.path_of(&c.day, c.index));
        let mut others: Vec<_> = self
            .segments()?
            .into_iter()
            .filter(|s| Some(&s.3) != current.as_ref())
            .collect();
        let budget = self.max_bytes.saturating_sub(self.segment_cap);
        let mut total: u64 = others.iter().map(|s| s.2).sum();
        others.reverse(); // newest first; pop the oldest
        while !others.is_empty() && (others.len() + 1 > self.max_files || total > budget) {
            let (_, _, size, path) = others.pop().expect("not empty");
            match std::fs::remove_file(&path) {
                Ok(()) => total -= size,
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= size,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn roll_if_due(&mut self, incoming: usize) -> io::Result<()> {
        let day = today();
        let Some(c) = &self.current else {
            return self.open(day, 0);
        };
        let next = if c.day != day {
            Some((day, 0))
        } else if c.generation != GENERATION.load(Ordering::SeqCst) {
            // The same name: a new file if the old one was moved away.
            Some((day, c.index))
        } else if c.size > 0 && c.size + incoming as u64 > self.segment_cap {
            Some((day, c.index + 1))
        } else {
            None
        };
        if let Some((day, index)) = next {
            self.open(day, index)?;
            self.prune()?;
        }
        Ok(())
    }
}

impl Write for Rolling {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.roll_if_due(buf.len())?;
        let c = self.current.as_mut().expect("opened by roll_if_due");
        c.file.write_all(buf)?;
        c.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some(c) => c.file.flush(),
            None => Ok(()),
        }
    }
}

fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total(dir: &Path) -> (u64, usize) {
        let mut t = 0;
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            t += e.metadata().unwrap().len();
            n += 1;
        }
        (t, n)
    }

    #[test]
    fn a_flood_stays_within_the_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let max = 64 * 1024;
        let mut r = Rolling::new(&dir, 7, max).unwrap();
        let line = format!("{}\n", "x".repeat(199));
        let mut peak = 0;
        for _ in 0..5_000 {
            r.write_all(line.as_bytes()).unwrap();
            peak = peak.max(total(&dir).0);
        }
        // 1 MB written, never more than the budget (plus one line) kept.
        assert!(peak <= max + line.len() as u64, "peak {peak}");
        let (t, n) = total(&dir);
        assert!(t >= max / 2, "the newest lines are kept: {t}");
        assert!(n <= 7, "{n} files");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
        }
    }

    #[test]
    fn file_count_is_capped_and_reopening_continues() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        for day in 1..=9 {
            std::fs::write(
                dir.join(format!("mosaic-shipper.2020-01-0{day}.log")),
                "old\n",
            )
            .unwrap();
        }
        std::fs::write(dir.join("unrelated.txt"), "keep").unwrap();
        let mut r = Rolling::new(&dir, 3, 1 << 20).unwrap();
        r.write_all(b"new\n").unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&"unrelated.txt".to_string()));
        assert!(names.contains(&"mosaic-shipper.2020-01-09.log".to_string()));
        assert!(!names.contains(&"mosaic-shipper.2020-01-07.log".to_string()));
        drop(r);
        let mut r = Rolling::new(&dir, 3, 1 << 20).unwrap();
        r.write_all(b"again\n").unwrap();
        let today = dir.join(format!("mosaic-shipper.{}.log", today()));
        assert_eq!(std::fs::read_to_string(today).unwrap(), "new\nagain\n");
    }

    #[test]
    fn reopen_follows_a_file_moved_away() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let mut r = Rolling::new(&dir, 7, 1 << 20).unwrap();
        r.write_all(b"before\n").unwrap();
        let name = dir.join(format!("mosaic-shipper.{}.log", today()));
        let moved = dir.join("rotated-away");
        std::fs::rename(&name, &moved).unwrap();
        r.write_all(b"still the old file\n").unwrap();
        reopen();
        r.write_all(b"after\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&moved).unwrap(),
            "before\nstill the old file\n"
        );
        assert_eq!(std::fs::read_to_string(&name).unwrap(), "after\n");
    }
}
