//! `import DIR`: a bundle verified whole, then its rows appended to this
//! machine's journal in one transaction.
//!
//! Everything that can be checked without the journal is checked first
//! (manifest, the directory's contents, each file's size and SHA-256,
//! every row decoded and counted), so a damaged bundle is refused before
//! the store is even opened. Import never deletes rows: it opens an
//! existing store without initialising cursors or compacting, so running
//! it with another configuration than the agent's cannot drop rows a sink
//! of the agent still needs.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::checkpoints;
use super::frames::{self, Parsed};
use super::manifest::Manifest;
use super::order::{self, Plan};
use super::{digest, now_unix, BundleError, MANIFEST_FILE, ROWS_FILE, WANDB_SINK};
use crate::config::Config;
use crate::journal::{ImportRecord, Journal};

/// What an import did.
#[derive(Debug)]
pub struct Imported {
    pub dir: PathBuf,
    pub store: PathBuf,
    pub manifest: Manifest,
    /// What was taken and where it went.
    pub record: ImportRecord,
    /// Rows of the bundle already here (from an earlier bundle), skipped.
    pub skipped: u64,
    /// Checkpoint versions recorded for W&B (copied into the store).
    pub checkpoints: usize,
    /// Sinks enabled by the configuration; they deliver the rows.
    pub sinks: Vec<String>,
    pub warnings: Vec<String>,
}

/// Imports bundle `dir` into `config`'s store. With `allow_gap`, a bundle
/// whose predecessor was never imported here is taken anyway.
pub fn import(config: &Config, dir: &Path, allow_gap: bool) -> Result<Imported, BundleError> {
    let refuse = |reason: String| BundleError::Refused {
        dir: dir.to_path_buf(),
        reason,
    };
    let (manifest, bytes) = check_files(dir)?;
    let parsed = check_rows(dir, &manifest, &bytes)?;

    let store = config.store.path.clone();
    let enabled = config.enabled_sinks();
    let journal = if store.join("journal").is_dir() {
        Journal::open_existing(&store)
    } else {
        // A connected machine where the agent never ran: made as the
        // agent makes it, with a cursor for each enabled sink.
        Journal::open(&store, &enabled)
    }
    .map_err(|e| BundleError::journal(e, "import"))?;
    if journal.journal_id()? == manifest.source.journal_id {
        // Its rows were handed over from here; taking them back would
        // deliver them a second time to this machine's other sinks.
        return Err(refuse(format!(
            "it was exported from this store ({}): its rows were handed over from here",
            store.display()
        )));
    }
    let plan = order::decide(
        &manifest,
        journal.imported(&manifest.bundle_id)?.as_ref(),
        journal.import_source(&manifest.source.journal_id)?.as_ref(),
        allow_gap,
    )
    .map_err(refuse)?;

    let blocks = blocks_to_take(&parsed, &plan);
    // `decide` skips only rows inside the bundle's range.
    let first = plan.skip_through.map_or(manifest.seq.first, |s| s + 1);
    let record = ImportRecord {
        bundle_id: manifest.bundle_id.clone(),
        source_host: manifest.source.host.clone(),
        source_store: manifest.source.store.clone(),
        source_journal: manifest.source.journal_id.clone(),
        first,
        last: manifest.seq.last,
        rows: manifest.seq.last - first + 1,
        local_first: 0,
        local_last: 0,
        imported_at: now_unix(),
    };
    // Checkpoints first: copied and checked, then recorded (each once, by
    // its identity), before the rows. A crash between the two leaves the
    // bundle not imported; importing it again takes the rows and finds the
    // checkpoints already recorded.
    let taken = checkpoints::take(
        dir,
        &store,
        &manifest.bundle_id,
        &manifest.artifacts,
        &manifest.files,
        &journal,
    )?;
    let checkpoints = checkpoints::record(&journal, taken)?;
    let refs: Vec<&[u8]> = blocks.iter().map(|b| b.as_ref()).collect();
    let record = journal.commit_import(&refs, record)?;
    journal.flush()?;

    let mut warnings = Vec::new();
    if let Some((from, to)) = plan.gap {
        warnings.push(format!(
            "--allow-gap: rows #{from}..#{to} of journal {} were never imported here; a bundle \
             holding them will be refused from now on",
            manifest.source.journal_id
        ));
    }
    if !enabled.contains(&WANDB_SINK) {
        warnings.push(format!(
            "the W&B sink is not enabled in configuration {}: the imported rows go to {} and \
             are deleted once those have them. To upload them to W&B, enable it (online, or \
             sinks.wandb.mode = \"stage\" for `sync`) before the agent next runs on this store",
            config.origin,
            if enabled.is_empty() {
                "no sink".to_string()
            } else {
                enabled.join(", ")
            }
        ));
    }
    let held = journal.stored_bytes()?;
    if held > config.store.max_bytes {
        warnings.push(format!(
            "the store now holds {held} bytes of rows, over store.max_bytes ({}): the agent \
             pauses reading logs until its sinks have delivered enough",
            config.store.max_bytes
        ));
    }
    Ok(Imported {
        dir: dir.to_path_buf(),
        store,
        skipped: manifest.rows - record.rows,
        checkpoints,
        manifest,
        record,
        sinks: enabled.iter().map(|s| s.to_string()).collect(),
        warnings,
    })
}

/// The journal blocks to append: whole frames, less rows already here.
fn blocks_to_take<'a>(parsed: &'a Parsed<'a>, plan: &Plan) -> Vec<Cow<'a, [u8]>> {
    let skip = plan.skip_through.unwrap_or(0);
    parsed
        .frames
        .iter()
        .filter(|f| f.last_seq() > skip)
        .map(|f| {
            if f.first_seq > skip {
                Cow::Borrowed(f.block)
            } else {
                Cow::Owned(f.block_after(skip))
            }
        })
        .collect()
}

/// Reads and checks the manifest, the directory's contents and every
/// listed file's size and SHA-256; returns the manifest and rows.bin.
fn check_files(dir: &Path) -> Result<(Manifest, Vec<u8>), BundleError> {
    let refuse = |reason: String| BundleError::Refused {
        dir: dir.to_path_buf(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse("it is not a directory".into())),
        Err(e) => return Err(refuse(format!("cannot open it: {e}"))),
    }
    let text = match std::fs::read(dir.join(MANIFEST_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(format!(
                "it has no {MANIFEST_FILE}: not a bundle, or its export did not finish"
            )))
        }
        Err(e) => return Err(refuse(format!("{MANIFEST_FILE} cannot be read: {e}"))),
    };
    let manifest = Manifest::parse(&text).map_err(|e| refuse(format!("{MANIFEST_FILE}: {e}")))?;
    let entries = std::fs::read_dir(dir).map_err(|e| refuse(format!("cannot list it: {e}")))?;
    for entry in entries {
        let name = entry
            .map_err(|e| refuse(format!("cannot list it: {e}")))?
            .file_name()
            .to_string_lossy()
            .to_string();
        if name != MANIFEST_FILE && manifest.file(&name).is_none() {
            return Err(refuse(format!(
                "{name} is not listed in {MANIFEST_FILE} (a bundle holds only the files its \
                 manifest lists; this one was changed after export)"
            )));
        }
    }
    let mut rows = None;
    for f in &manifest.files {
        let path = dir.join(&f.path);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(refuse(format!(
                    "{} is missing ({MANIFEST_FILE} lists it)",
                    f.path
                )))
            }
            Err(e) => return Err(refuse(format!("{} cannot be read: {e}", f.path))),
        };
        if !meta.is_file() {
            return Err(refuse(format!("{} is not a regular file", f.path)));
        }
        if meta.len() != f.bytes {
            return Err(refuse(format!(
                "{} is {} bytes, {MANIFEST_FILE} says {} (truncated or damaged)",
                f.path,
                meta.len(),
                f.bytes
            )));
        }
        let (bytes, sha) = if f.path == ROWS_FILE {
            let bytes = std::fs::read(&path)
                .map_err(|e| refuse(format!("{} cannot be read: {e}", f.path)))?;
            let sha = digest::sha256_hex(&bytes);
            (Some(bytes), sha)
        } else {
            // A checkpoint: streamed, it may be gigabytes.
            let (_, sha) = checkpoints::sha256_of(&path)
                .map_err(|e| refuse(format!("{} cannot be read: {e}", f.path)))?;
            (None, sha)
        };
        if sha != f.sha256.to_ascii_lowercase() {
            return Err(refuse(format!(
                "{}: SHA-256 mismatch: the file's is {sha}, {MANIFEST_FILE} says {} (damaged)",
                f.path, f.sha256
            )));
        }
        if f.path == ROWS_FILE {
            rows = bytes;
        }
    }
    let rows = rows.expect("the manifest check requires rows.bin");
    Ok((manifest, rows))
}

/// Decodes every row of rows.bin and checks it against the manifest.
fn check_rows<'a>(
    dir: &Path,
    manifest: &Manifest,
    bytes: &'a [u8],
) -> Result<Parsed<'a>, BundleError> {
    let refuse = |reason: String| BundleError::Refused {
        dir: dir.to_path_buf(),
        reason,
    };
    let parsed = frames::parse(bytes).map_err(|e| {
        refuse(format!(
            "{ROWS_FILE} at byte offset {}: {}",
            e.offset, e.detail
        ))
    })?;
    if parsed.rows != manifest.rows {
        return Err(refuse(format!(
            "{ROWS_FILE} holds {} rows, {MANIFEST_FILE} says {}",
            parsed.rows, manifest.rows
        )));
    }
    let first = parsed.frames.first().map(|f| f.first_seq);
    let last = parsed.frames.last().map(|f| f.last_seq());
    if first != Some(manifest.seq.first) || last != Some(manifest.seq.last) {
        return Err(refuse(format!(
            "{ROWS_FILE} holds rows #{}..#{}, {MANIFEST_FILE} says #{}..#{}",
            first.unwrap_or_default(),
            last.unwrap_or_default(),
            manifest.seq.first,
            manifest.seq.last
        )));
    }
    if !parsed.runs.iter().eq(manifest.runs.iter()) {
        return Err(refuse(format!(
            "{ROWS_FILE} holds runs {:?}, {MANIFEST_FILE} lists {:?}",
            parsed.runs, manifest.runs
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{export, Exported};
    use crate::config::EMBEDDED_DEFAULT;
    use crate::row::Row;

    fn config(store: &Path) -> Config {
        let text = EMBEDDED_DEFAULT
            .replace(
                "path = \"var/shipper\"",
                &format!("path = \"{}\"", store.display()),
            )
            .replace("# mode = \"online\"", "mode = \"stage\"");
        Config::parse(&text, "test").unwrap()
    }

    fn add_rows(store: &Path, steps: std::ops::RangeInclusive<i64>) {
        let j = Journal::open(store, &["wandb"]).unwrap();
        let rows: Vec<Row> = steps
            .map(|step| Row {
                run_id: "R".into(),
                step,
                wall_time: 1.0,
                values: [("x".to_string(), step as f64)].into_iter().collect(),
                event: None,
                origin: Default::default(),
            })
            .collect();
        j.commit_events(&rows).unwrap();
        j.journal_id().unwrap();
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }

    fn steps(store: &Path) -> Vec<i64> {
        let j = Journal::open_existing(store).unwrap();
        j.read_after(0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.row.step)
            .collect()
    }

    /// Export's hand-over lost after the bundle was written (simulated by
    /// exporting from a copy of the store made before): the next bundle
    /// repeats its rows, and import takes each row once.
    #[test]
    fn rows_exported_twice_are_imported_once() {
        let root = tempfile::tempdir().unwrap();
        let (a, lost, b) = (
            root.path().join("a"),
            root.path().join("a-lost"),
            root.path().join("b"),
        );
        add_rows(&a, 1..=5);
        copy_dir(&a, &lost);
        let Exported::Written { dir: b1, .. } =
            export(&config(&a), &root.path().join("b1")).unwrap()
        else {
            panic!()
        };
        add_rows(&lost, 6..=8);
        let Exported::Written {
            dir: b2, manifest, ..
        } = export(&config(&lost), &root.path().join("b2")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (manifest.seq.first, manifest.seq.last, manifest.previous),
            (1, 8, None)
        );

        let first = import(&config(&b), &b1, false).unwrap();
        assert_eq!((first.record.rows, first.skipped), (5, 0));
        let second = import(&config(&b), &b2, false).unwrap();
        assert_eq!(
            (second.record.first, second.record.rows, second.skipped),
            (6, 3, 5)
        );
        assert_eq!(steps(&b), (1..=8).collect::<Vec<_>>());

        let c = root.path().join("c");
        import(&config(&c), &b2, false).unwrap();
        let err = import(&config(&c), &b1, false).unwrap_err().to_string();
        assert!(
            err.contains("older") && err.contains("nothing was imported"),
            "{err}"
        );
        assert_eq!(steps(&c), (1..=8).collect::<Vec<_>>());
    }
}
