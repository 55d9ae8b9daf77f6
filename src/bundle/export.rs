//! `export --to DIR`: the rows staged for W&B, written to a bundle and
//! handed over to it.
//!
//! Order matters for the guarantee: the bundle is written and published
//! durably first, and only then does the `wandb` cursor move past its rows
//! (with the export recorded in the same journal transaction). A crash
//! before the move leaves the rows staged here as well as in the bundle;
//! the next export carries them again and import skips the rows it
//! already has (by source journal and sequence number), so nothing is lost
//! or uploaded twice.

use std::collections::BTreeSet;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::digest::{sha256_hex, HashingWriter};
use super::frames::{write_frame, FRAME_ROWS};
use super::manifest::{FileEntry, Manifest, Previous, SeqRange, Source, FORMAT, VERSION};
use super::publish::Staging;
use super::{now_unix, BundleError, MANIFEST_FILE, ROWS_FILE, WANDB_SINK};
use crate::config::Config;
use crate::journal::{ExportMark, Journal};
use crate::row::Row;
use crate::sink::wandb::state::State;

/// What an export did.
#[derive(Debug)]
pub enum Exported {
    /// No row is waiting for W&B: no bundle was written.
    Nothing {
        store: PathBuf,
        cursor: u64,
        /// Set when rows were counted as pending but are gone.
        warning: Option<String>,
    },
    /// A bundle was written and its rows handed over.
    Written {
        dir: PathBuf,
        store: PathBuf,
        manifest: Box<Manifest>,
        warnings: Vec<String>,
    },
}

/// What writing rows.bin found.
struct RowsFile {
    first: u64,
    last: u64,
    rows: u64,
    runs: BTreeSet<String>,
    bytes: u64,
    sha256: String,
}

/// Exports every row after the `wandb` cursor of `config`'s store to a new
/// bundle directory `to`, then moves the cursor past them.
pub fn export(config: &Config, to: &Path) -> Result<Exported, BundleError> {
    let store = config.store.path.clone();
    let refuse = |reason: String| BundleError::Export {
        store: store.clone(),
        reason,
    };
    if !config.enabled_sinks().contains(&WANDB_SINK) {
        let wandb = config.wandb();
        return Err(refuse(format!(
            "nothing is staged for W&B with configuration {} ({}): set sinks.wandb.mode = \"stage\" \
             so that the agent holds rows for W&B in its journal, and export with that configuration",
            config.origin,
            wandb.describe().lines().next().unwrap_or_default().trim_start_matches("# ")
        )));
    }
    let journal = Journal::open_existing(&store).map_err(|e| BundleError::journal(e, "export"))?;
    if !journal.has_cursor(WANDB_SINK)? {
        return Err(refuse(
            "nothing is staged for W&B: the store has no `wandb` cursor (the agent has not run \
             on it with sinks.wandb.mode = \"stage\")"
                .into(),
        ));
    }
    let cursor = journal.cursor(WANDB_SINK)?;
    let last = journal.last_seq()?;
    if cursor.seq >= last {
        return Ok(Exported::Nothing {
            store,
            cursor: cursor.seq,
            warning: checkpoints_left(&journal)?,
        });
    }
    let state = State::decode(&cursor.state).map_err(|e| refuse(e.to_string()))?;
    let journal_id = journal.journal_id()?;
    let previous = journal.last_export()?;

    let staging = Staging::begin(to)?;
    let Some(written) = write_rows(&journal, &staging, cursor.seq, last, &state, &refuse)? else {
        return Ok(Exported::Nothing {
            store,
            cursor: cursor.seq,
            warning: Some(format!(
                "rows #{}..#{} count as pending for W&B but are no longer in the journal \
                 (deleted while the W&B sink was not enabled)",
                cursor.seq + 1,
                last
            )),
        });
    };
    let carried = super::checkpoints::carry(&journal, &staging, &config.artifacts.runs_dir)?;
    let mut warnings = carried.warnings;
    if written.first > cursor.seq + 1 {
        warnings.push(format!(
            "rows #{}..#{} are no longer in the journal (deleted while the W&B sink was not \
             enabled); the bundle starts at #{}",
            cursor.seq + 1,
            written.first - 1,
            written.first
        ));
    }
    let bundle_id = sha256_hex(
        format!(
            "{journal_id}\n{}\n{}\n{}",
            written.first, written.last, written.sha256
        )
        .as_bytes(),
    )[..32]
        .to_string();
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        bundle_id: bundle_id.clone(),
        created: now_unix(),
        source: Source {
            host: crate::util::hostname().unwrap_or_else(|| "unknown".into()),
            store: std::fs::canonicalize(&store)
                .unwrap_or_else(|_| store.clone())
                .display()
                .to_string(),
            journal_id,
        },
        seq: SeqRange {
            first: written.first,
            last: written.last,
        },
        previous: previous.map(|p| Previous {
            bundle_id: p.bundle_id,
            seq: SeqRange {
                first: p.first,
                last: p.last,
            },
        }),
        rows: written.rows,
        runs: written.runs.into_iter().collect(),
        files: std::iter::once(FileEntry {
            path: ROWS_FILE.into(),
            bytes: written.bytes,
            sha256: written.sha256,
        })
        .chain(carried.files)
        .collect(),
        artifacts: carried.entries,
    };
    staging.write(MANIFEST_FILE, &manifest.to_json())?;
    let dir = staging.publish()?;
    let mark = ExportMark {
        bundle_id,
        first: written.first,
        last: written.last,
    };
    journal
        .commit_export(WANDB_SINK, written.last, &cursor.state, &mark)
        .map_err(|e| {
            refuse(format!(
                "the bundle {} is written, but handing its rows over failed: {e}. They are \
                 still staged here; a later export carries them again, and import skips rows \
                 it already has, so importing this bundle as well is safe",
                dir.display()
            ))
        })?;
    super::checkpoints::mark_exported(&journal, carried.records, &mark.bundle_id).map_err(|e| {
        refuse(format!(
            "the bundle {} is written and holds its rows, but marking its checkpoints \
             exported failed: {e}. They stay pending here; a later export carries them \
             again, and import takes each once",
            dir.display()
        ))
    })?;
    Ok(Exported::Written {
        dir,
        store,
        manifest: Box::new(manifest),
        warnings,
    })
}

/// A warning when checkpoint versions wait for W&B although no row does:
/// a bundle carries them only with rows.
fn checkpoints_left(journal: &Journal) -> Result<Option<String>, BundleError> {
    let n = journal
        .artifact_files()?
        .iter()
        .filter(|f| f.state == crate::journal::artifacts::ArtifactState::Pending)
        .count();
    Ok((n > 0).then(|| {
        format!(
            "{n} checkpoint versions wait for W&B here, but a bundle carries them only with \
             rows; they go with the next export that has rows"
        )
    }))
}

/// Streams the rows after `after` up to `last` into rows.bin, fsynced.
/// `None` when none of them is in the journal any more.
fn write_rows(
    journal: &Journal,
    staging: &Staging,
    after: u64,
    last: u64,
    state: &State,
    refuse: &dyn Fn(String) -> BundleError,
) -> Result<Option<RowsFile>, BundleError> {
    let path = staging.path(ROWS_FILE);
    let io = |source| BundleError::Io {
        op: "write",
        path: path.clone(),
        source,
    };
    let mut out = HashingWriter::new(BufWriter::new(staging.create(ROWS_FILE)?));
    let mut next = after;
    let mut first = None;
    let mut runs = BTreeSet::new();
    while next < last {
        let entries = journal.read_after(next, FRAME_ROWS)?;
        let Some(start) = entries.first().map(|e| e.seq) else {
            break;
        };
        if first.is_some() && start != next + 1 {
            return Err(refuse(format!(
                "the journal skips from row #{next} to #{start}"
            )));
        }
        first.get_or_insert(start);
        let rows: Vec<Row> = entries
            .into_iter()
            .take_while(|e| e.seq <= last)
            .map(|e| e.row.into_row())
            .collect();
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            if runs.contains(&row.run_id) {
                continue;
            }
            if let Some(run) = state.runs.get(&row.run_id).filter(|r| r.finished.is_none()) {
                return Err(refuse(format!(
                    "run {} was partly uploaded to W&B from this machine ({}/{}/{}, {} history \
                     lines) and is not finished; the offsets its next rows need live in this \
                     store, so they cannot be uploaded from another machine. Upload them from \
                     here (sinks.wandb.mode = \"online\" once connected)",
                    row.run_id, run.entity, run.project, run.name, run.next_offset
                )));
            }
            runs.insert(row.run_id.clone());
        }
        for (i, chunk) in rows.chunks(FRAME_ROWS).enumerate() {
            write_frame(&mut out, start + (i * FRAME_ROWS) as u64, chunk).map_err(io)?;
        }
        next = start + rows.len() as u64 - 1;
    }
    let Some(first) = first else {
        return Ok(None);
    };
    let (buffered, bytes, sha256) = out.finish();
    let file = buffered.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(Some(RowsFile {
        first,
        last: next,
        rows: next - first + 1,
        runs,
        bytes,
        sha256,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMBEDDED_DEFAULT;
    use crate::journal::codec::encode_block;

    fn config(store: &Path, mode: &str) -> Config {
        let text = EMBEDDED_DEFAULT
            .replace(
                "path = \"var/shipper\"",
                &format!("path = \"{}\"", store.display()),
            )
            .replace("# mode = \"online\"", &format!("mode = \"{mode}\""));
        Config::parse(&text, "test").unwrap()
    }

    fn row(run: &str, step: i64) -> Row {
        Row {
            run_id: run.into(),
            step,
            wall_time: 1.0,
            values: [("x".to_string(), 1.0)].into_iter().collect(),
            event: None,
            origin: Default::default(),
        }
    }

    fn journal_with(store: &Path, rows: &[Row]) -> Journal {
        let j = Journal::open(store, &["jsonl", "tensorboard", "wandb"]).unwrap();
        j.commit_events(rows).unwrap();
        j
    }

    #[test]
    fn a_run_partly_uploaded_from_here_is_not_exported() {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        let j = journal_with(&store, &[row("DONE", 1), row("OPEN", 1)]);
        let run = |finished: &str| {
            format!(
                r#"{{"name":"x","display":"X","entity":"e","project":"p","storage_id":"s",
                "start":"1","next_offset":7,"last_step":0,"last_time":"1","latest":{{}},
                "finished":{finished}}}"#
            )
        };
        let state = format!(
            r#"{{"runs":{{"DONE":{},"OPEN":{}}}}}"#,
            run("0"),
            run("null")
        );
        j.ack("wandb", 0, state.into_bytes()).unwrap();
        drop(j);
        let to = root.path().join("b");
        let err = export(&config(&store, "stage"), &to)
            .unwrap_err()
            .to_string();
        assert!(err.contains("run OPEN was partly uploaded"), "{err}");
        assert!(!to.exists(), "no bundle");
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary directory is left");
        let j = Journal::open_existing(&store).unwrap();
        assert_eq!(j.cursor("wandb").unwrap().seq, 0, "the cursor did not move");
    }

    #[test]
    fn export_writes_a_bundle_then_hands_the_rows_over() {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("store");
        let rows: Vec<Row> = (0..FRAME_ROWS as i64 + 3).map(|s| row("R", s)).collect();
        drop(journal_with(&store, &rows));
        let c = config(&store, "stage");
        let Exported::Written { manifest, .. } = export(&c, &root.path().join("b1")).unwrap()
        else {
            panic!("nothing exported")
        };
        assert_eq!(
            (manifest.seq.first, manifest.seq.last),
            (1, rows.len() as u64)
        );
        assert_eq!(manifest.previous, None);
        let bytes = std::fs::read(root.path().join("b1").join(ROWS_FILE)).unwrap();
        let parsed = super::super::frames::parse(&bytes).unwrap();
        assert_eq!(
            parsed.frames.len(),
            2,
            "frames hold at most FRAME_ROWS rows"
        );
        assert_eq!(parsed.frames[0].block, encode_block(&rows[..FRAME_ROWS]));
        assert_eq!(sha256_hex(&bytes), manifest.files[0].sha256);
        assert!(matches!(
            export(&c, &root.path().join("b2")).unwrap(),
            Exported::Nothing { warning: None, .. }
        ));
        assert!(!root.path().join("b2").exists());

        let j = Journal::open(&store, &["jsonl", "tensorboard", "wandb"]).unwrap();
        j.commit_events(&[row("S", 1)]).unwrap();
        drop(j);
        let Exported::Written { manifest: m2, .. } = export(&c, &root.path().join("b2")).unwrap()
        else {
            panic!("nothing exported")
        };
        let p = m2.previous.unwrap();
        assert_eq!(
            p.bundle_id, manifest.bundle_id,
            "the second names the first"
        );
        assert_eq!(
            (m2.seq.first, m2.runs),
            (p.seq.last + 1, vec!["S".to_string()])
        );

        let err = export(&config(&store, "offline"), &root.path().join("b3"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode = \"stage\""), "{err}");
    }
}
