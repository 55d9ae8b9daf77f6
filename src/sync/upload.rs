//! Uploading one offline run directory: resumable, and marked synced the
//! way `wandb sync` marks it so that the two tools never both upload it.
//!
//! A directory's history lines go out at offsets `base`, `base + 1`, ...
//! in record order, where `base` is the number of lines the run already
//! had on the server when this directory was first uploaded (0 for a new
//! run; more when the directory continues a run another directory began,
//! which the offline sink does after a file was cut short by hand).
//! `base` and the lines acknowledged so far are saved in
//! `run-<id>.wandb.mosaic-sync` beside the log before anything is sent, so
//! an upload that is repeated (after a crash, or of a directory that grew)
//! rewrites the same offsets instead of adding lines, and a run still
//! being written sends only its new lines next time. When the run has its exit
//! record, the run files and `complete` go out and the empty
//! `run-<id>.wandb.synced` marker is created: `wandb sync` skips such a
//! directory, and so does `mosaic-shipper sync` (unless told otherwise).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::offline_run::OfflineRun;
use super::progress::RunProgress;
use crate::sink::wandb::client::{finish_files, wandb_config, Client, RunRef};
use crate::sink::wandb::filestream::{Stream, Update, EVENTS_FILE};
use crate::sink::wandb::graphql::UpsertInput;
use crate::sink::wandb::offline::txlog::Stop;
use crate::sink::wandb::overview::OUTPUT_FILE;
use crate::sink::wandb::step_metric::config_entries;
use crate::sink::wandb::WandbSettings;

/// What an upload achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything is on the server, the run is complete, the directory is
    /// marked synced.
    Synced { lines: u64, exit_code: i32 },
    /// Every line so far is on the server; the run has no exit record yet
    /// (still being written, or its writer died), so it stays open.
    Unfinished { lines: u64 },
}

/// The `.synced` marker `wandb sync` creates and honours.
pub fn synced_marker(file: &Path) -> PathBuf {
    with_suffix(file, ".synced")
}

fn progress_file(file: &Path) -> PathBuf {
    with_suffix(file, ".mosaic-sync")
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// How far an earlier `sync` got with a directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Saved {
    /// The server offset of the directory's first history line.
    base: u64,
    /// History lines the server has acknowledged.
    lines: u64,
}

#[derive(Serialize, Deserialize)]
struct SavedFile {
    run_id: String,
    #[serde(flatten)]
    saved: Saved,
}

fn load_saved(file: &Path, run: &OfflineRun) -> Option<Saved> {
    let path = progress_file(file);
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice::<SavedFile>(&text) {
        Ok(s) if s.run_id == run.run_id && s.saved.lines <= run.history_lines => Some(s.saved),
        Ok(s) => {
            tracing::warn!(file = %path.display(), saved = s.saved.lines, lines = run.history_lines, "sync progress does not match the log (rewritten?); uploading it again at the same offsets");
            Some(Saved {
                lines: 0,
                ..s.saved
            })
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "unreadable sync progress; uploading as new");
            None
        }
    }
}

/// Written before the first request and after each acknowledged one,
/// atomically (temp + fsync + rename): a crash leaves the old or the new
/// state, never a torn file.
fn save(file: &Path, run: &OfflineRun, saved: Saved) -> std::io::Result<()> {
    use std::io::Write;
    let path = progress_file(file);
    let tmp = with_suffix(&path, ".tmp");
    let body = SavedFile {
        run_id: run.run_id.clone(),
        saved,
    };
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(&body).expect("serialises"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// An error that names the directory.
fn fail(run: &OfflineRun, what: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{}: {what}", run.dir.display())
}

/// The run files uploaded at finish: the summary and config W&B shows,
/// as `wandb sync` writes them, plus whatever the writer left in `files/`
/// (the SDK's `requirements.txt`, `output.log`, ...).
fn run_files(
    run: &OfflineRun,
    summary: &str,
    config: &serde_json::Value,
) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = finish_files(summary, config);
    // The Overview tab: the SDK's environment records, as core writes
    // them for a synced run.
    if let Some(meta) = run.sdk.metadata() {
        files.push((
            "wandb-metadata.json".into(),
            serde_json::to_vec_pretty(&meta).expect("JSON values serialise"),
        ));
    }
    let root = run.dir.join("files");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail(run, format!("cannot list {}: {e}", dir.display()))),
        };
        for entry in entries {
            let path = entry
                .map_err(|e| fail(run, format!("cannot list {}: {e}", dir.display())))?
                .path();
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| fail(run, format!("cannot stat {}: {e}", path.display())))?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let name = path
                .strip_prefix(&root)
                .expect("under files/")
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if files.iter().any(|(n, _)| *n == name) {
                continue; // generated from the records above
            }
            let body = std::fs::read(&path)
                .map_err(|e| fail(run, format!("cannot read {}: {e}", path.display())))?;
            files.push((name, body));
        }
    }
    Ok(files)
}

/// Uploads `run` (see the module documentation); `again`: from its first
/// line, even if an earlier sync sent some (`--include-synced`). Also
/// logs its artifact records ([`super::artifacts`]).
pub async fn upload(
    client: &mut Client,
    settings: &WandbSettings,
    run: &OfflineRun,
    again: bool,
    progress: &mut RunProgress,
) -> anyhow::Result<(Outcome, super::artifacts::Counts)> {
    let total = run.history_lines;
    let saved = load_saved(&run.file, run);
    let mut sent = saved.filter(|_| !again).map_or(0, |s| s.lines);
    progress.set(sent);
    let project = run.project.as_deref().unwrap_or(&settings.project);
    let configured = run.entity.as_deref().or(settings.entity.as_deref());
    let entity = client.entity(configured).await.map_err(|e| fail(run, e))?;
    // The metric definitions the log holds (ours: global_step as every
    // metric's x-axis), in `_wandb.m` as `wandb sync` sends them. An SDK's
    // log describes itself (telemetry, environment): its `_wandb` is made
    // of that, as `wandb sync` makes it, not of ours.
    let mut config = wandb_config(Some(&run.config), &config_entries(&run.metrics));
    if run.sdk.from_sdk() {
        config["_wandb"]["value"] = run.sdk.wandb_value(config_entries(&run.metrics));
    }
    let bucket = client
        .upsert(&UpsertInput {
            id: None,
            name: &run.run_id,
            project,
            entity: entity.as_deref(),
            display_name: run.display_name.as_deref(),
            config: Some(&config),
            host: run.host.as_deref(),
            program: None,
        })
        .await
        .map_err(|e| fail(run, e))?;
    let base = saved.map_or(bucket.history_line_count, |s| s.base);
    if saved.is_none() && base > 0 {
        tracing::info!(dir = %run.dir.display(), lines = base, "the W&B run has lines already; this directory continues it");
    }
    let save_progress = |sent: u64| {
        save(&run.file, run, Saved { base, lines: sent }).map_err(|e| {
            fail(
                run,
                format!(
                    "cannot save sync progress beside {}: {e}",
                    run.file.display()
                ),
            )
        })
    };
    save_progress(sent)?;
    let display = run.display_name.as_deref().unwrap_or(&run.run_id);
    let target = RunRef {
        entity: &bucket.entity,
        project: &bucket.project,
        name: &bucket.name,
        display,
    };
    // Without summary records the last line is the best summary there is.
    let summary = if run.summary.is_empty() {
        run.last_line.clone()
    } else {
        Some(run.summary.to_json())
    };
    let per_request = settings.rows_per_request.max(1);
    // Streamed from the log: one request's lines in memory at a time.
    let mut lines = run.history().map_err(|e| fail(run, e))?;
    lines.skip(sent).map_err(|e| fail(run, e))?;
    let mut first = true;
    while sent < total || first {
        let end = (sent + per_request as u64).min(total);
        let update = Update {
            history_offset: base + sent,
            history: lines
                .take((end - sent) as usize)
                .map_err(|e| fail(run, e))?,
            summary: summary.clone().filter(|_| end == total),
            uploaded: Vec::new(),
            exit_code: None,
            ..Update::default()
        };
        if !update.history.is_empty() || update.summary.is_some() {
            client
                .send(target, &update)
                .await
                .map_err(|e| fail(run, e))?;
        }
        sent = end;
        first = false;
        save_progress(sent)?;
        progress.set(sent);
    }
    // System metrics and console lines, by offset from the first: sent
    // again whole by a repeated sync, they rewrite the same lines.
    for (name, lines) in [
        (EVENTS_FILE, &run.sdk.events),
        (OUTPUT_FILE, &run.sdk.console),
    ] {
        for (i, chunk) in lines.chunks(per_request).enumerate() {
            let update = Update {
                streams: vec![Stream {
                    name,
                    offset: (i * per_request) as u64,
                    lines: chunk.to_vec(),
                }],
                ..Update::default()
            };
            client
                .send(target, &update)
                .await
                .map_err(|e| fail(run, e))?;
        }
    }
    // Artifact records, once the run has its rows (as core logs them
    // beside the history); before the exit, so a run marked synced has
    // every version.
    let logged = super::artifacts::log_records(
        client,
        run,
        &crate::sink::wandb::artifact::protocol::Target {
            entity: &bucket.entity,
            project: &bucket.project,
            run: &bucket.name,
            display,
        },
    )
    .await
    .map_err(|e| fail(run, e))?;
    // A damaged log may have lost records after the damage: never call
    // such a run complete.
    let damaged = matches!(run.stop, Some(Stop::Damaged { .. }));
    let Some(exit_code) = run.exit_code.filter(|_| !damaged) else {
        return Ok((Outcome::Unfinished { lines: sent }, logged));
    };
    let summary = summary.unwrap_or_else(|| "{}".into());
    let files = run_files(run, &summary, &config)?;
    let uploaded = client
        .upload_files(target, &files)
        .await
        .map_err(|e| fail(run, e))?;
    let last = Update {
        history_offset: base + total,
        history: Vec::new(),
        summary: Some(summary),
        uploaded,
        exit_code: Some(exit_code),
        ..Update::default()
    };
    client.send(target, &last).await.map_err(|e| fail(run, e))?;
    let marker = synced_marker(&run.file);
    std::fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(|e| {
            fail(
                run,
                format!("uploaded, but cannot create {}: {e}", marker.display()),
            )
        })?;
    // The progress file stays: `--include-synced` rewrites the same
    // offsets with it instead of appending the run a second time.
    Ok((
        Outcome::Synced {
            lines: total,
            exit_code,
        },
        logged,
    ))
}
