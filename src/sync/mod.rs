//! `mosaic-shipper sync`: uploads to W&B what was staged while it was out
//! of reach, on a connected machine.
//!
//! Two kinds of staged data, one command:
//! - rows held in the journal for the online sink ([`journal`]): the agent
//!   ran with `mode = "stage"`, or they were imported from another
//!   machine's bundle, or W&B was down;
//! - W&B offline run directories ([`offline_run`], [`upload`]), written by
//!   our `wandb-offline` sink or by the SDK's own offline mode.
//!
//! Both go through the online sink's client (`sink::wandb::client`), so the
//! proxy choice, TLS and retry policy are the agent's. Nothing is uploaded
//! twice: journal rows are behind the sink's cursor once acknowledged, and
//! a directory is marked synced as `wandb sync` marks it.

pub mod journal;
pub mod offline_run;
pub mod progress;
pub mod upload;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::sink::wandb::client::Client;
use crate::sink::wandb::proxy::Target;
use crate::sink::wandb::WandbSettings;
use progress::Progress;
use upload::Outcome;

/// What to sync.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Offline run directories, `.wandb` files, or directories holding
    /// `offline-run-*` directories. Empty: the journal and everything
    /// under the configured `offline_dir`.
    pub paths: Vec<PathBuf>,
    /// Upload directories already marked synced again.
    pub include_synced: bool,
}

/// What a sync did, for the closing summary and the exit status.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

impl Report {
    // Not logged: the command prints the report once, at the end.
    fn note(&mut self, line: String) {
        self.lines.push(line);
    }

    fn failed(&mut self, line: String) {
        self.failures.push(line);
    }
}

/// The settings `sync` uploads with: the W&B sink's, whatever its mode
/// (staging and offline modes are what sync exists for), with a key and a
/// usable URL required.
pub fn upload_settings(config: &Config) -> anyhow::Result<WandbSettings> {
    let settings = config.wandb();
    if settings.key.is_none() {
        anyhow::bail!(
            "sync needs a W&B API key: {} (set WANDB_API_KEY or run `wandb login`)",
            settings.key_source
        );
    }
    Target::parse(&settings.base_url).map_err(|e| anyhow::anyhow!("sync: W&B base URL: {e}"))?;
    Ok(settings)
}

/// Offline run directories to upload, in a stable order.
fn find_dirs(paths: &[PathBuf], offline_dir: &Path, report: &mut Report) -> Vec<PathBuf> {
    let roots: Vec<PathBuf> = if paths.is_empty() {
        if !offline_dir.is_dir() {
            return Vec::new();
        }
        vec![offline_dir.to_path_buf()]
    } else {
        paths.to_vec()
    };
    let mut out = Vec::new();
    for root in roots {
        if root.is_file() && root.extension().is_some_and(|e| e == "wandb") {
            out.push(root.parent().unwrap_or(Path::new(".")).to_path_buf());
        } else if root.is_dir() && offline_run::log_file(&root).is_ok() {
            out.push(root);
        } else if root.is_dir() {
            let mut found: Vec<PathBuf> = match std::fs::read_dir(&root) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.is_dir()
                            && p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with("offline-run-"))
                    })
                    .collect(),
                Err(e) => {
                    report.failed(format!("cannot list {}: {e}", root.display()));
                    continue;
                }
            };
            if found.is_empty() && !paths.is_empty() {
                report.failed(format!(
                    "{}: neither an offline run directory nor a directory holding offline-run-* directories",
                    root.display()
                ));
            }
            found.sort();
            out.extend(found);
        } else {
            report.failed(format!(
                "{}: no such offline run directory or .wandb file",
                root.display()
            ));
        }
    }
    // Oldest first (the names start with the run's start time): a
    // directory that continues a run must follow the one it continues.
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    out.dedup();
    out
}

/// Runs a sync; failures of single runs are collected in the report (the
/// others still upload), errors that stop everything are returned.
pub async fn sync(config: &Config, options: &SyncOptions) -> anyhow::Result<Report> {
    let settings = upload_settings(config)?;
    let progress = Progress::detect();
    let mut report = Report::default();
    if options.paths.is_empty() {
        match journal::sync(config, &settings, &progress).await {
            Ok(journal::Outcome::NoStore) => report.note(format!(
                "journal: no store at {}; nothing staged there",
                config.store.path.display()
            )),
            Ok(journal::Outcome::NothingStaged) => report.note(format!(
                "journal {}: no rows staged for W&B (the W&B sink never ran or staged there)",
                config.store.path.display()
            )),
            Ok(journal::Outcome::Uploaded { rows, runs }) => report.note(format!(
                "journal {}: {rows} rows of {runs} runs uploaded",
                config.store.path.display()
            )),
            Err(e) => report.failed(format!("{e:#}")),
        }
    }
    if options.paths.is_empty() && config.store.path.join("journal").is_dir() {
        // Checkpoints recorded while W&B was staged.
        match crate::journal::Journal::open_existing(&config.store.path) {
            Ok(j) => {
                let shipped = crate::sink::wandb::artifact::ship_staged(
                    &config.artifacts,
                    settings.clone(),
                    std::sync::Arc::new(j),
                )
                .await;
                match shipped {
                    Ok((0, 0)) => {}
                    Ok((done, 0)) => {
                        report.note(format!("artifacts: {done} checkpoint versions logged"))
                    }
                    Ok((done, left)) => report.failed(format!(
                        "artifacts: {done} checkpoint versions logged, {left} still pending"
                    )),
                    Err(e) => report.failed(format!("artifacts: {e:#}")),
                }
            }
            Err(e) => report.failed(format!("artifacts: {e}")),
        }
    }
    let dirs = find_dirs(&options.paths, &settings.offline_dir, &mut report);
    if dirs.is_empty() && options.paths.is_empty() {
        report.note(format!(
            "offline directories: none under {}",
            settings.offline_dir.display()
        ));
    }
    let mut client = None;
    for dir in dirs {
        let run = match offline_run::read(&dir) {
            Ok(run) => run,
            Err(e) => {
                report.failed(e.to_string());
                continue;
            }
        };
        let marker = upload::synced_marker(&run.file);
        if marker.exists() && !options.include_synced {
            report.note(format!(
                "{}: already synced ({} exists; --include-synced uploads it again)",
                dir.display(),
                marker.display()
            ));
            continue;
        }
        let client = match &mut client {
            Some(c) => c,
            None => client.insert(Client::new(&settings)?),
        };
        let label = run.display_name.clone().unwrap_or(run.run_id.clone());
        let mut bar = progress.run(&label, run.history_lines, "lines");
        match upload::upload(client, &settings, &run, options.include_synced, &mut bar).await {
            Ok(outcome) => {
                let damaged = match &run.stop {
                    Some(s @ crate::sink::wandb::offline::txlog::Stop::Damaged { .. }) => {
                        Some(s.to_string())
                    }
                    _ => None,
                };
                match (outcome, damaged) {
                    (Outcome::Unfinished { lines }, Some(damage)) => {
                        bar.fail(&damage);
                        report.failed(format!(
                            "{}: {lines} lines uploaded, then the log is damaged: {damage}; not marked synced",
                            run.file.display()
                        ));
                    }
                    (Outcome::Unfinished { lines }, None) => {
                        bar.finish("uploaded; run not finished yet");
                        report.note(format!(
                            "{}: {lines} lines uploaded; no exit record yet, so the run stays open and the directory is not marked synced",
                            dir.display()
                        ));
                    }
                    (Outcome::Synced { lines, exit_code }, _) => {
                        bar.finish("synced");
                        report.note(format!(
                            "{}: {lines} lines uploaded, run complete (exit code {exit_code}), marked synced",
                            dir.display()
                        ));
                    }
                }
            }
            Err(e) => {
                bar.fail(&format!("{e:#}"));
                report.failed(format!("{e:#}"));
            }
        }
    }
    Ok(report)
}
