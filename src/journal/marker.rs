//! The store's marker: a small file beside sled's (`<store>/journal.marker`)
//! that says a journal lives here and how far it had got.
//!
//! sled cannot tell a store it never had from one it lost: with `db` or
//! `conf` deleted, cut or damaged it may open an empty store without a
//! word, and the agent would read every log again from the start and ship
//! it all a second time. The marker is written outside sled's files, so it
//! survives what happens to them, and it records lower bounds of what sled
//! has durably committed (the next sequence number, the lines read, every
//! sink's cursor). On open, a store that is missing, empty or behind the
//! marker is refused (`Journal::open`), never silently recreated.
//!
//! The bounds are read *before* sled is flushed and written after the
//! flush returns ([`super::Journal::record_progress`]): the marker can lag
//! behind sled, never run ahead of it, so a SIGKILL at any point leaves a
//! store the marker accepts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The marker's file name, inside the store directory.
pub const FILE: &str = "journal.marker";

/// What the marker records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    /// The journal id of the store (its `meta` tree holds the same).
    pub store_id: String,
    /// Unix seconds.
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(flatten)]
    pub progress: Progress,
    /// Why the agent last stopped on this store's damage (a row whose
    /// checksum fails, the store deleted under it); while set, every open
    /// is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
}

/// Counters of a journal that only ever grow: the marker keeps the values
/// sled had durably committed, an intact store is never behind them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The sequence number the next row will get.
    pub next_seq: u64,
    /// Lines (and records) read from all files, ever.
    pub lines_read: u64,
    /// Every sink's cursor.
    pub cursors: BTreeMap<String, u64>,
}

impl Progress {
    /// Where `self` (read from the store) is behind `recorded` (the
    /// marker's), in words; `None` when it is not.
    pub fn behind(&self, recorded: &Progress) -> Option<String> {
        if self.next_seq < recorded.next_seq {
            return Some(format!(
                "its rows end before #{} (the marker records rows up to #{})",
                self.next_seq.max(1),
                recorded.next_seq.saturating_sub(1)
            ));
        }
        if self.lines_read < recorded.lines_read {
            return Some(format!(
                "it has read {} lines of the logs (the marker records {})",
                self.lines_read, recorded.lines_read
            ));
        }
        for (sink, &seq) in &recorded.cursors {
            match self.cursors.get(sink) {
                None => {
                    return Some(format!(
                        "sink {sink}'s cursor is missing (the marker records #{seq})"
                    ))
                }
                Some(&have) if have < seq => {
                    return Some(format!(
                        "sink {sink}'s cursor is at #{have} (the marker records #{seq})"
                    ))
                }
                Some(_) => {}
            }
        }
        None
    }
}

pub fn path(store: &Path) -> PathBuf {
    store.join(FILE)
}

/// Reads the marker: `Ok(None)` when there is none, an error (in words)
/// when it cannot be read or is damaged.
pub fn read(store: &Path) -> Result<Option<Marker>, String> {
    let file = path(store);
    let text = match std::fs::read(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read its marker {}: {e}", file.display())),
    };
    parse(&text).map(Some).map_err(|e| {
        format!(
            "its marker {} is damaged ({e}); the store cannot be checked against it",
            file.display()
        )
    })
}

/// The file: the JSON body, then a line `crc32c <hex>` over the body.
fn render(marker: &Marker) -> Vec<u8> {
    let mut body = serde_json::to_vec_pretty(marker).expect("a marker serialises");
    body.push(b'\n');
    let sum = crc32c::crc32c(&body);
    body.extend_from_slice(format!("crc32c {sum:08x}\n").as_bytes());
    body
}

fn parse(text: &[u8]) -> Result<Marker, String> {
    let trailer = text
        .strip_suffix(b"\n")
        .and_then(|t| t.iter().rposition(|&b| b == b'\n').map(|i| (t, i + 1)))
        .ok_or("no checksum line")?;
    let (body, sum) = (&text[..trailer.1], &trailer.0[trailer.1..]);
    let sum = std::str::from_utf8(sum)
        .ok()
        .and_then(|s| s.strip_prefix("crc32c "))
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("no checksum line")?;
    if crc32c::crc32c(body) != sum {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// Writes the marker atomically and durably: a temporary file, fsync,
/// rename over the old one, fsync of the directory. Creates the store
/// directory (0700) if it is gone.
pub fn write(store: &Path, marker: &Marker) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    crate::util::create_private_dir(store)?;
    let file = path(store);
    let tmp = store.join(format!("{FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&render(marker))?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &file)?;
    std::fs::File::open(store)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> Marker {
        Marker {
            store_id: "abc".into(),
            created_at: 1,
            updated_at: 2,
            progress: Progress {
                next_seq: 10,
                lines_read: 3,
                cursors: [("jsonl".to_string(), 9)].into_iter().collect(),
            },
            damage: None,
        }
    }

    #[test]
    fn round_trips_and_catches_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), &marker()).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(marker()));
        let file = path(dir.path());
        let good = std::fs::read(&file).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x04;
            std::fs::write(&file, &bad).unwrap();
            assert!(read(dir.path()).is_err(), "byte {i} flipped went unseen");
        }
        std::fs::write(&file, &good[..good.len() / 2]).unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn progress_behind_the_record_is_told() {
        let rec = marker().progress;
        assert_eq!(rec.behind(&rec), None);
        let mut ahead = rec.clone();
        ahead.next_seq = 11;
        ahead.cursors.insert("jsonl".into(), 10);
        ahead.cursors.insert("tensorboard".into(), 1);
        assert_eq!(ahead.behind(&rec), None);
        let empty = Progress::default();
        assert!(empty.behind(&rec).unwrap().contains("#9"));
        let mut cursor = rec.clone();
        cursor.cursors.insert("jsonl".into(), 2);
        assert!(cursor.behind(&rec).unwrap().contains("jsonl"));
    }
}
