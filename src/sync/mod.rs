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

pub mod artifacts;
pub mod journal;
pub mod offline_run;
pub mod progress;
pub mod sdk_records;
pub mod upload;

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::sink::wandb::client::Client;
use crate::sink::wandb::proxy::Target;
use crate::sink::wandb::WandbSettings;
use progress::Progress;
use upload::Outcome;

/// What to sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Offline run directories, `.wandb` files, or directories holding
    /// `offline-run-*` directories. Empty: the journal and everything
    /// under the configured `offline_dir`.
    pub paths: Vec<PathBuf>,
    /// Upload directories already marked synced again.
    pub include_synced: bool,
    /// Offline runs uploaded at once (at least 1). Directories of one W&B
    /// run always go one after another, in order.
    pub jobs: usize,
}

/// `sync --jobs` when not given: a few runs at once hide most of the
/// round trips' latency without crowding the server.
pub const DEFAULT_JOBS: u16 = 4;

/// What a sync did, for the closing summary and the exit status.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions {
            paths: Vec::new(),
            include_synced: false,
            jobs: usize::from(DEFAULT_JOBS),
        }
    }
}

/// The report lines of one group of directories, with the group's place.
type Outcomes = (usize, Vec<Line>);

/// One line of a directory's outcome, for the report.
enum Line {
    Note(String),
    Failed(String),
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

/// Adds the offline runs the W&B SDK of workers that track W&B themselves
/// wrote (`sinks.wandb.worker_dir`, `<run>/wandb/wandb/offline-run-*` by
/// default) to `dirs`, keeping the oldest-first order.
fn with_workers_own(dirs: &mut Vec<PathBuf>, settings: &WandbSettings) {
    dirs.extend(settings.tracking.sdk_offline_runs());
    dirs.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    dirs.dedup();
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
    let mut dirs = find_dirs(&options.paths, &settings.offline_dir, &mut report);
    if options.paths.is_empty() {
        with_workers_own(&mut dirs, &settings);
    }
    if dirs.is_empty() && options.paths.is_empty() {
        report.note(format!(
            "offline directories: none under {} nor in the workers' own W&B directories",
            settings.offline_dir.display()
        ));
    }
    upload_dirs(&settings, &progress, dirs, options, &mut report).await;
    Ok(report)
}

/// Directories grouped by W&B run, in order: the unit one upload task
/// takes. A directory that continues a run (our offline sink starts a new
/// one after a damaged file) must follow the one it continues, and two
/// tasks must never write one run's offsets at once; directories that
/// cannot be read are a group of their own (they fail alone).
fn by_run(dirs: Vec<PathBuf>) -> Vec<Vec<(PathBuf, Result<offline_run::OfflineRun, String>)>> {
    let mut groups: Vec<(Option<String>, Vec<_>)> = Vec::new();
    for dir in dirs {
        let run = offline_run::read(&dir).map_err(|e| e.to_string());
        let id = run.as_ref().ok().map(|r| r.run_id.clone());
        match groups.iter_mut().find(|(g, _)| id.is_some() && *g == id) {
            Some((_, members)) => members.push((dir, run)),
            None => groups.push((id, vec![(dir, run)])),
        }
    }
    groups.into_iter().map(|(_, members)| members).collect()
}

/// Uploads the directories with up to `options.jobs` runs at once, each
/// run's directories in order; the report lists them in `dirs`' order
/// whatever order they finished in.
async fn upload_dirs(
    settings: &WandbSettings,
    progress: &Progress,
    dirs: Vec<PathBuf>,
    options: &SyncOptions,
    report: &mut Report,
) {
    use std::sync::{Arc, Mutex};
    let groups = by_run(dirs);
    let jobs = options.jobs.max(1).min(groups.len().max(1));
    // Work queue: (position of the group's first line, group).
    #[allow(clippy::type_complexity)] // a queue of numbered groups
    let queue: Arc<Mutex<std::collections::VecDeque<(usize, Vec<_>)>>> =
        Arc::new(Mutex::new(groups.into_iter().enumerate().collect()));
    let results: Arc<Mutex<Vec<Outcomes>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..jobs {
        let (queue, results) = (queue.clone(), results.clone());
        let (settings, progress) = (settings.clone(), progress.clone());
        let again = options.include_synced;
        tasks.spawn(async move {
            // Each task its own client: requests of one run stay in order,
            // runs of other tasks do not wait behind them.
            let mut client = None;
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                let Some((pos, group)) = next else { break };
                let mut lines = Vec::new();
                for (dir, run) in group {
                    lines.extend(
                        upload_dir(&mut client, &settings, &progress, &dir, run, again).await,
                    );
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((pos, lines));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            report.failed(format!("an upload task failed: {e}"));
        }
    }
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    results.sort_by_key(|(pos, _)| *pos);
    for line in results.into_iter().flat_map(|(_, lines)| lines) {
        match line {
            Line::Note(l) => report.note(l),
            Line::Failed(l) => report.failed(l),
        }
    }
}

/// Uploads one directory (see [`upload::upload`]); what happened, for
/// the report.
async fn upload_dir(
    client: &mut Option<Client>,
    settings: &WandbSettings,
    progress: &Progress,
    dir: &Path,
    run: Result<offline_run::OfflineRun, String>,
    include_synced: bool,
) -> Vec<Line> {
    let run = match run {
        Ok(run) => run,
        Err(e) => return vec![Line::Failed(e)],
    };
    let marker = upload::synced_marker(&run.file);
    if marker.exists() && !include_synced {
        return vec![Line::Note(format!(
            "{}: already synced ({} exists; --include-synced uploads it again)",
            dir.display(),
            marker.display()
        ))];
    }
    let client = match client {
        Some(c) => c,
        None => match Client::new(settings) {
            Ok(c) => client.insert(c),
            Err(e) => return vec![Line::Failed(format!("{}: {e}", dir.display()))],
        },
    };
    let label = run.display_name.clone().unwrap_or(run.run_id.clone());
    let mut bar = progress.run(&label, run.history_lines, "lines");
    match upload::upload(client, settings, &run, include_synced, &mut bar).await {
        Ok((outcome, logged)) => {
            let mut artifacts = artifact_lines(dir, &logged);
            let damaged = match &run.stop {
                Some(s @ crate::sink::wandb::offline::txlog::Stop::Damaged { .. }) => {
                    Some(s.to_string())
                }
                _ => None,
            };
            let line = match (outcome, damaged) {
                (Outcome::Unfinished { lines }, Some(damage)) => {
                    bar.fail(&damage);
                    Line::Failed(format!(
                        "{}: {lines} lines uploaded, then the log is damaged: {damage}; not marked synced",
                        run.file.display()
                    ))
                }
                (Outcome::Unfinished { lines }, None) => {
                    bar.finish("uploaded; run not finished yet");
                    Line::Note(format!(
                        "{}: {lines} lines uploaded; no exit record yet, so the run stays open and the directory is not marked synced",
                        dir.display()
                    ))
                }
                (Outcome::Synced { lines, exit_code }, _) => {
                    bar.finish("synced");
                    Line::Note(format!(
                        "{}: {lines} lines uploaded, run complete (exit code {exit_code}), marked synced",
                        dir.display()
                    ))
                }
            };
            let mut all = vec![line];
            all.append(&mut artifacts);
            all
        }
        Err(e) => {
            bar.fail(&format!("{e:#}"));
            vec![Line::Failed(format!("{e:#}"))]
        }
    }
}

/// The report lines of a directory's artifact records.
fn artifact_lines(dir: &Path, c: &artifacts::Counts) -> Vec<Line> {
    let mut out = Vec::new();
    if c.committed + c.deduplicated > 0 {
        out.push(Line::Note(format!(
            "{}: artifacts: {} new versions, {} already held by W&B (aliases moved){}",
            dir.display(),
            c.committed,
            c.deduplicated,
            if c.before > 0 {
                format!(", {} logged by an earlier sync", c.before)
            } else {
                String::new()
            }
        )));
    }
    for s in &c.skipped {
        out.push(Line::Failed(format!(
            "{}: artifact not logged: {s}",
            dir.display()
        )));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_of_one_run_form_one_group_in_order() {
        // Unreadable directories: each its own group, in order.
        let groups = by_run(vec!["/nonexistent/a".into(), "/nonexistent/b".into()]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0][0].0, PathBuf::from("/nonexistent/a"));
        assert!(groups[1][0].1.is_err());
    }
}
