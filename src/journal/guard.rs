//! The journal's guard against damage it cannot see from inside: the
//! store's marker kept up to date (marker.rs says what it records and why),
//! the store checked under a running agent, a store the marker does not
//! accept refused on open, and `--reset-store`.

use std::path::{Path, PathBuf};

use super::marker::{self, Marker};
use super::{Journal, JournalError, SLED_FILES};

impl Journal {
    /// Brings the marker up to what sled has durably committed: the
    /// counters are read, sled is flushed, then the marker is written, so
    /// the marker is never ahead of sled (a SIGKILL between the two leaves
    /// it behind, which an open accepts). Writes nothing when nothing
    /// moved. The agent calls this now and then and when it stops.
    pub fn record_progress(&self) -> Result<(), JournalError> {
        let _serial = self.progress_lock.lock().unwrap_or_else(|p| p.into_inner());
        let known = self
            .marker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let store_id = match &known {
            Some(m) => m.store_id.clone(),
            // Durable with the flush below, before the marker names it.
            None => self.journal_id()?,
        };
        let progress = self.progress()?;
        if known.as_ref().is_some_and(|m| m.progress == progress)
            && marker::path(&self.path).exists()
        {
            return Ok(());
        }
        self.flush()?;
        let now = crate::util::now_secs() as u64;
        let next = match known {
            Some(m) => Marker {
                progress,
                updated_at: now,
                ..m
            },
            None => Marker {
                store_id,
                created_at: now,
                updated_at: now,
                progress,
                damage: None,
            },
        };
        self.write_marker(&next)
    }

    fn write_marker(&self, m: &Marker) -> Result<(), JournalError> {
        let mut known = self.marker.lock().unwrap_or_else(|p| p.into_inner());
        if known.as_ref().is_some_and(|k| k.damage.is_some()) {
            return Ok(()); // the damage note stays
        }
        marker::write(&self.path, m).map_err(|e| {
            self.fatal(JournalError::Io {
                path: self.path.clone(),
                op: "write the marker",
                detail: format!("{}: {e}", marker::path(&self.path).display()),
            })
        })?;
        *known = Some(m.clone());
        Ok(())
    }

    /// Notes in the marker why the store is refused from now on.
    pub(super) fn note_damage(&self, why: &str) {
        let mut known = self.marker.lock().unwrap_or_else(|p| p.into_inner());
        let Some(m) = known.as_mut() else {
            return; // still opening: the open fails with the error itself
        };
        if m.damage.is_some() {
            return;
        }
        m.damage = Some(why.to_string());
        m.updated_at = crate::util::now_secs() as u64;
        if let Err(e) = marker::write(&self.path, m) {
            tracing::error!(file = %marker::path(&self.path).display(), error = %e, "cannot record the store's damage in its marker");
        }
    }

    /// Checks that the store is still there: sled's files are the ones
    /// opened, the marker exists (it is written again if only it went).
    /// The store deleted or replaced under the agent is a fatal
    /// [`JournalError::Gone`], and recorded in a marker (written again if
    /// need be) so that the next start refuses what is left.
    pub fn check_presence(&self) -> Result<(), JournalError> {
        if let Some(detail) = self.missing_files() {
            return Err(self.fatal(JournalError::Gone {
                path: self.path.clone(),
                detail,
            }));
        }
        let file = marker::path(&self.path);
        if !file.exists() {
            let known = self
                .marker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(m) = known {
                tracing::warn!(file = %file.display(), "the store's marker was deleted; writing it again");
                self.write_marker(&m)?;
            }
        }
        Ok(())
    }

    /// What is missing of sled's files, or replaced, in words; `None`
    /// while they are the ones opened.
    pub(super) fn missing_files(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let db = self.path.join("journal/db");
        match std::fs::metadata(&db) {
            Ok(m) if Some((m.dev(), m.ino())) == self.db_identity => {}
            Ok(_) => return Some(format!("{} was replaced by another file", db.display())),
            Err(e) => return Some(format!("{}: {e}", db.display())),
        }
        let conf = self.path.join("journal/conf");
        std::fs::metadata(&conf)
            .err()
            .map(|e| format!("{}: {e}", conf.display()))
    }
}

/// The marker of the store at `path`, if any; a damaged one, or one that
/// records damage, refuses the store.
pub(super) fn read_marker(path: &Path) -> Result<Option<Marker>, JournalError> {
    let refuse = |detail: String| JournalError::Open {
        path: path.to_path_buf(),
        detail,
    };
    match marker::read(path).map_err(refuse)? {
        Some(m) if m.damage.is_some() => Err(refuse(format!(
            "an agent stopped on it earlier: {} (recorded in its marker {})",
            m.damage.as_deref().unwrap_or_default(),
            marker::path(path).display()
        ))),
        m => Ok(m),
    }
}

/// With a marker, sled's files must be there: sled would quietly make a
/// new, empty store in their place.
pub(super) fn expect_sled_files(path: &Path, m: &Marker) -> Result<(), JournalError> {
    for name in SLED_FILES {
        let file = path.join("journal").join(name);
        if let Err(e) = std::fs::metadata(&file) {
            return Err(JournalError::Open {
                path: path.to_path_buf(),
                detail: format!(
                    "{} is missing ({e}), but the store's marker {} records a store used \
                     before, with rows up to #{}",
                    file.display(),
                    marker::path(path).display(),
                    m.progress.next_seq.saturating_sub(1)
                ),
            });
        }
    }
    Ok(())
}

/// Moves the store's journal aside, for `--reset-store`: sled's directory,
/// the marker and the status snapshot go to `<path>.broken-<time>` (UTC);
/// the agent's logs stay. Returns where they went, or `None` when there
/// was nothing to move. Refused while another process holds the store.
pub fn reset_store(path: &Path) -> Result<Option<PathBuf>, JournalError> {
    use std::os::fd::AsRawFd;
    let io = |op: &'static str, e: std::io::Error| JournalError::Io {
        path: path.to_path_buf(),
        op,
        detail: e.to_string(),
    };
    let journal = path.join("journal");
    let marker_file = marker::path(path);
    if !journal.exists() && !marker_file.exists() {
        return Ok(None);
    }
    // sled's lock: not while an agent runs on it. A handle closed in this
    // process lets go of it a moment later (as in `open_sled`).
    let _lock = match std::fs::File::open(journal.join("db")) {
        Ok(db) => {
            let mut tries = 0;
            // SAFETY: flock on a descriptor owned here, released on drop.
            while unsafe { libc::flock(db.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                if tries >= 25 {
                    return Err(JournalError::Locked {
                        path: path.to_path_buf(),
                    });
                }
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(40));
            }
            Some(db)
        }
        Err(_) => None,
    };
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_else(|_| "unknown".into());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let mut aside = path.with_file_name(format!("{name}.broken-{stamp}"));
    let mut n = 1;
    while aside.exists() {
        n += 1;
        aside = path.with_file_name(format!("{name}.broken-{stamp}-{n}"));
    }
    crate::util::create_private_dir(&aside)
        .map_err(|e| io("create the directory for the old store", e))?;
    for entry in ["journal", marker::FILE, "status.json"] {
        let from = path.join(entry);
        if from.exists() {
            std::fs::rename(&from, aside.join(entry))
                .map_err(|e| io("move the old store aside", e))?;
        }
    }
    Ok(Some(aside))
}
