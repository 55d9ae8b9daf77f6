//! The `wandb-offline` sink: rows staged as W&B offline run directories,
//! for machines without internet, that W&B's own `wandb sync` uploads.
//!
//! Each run gets `<offline_dir>/offline-run-<YYYYMMDD_HHMMSS>-<run id>/`
//! with `run-<run id>.wandb` (W&B's transaction log, [`txlog`], of
//! `Record` protobufs, [`records`]) and `files/`, as W&B 0.31.0 leaves it
//! offline: `files/output.log` holds the console lines, as the SDK writes
//! it (`wandb sync` uploads it at the end; it writes `config.yaml`,
//! `wandb-summary.json` there itself; docs/wandb-protocol.md section 6.1).
//! The timestamp is the run's first row in UTC (the SDK uses local time;
//! an agent's host usually runs in UTC and the name is not parsed).
//!
//! Records per run, in the SDK's order: header, run (with `start_time`),
//! the metric record of `define_metric("*", step_metric="global_step")`
//! ([`super::step_metric`]), then per row a summary update and a history
//! record carrying `global_step` (the worker's step), `_step` (the run's
//! line counter, also `step.num`), `_runtime` (from the earliest metric
//! row) and `_timestamp` items (sync adds none of them, section 9.5),
//! config records for config events, and at a run-finished event a final
//! summary and the exit record. W&B 0.31.0 writes no `final` or
//! `footer` records any more, so neither does this sink.
//!
//! Exactly once, on top of the sink contract (`sink` module docs): the
//! state committed with the cursor holds each file's length, which is a
//! record boundary because the sink appends only whole batches of records
//! and commits the length after `fsync`. Before a file is created its
//! entry (length 0) is checkpointed; recovery truncates every file back to
//! its committed length, so rows replayed from the journal are framed at
//! exactly the same offsets again. A file shorter than committed (edited or
//! removed by hand) cannot be continued without leaving a hole the reader
//! rejects: the sink warns and starts a new directory for the run's next
//! rows (same run id). `mosaic-shipper sync` appends the second directory
//! after the first in the same W&B run (tests/wandb_sync.rs); whether
//! `wandb sync` does the same is not verified.

pub mod artifacts;
pub mod records;
pub mod txlog;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::filestream::{push_number, whole_seconds};
use super::step_metric;
use super::{finish_channel, wandb_run_id, FinishHandle, FinishInbox};
use crate::row::{Entry, Row, RunEvent};
use crate::sink::{Checkpoint, Sink, SinkError};
use records::record::RecordType;
use records::{Item, Record, RecordInfo};

/// What the offline sink needs: where to write and what to name.
#[derive(Debug, Clone)]
pub struct OfflineSettings {
    pub dir: PathBuf,
    pub project: String,
    pub entity: Option<String>,
    /// Runs whose worker tracks W&B itself.
    pub tracking: super::worker_tracks::WorkerTracking,
}

/// One run's file, as committed with the cursor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct RunFile {
    /// The run directory (`offline-run-...`).
    dir: PathBuf,
    /// The transaction log inside it.
    file: PathBuf,
    /// Bytes that are durable and end on a record boundary; 0 before the
    /// file exists.
    len: u64,
    /// `Record.num` of the next record.
    next_num: i64,
    /// The run's start: the earliest wall time of its metric rows so far
    /// (`+inf` before the first); `_runtime` counts from it. Run events do
    /// not count (stamped with the agent's read time when they carry none).
    #[serde(with = "exact")]
    start: f64,
    /// The latest wall time of its metric rows (the exit's runtime).
    #[serde(with = "exact")]
    last_time: f64,
    /// Exit code once the exit record is written.
    finished: Option<i32>,
    /// The machine facts last written as an environment record (JSON),
    /// so that an agent restart does not repeat them.
    #[serde(default)]
    machine: Option<String>,
}

/// The sink's recovery state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    /// Per W&B run id: its current file.
    runs: BTreeMap<String, RunFile>,
    /// Committed length of every file written, including files of runs
    /// that moved on to a new directory (recovery cuts those back too).
    lengths: BTreeMap<PathBuf, u64>,
    /// Per W&B run id: the `_step` of its next history record. Kept across
    /// the run's directories, so a run continued in a new one (after an
    /// exit record, or a file cut short by hand) goes on counting.
    #[serde(default)]
    steps: BTreeMap<String, i64>,
    /// Keys of the checkpoint versions written as artifact records.
    #[serde(default)]
    artifacts: std::collections::BTreeSet<String>,
    /// Per W&B run id, runs without a directory yet: their configuration
    /// records and machine facts, written when the run's first metric row,
    /// console line or end opens it (`worker_tracks`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    waiting: BTreeMap<String, Waiting>,
    /// Per MOSAIC run id, runs left to the worker's own W&B run, with the
    /// SDK run directory that told.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    worker_tracked: BTreeMap<String, String>,
}

/// What waits for a run's directory.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Waiting {
    configs: Vec<String>,
    machine: Option<String>,
}

/// See the module documentation.
pub struct WandbOfflineSink {
    settings: OfflineSettings,
    host: String,
    /// As of the last commit (what recovery returns to).
    committed: State,
    /// Including records written since.
    working: State,
    /// Bytes framed but not yet on disk, per file.
    pending: BTreeMap<PathBuf, Vec<u8>>,
    /// Runs this process wrote rows or records for: init mode's exit code
    /// is theirs.
    delivered: HashSet<String>,
    finish_inbox: FinishInbox,
    /// Finish requests (W&B run id to exit code) waiting for a tick.
    finishing: BTreeMap<String, i32>,
    /// Checkpoint versions to write as artifact records (`artifacts`).
    artifacts: Option<artifacts::ArtifactFeed>,
    /// The MOSAIC run each run file is for: an error under one run's
    /// directory refuses that run (`sink::fs_refusal`).
    owners: HashMap<PathBuf, String>,
    /// W&B ids of the runs whose rows are set aside for this sink (told
    /// by the runner): no exit or artifact record is written for them,
    /// their files may be what cannot be written.
    set_aside: HashSet<String>,
}

impl WandbOfflineSink {
    /// The error of `what` on `path`, written for MOSAIC run `run`.
    fn run_err(&self, run: &str, path: &Path, what: &str, e: std::io::Error) -> SinkError {
        crate::sink::fs_refusal::error(
            "wandb-offline",
            Some(&self.settings.dir),
            run,
            path,
            what,
            e,
        )
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> SinkError {
    SinkError::Io(format!(
        "wandb-offline sink: {what} {}: {e}",
        path.display()
    ))
}

/// `value` in W&B's extended JSON.
fn number_json(v: f64) -> String {
    let mut s = String::new();
    push_number(&mut s, v);
    s
}

/// The value of a history/summary item named `key`. History items use
/// `nested_key` as the SDK writes them; summary and config items `key`.
fn item(key: &str, value_json: String, nested: bool) -> Item {
    if nested {
        Item {
            key: String::new(),
            nested_key: vec![key.to_string()],
            value_json,
        }
    } else {
        Item {
            key: key.to_string(),
            nested_key: Vec::new(),
            value_json,
        }
    }
}

/// Seconds from `start` to `t`: never negative, 0 before a start is known.
fn runtime(start: f64, t: f64) -> f64 {
    let r = t - start;
    if r.is_finite() {
        r.max(0.0)
    } else {
        0.0
    }
}

/// `YYYYMMDD_HHMMSS` of a Unix time, UTC.
fn stamp(secs: f64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs.max(0.0) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year][month][day]_[hour][minute][second]");
    t.format(&f).unwrap_or_else(|_| "19700101_000000".into())
}

impl WandbOfflineSink {
    /// The sink and the handle through which init mode (or the agent)
    /// says a run finished, as for the online sink.
    pub fn new(settings: OfflineSettings) -> (WandbOfflineSink, FinishHandle) {
        tracing::info!(dir = %settings.dir.display(), project = %settings.project, "W&B offline sink ready");
        let (handle, inbox) = finish_channel();
        let sink = WandbOfflineSink {
            settings,
            host: crate::util::hostname().unwrap_or_default(),
            committed: State::default(),
            working: State::default(),
            pending: BTreeMap::new(),
            delivered: HashSet::new(),
            finish_inbox: inbox,
            finishing: BTreeMap::new(),
            artifacts: None,
            owners: HashMap::new(),
            set_aside: HashSet::new(),
        };
        (sink, handle)
    }

    /// Also writes the checkpoint versions the journal records for the
    /// runs of this sink as artifact records (see `artifacts`).
    pub fn with_artifacts(mut self, feed: artifacts::ArtifactFeed) -> WandbOfflineSink {
        self.artifacts = Some(feed);
        self
    }

    /// Frames an artifact record for every complete checkpoint version of
    /// an open run, after staging a copy; marks in the journal those whose
    /// record is committed. True when a record was framed.
    async fn log_artifacts(&mut self) -> Result<bool, SinkError> {
        use crate::journal::artifacts::ArtifactState;
        let Some(feed) = self.artifacts.clone() else {
            return Ok(false);
        };
        let mut framed = false;
        let mut reopened = Vec::new();
        for mut f in feed.journal.artifact_files()? {
            if !matches!(f.state, ArtifactState::Pending) {
                continue;
            }
            let key = String::from_utf8_lossy(&f.key()).to_string();
            let id = wandb_run_id(&f.run_id);
            if self.committed.artifacts.contains(&key) {
                let dir = self
                    .committed
                    .runs
                    .get(&id)
                    .map(|r| r.dir.display().to_string());
                f.state = ArtifactState::Offline {
                    dir: dir.unwrap_or_default(),
                };
                feed.journal.put_artifact_file(&f)?;
                continue;
            }
            if self.working.artifacts.contains(&key) {
                continue;
            }
            // A run's log opens with its first row; until then, wait.
            let Some(run) = self.working.runs.get(&id) else {
                continue;
            };
            if self.set_aside.contains(&id) {
                continue;
            }
            if let Some(code) = run.finished {
                // The run's log ended (exit record written) before the
                // checkpoint was complete: a follow-up directory of the
                // same run takes it, closed with the same exit, as rows
                // for a finished run go to one.
                let (start, last_time) = (run.start, run.last_time);
                let row = Row {
                    run_id: f.run_id.clone(),
                    step: 0,
                    wall_time: if start.is_finite() {
                        start
                    } else {
                        crate::util::now_secs()
                    },
                    values: Default::default(),
                    event: None,
                    origin: Default::default(),
                };
                let checkpoint = Checkpoint::at_cursor(feed.journal.clone(), "wandb-offline")?;
                self.open_run(&id, &row, &checkpoint)?;
                let run = self.working.runs.get_mut(&id).expect("opened");
                // The exit record repeats the first one's runtime.
                (run.start, run.last_time) = (start, last_time);
                tracing::info!(run = %f.run_id, file = %f.rel_path, dir = %run.dir.display(), "checkpoint complete after the run's offline log ended; it goes to a follow-up offline run directory");
                reopened.push((id.clone(), code));
            }
            let run = &self.working.runs[&id];
            let src = f.path(&feed.cfg.runs_dir);
            let dest = artifacts::staged_path(&run.dir, &f);
            let (s2, d2) = (src.clone(), dest.clone());
            let copied = tokio::task::spawn_blocking(move || artifacts::stage_copy(&s2, &d2))
                .await
                .expect("copying does not panic");
            let same = f.unchanged(&src);
            let md5 = match copied {
                Ok((md5, n))
                    if n == f.size && same && f.md5_b64.as_ref().map_or(true, |m| *m == md5) =>
                {
                    md5
                }
                other => {
                    let reason = match other {
                        Err(e) => format!("cannot copy it to {}: {e}", dest.display()),
                        _ => "the file changed while it was copied".to_string(),
                    };
                    let _ = std::fs::remove_file(&dest);
                    tracing::warn!(run = %f.run_id, file = %f.rel_path, %reason, "checkpoint not written offline");
                    f.state = ArtifactState::Skipped { reason };
                    feed.journal.put_artifact_file(&f)?;
                    continue;
                }
            };
            let entity = self.settings.entity.clone().unwrap_or_default();
            let rec = artifacts::record(&f, &id, &self.settings.project, &entity, &md5, &dest);
            tracing::info!(run = %f.run_id, file = %f.rel_path, artifact = %rec.name, "checkpoint written to the offline run as an artifact");
            // With `_info.stream_id`, as the SDK writes artifact records.
            self.push(&id, RecordType::Artifact(rec), true);
            self.working.artifacts.insert(key);
            framed = true;
        }
        for (id, code) in reopened {
            // A follow-up directory without a version (its copy failed)
            // still needs its exit, so that the run ends as it did.
            self.write_exit(&id, code);
            framed = true;
        }
        Ok(framed)
    }

    fn state(&self) -> Vec<u8> {
        serde_json::to_vec(&self.committed).expect("offline state serialises")
    }

    /// Frames `body` as the run's next record; `info`: with
    /// `Record._info.stream_id` = run id, which the SDK sets on header,
    /// run and exit records (docs/wandb-protocol.md 6.1).
    fn push(&mut self, id: &str, body: RecordType, info: bool) {
        let run = self
            .working
            .runs
            .get_mut(id)
            .expect("run opened before records");
        let record = Record {
            num: run.next_num,
            record_type: Some(body),
            info: info.then(|| RecordInfo {
                stream_id: id.to_string(),
            }),
        };
        run.next_num += 1;
        let out = self.pending.entry(run.file.clone()).or_default();
        txlog::append_record(&mut run.len, &record.encode_to_vec(), out);
    }

    /// Starts a run directory for `id` at `row`: checkpoints its entry,
    /// then frames the file header, header record and run record.
    fn open_run(&mut self, id: &str, row: &Row, checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let mut name = format!("offline-run-{}-{id}", stamp(row.wall_time));
        let mut n = 1;
        // A run restarted in a new directory in the same second.
        while self.settings.dir.join(&name).exists() {
            n += 1;
            name = format!("offline-run-{}-{id}-{n}", stamp(row.wall_time));
        }
        let dir = self.settings.dir.join(name);
        let file = dir.join(format!("run-{id}.wandb"));
        let run = RunFile {
            dir: dir.clone(),
            file,
            len: 0,
            next_num: 1,
            start: f64::INFINITY,
            last_time: f64::NEG_INFINITY,
            finished: None,
            machine: None,
        };
        // Recovery must know the file before any byte of it exists.
        self.committed.lengths.insert(run.file.clone(), 0);
        self.working.lengths.insert(run.file.clone(), 0);
        checkpoint.save(self.state())?;
        std::fs::create_dir_all(dir.join("files"))
            .map_err(|e| self.run_err(&row.run_id, &dir, "cannot create", e))?;
        self.owners.insert(run.file.clone(), row.run_id.clone());
        let mut run = run;
        run.len = txlog::FILE_HEADER.len() as u64;
        self.pending
            .entry(run.file.clone())
            .or_default()
            .extend_from_slice(&txlog::FILE_HEADER);
        self.working.runs.insert(id.to_string(), run);
        self.push(
            id,
            RecordType::Header(records::HeaderRecord {
                version_info: Some(records::VersionInfo {
                    producer: format!("mosaic-shipper {}", env!("CARGO_PKG_VERSION")),
                    min_consumer: String::new(),
                }),
                info: None,
            }),
            true,
        );
        let secs = row.wall_time.floor();
        self.push(
            id,
            RecordType::Run(records::RunRecord {
                run_id: id.to_string(),
                entity: self.settings.entity.clone().unwrap_or_default(),
                project: self.settings.project.clone(),
                config: None,
                display_name: row.run_id.clone(),
                host: self.host.clone(),
                // The opening row's time (`wandb sync` needs one; it only
                // orders runs and times system metrics with it). `_runtime`
                // items count from the earliest metric row instead.
                start_time: Some(records::Timestamp {
                    seconds: secs as i64,
                    nanos: ((row.wall_time - secs) * 1e9) as i32,
                }),
                info: None,
            }),
            true,
        );
        // `run.define_metric("*", step_metric="global_step")`, where the
        // SDK writes it: after the run record, before any history.
        self.push(id, RecordType::Metric(step_metric::declaration()), false);
        Ok(())
    }

    /// Frames a configuration record.
    fn write_config(&mut self, id: &str, text: &str) {
        let map: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(run = %id, error = %e, "config record is not a JSON object; skipped");
                return;
            }
        };
        let update = map
            .iter()
            .map(|(k, v)| item(k, v.to_string(), false))
            .collect();
        self.push(
            id,
            RecordType::Config(records::ConfigRecord { update }),
            false,
        );
    }

    /// Frames the machine's facts as an environment record (the SDK
    /// writes one after the run record), unless the run's file has them.
    /// `start`: the run's start as known now (`+inf`: not yet).
    fn write_environment(&mut self, id: &str, text: &str, start: f64) {
        let run = &self.working.runs[id];
        if run.machine.as_deref() == Some(text) {
            return;
        }
        let Some(facts) = crate::machine::MachineFacts::from_json(text) else {
            tracing::warn!(run = %id, "machine facts in the journal are not readable; skipped");
            return;
        };
        let told = run
            .machine
            .as_deref()
            .and_then(crate::machine::MachineFacts::from_json);
        if told.is_some_and(|t| t.same_as(&facts)) {
            return;
        }
        // The worker's start (init mode) wins if earlier.
        let start = run.start.min(start);
        let record = super::overview::environment_record(&facts, start);
        self.push(id, RecordType::Environment(record), false);
        self.working.runs.get_mut(id).expect("opened").machine = Some(text.to_string());
    }

    /// Frames the records that end run `id` as the SDK's `finish()` does:
    /// the final runtime summary, then the exit record.
    fn write_exit(&mut self, id: &str, code: i32) {
        let run = &self.working.runs[id];
        let runtime = runtime(run.start, run.last_time);
        // Whole seconds in both, as core's `updateRunTiming` writes them.
        let secs = whole_seconds(runtime);
        self.push(
            id,
            RecordType::Summary(records::SummaryRecord {
                update: vec![
                    item("_wandb", format!("{{\"runtime\":{secs}}}"), false),
                    item("_runtime", secs.to_string(), false),
                ],
                remove: Vec::new(),
            }),
            false,
        );
        self.push(
            id,
            RecordType::Exit(records::RunExitRecord {
                exit_code: code,
                runtime: secs.min(i32::MAX as i64) as i32,
                info: None,
            }),
            true,
        );
        self.working.runs.get_mut(id).expect("opened").finished = Some(code);
    }

    fn take(&mut self, row: &Row, checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let id = wandb_run_id(&row.run_id);
        if self.working.worker_tracked.contains_key(&row.run_id) {
            return Ok(());
        }
        if !self.working.runs.contains_key(&id) {
            // Configuration and facts wait for the run's first metric row,
            // console line or end; by then a worker that tracks W&B
            // itself has its own run directory.
            match &row.event {
                Some(RunEvent::Config(text)) => {
                    let w = self.working.waiting.entry(id).or_default();
                    w.configs.push(text.clone());
                    return Ok(());
                }
                Some(RunEvent::Machine(text)) => {
                    self.working.waiting.entry(id).or_default().machine = Some(text.clone());
                    return Ok(());
                }
                _ => {
                    if let Some(own) = self.settings.tracking.own_run(&row.run_id) {
                        super::worker_tracks::log_skipped(&row.run_id, &own, "wandb-offline");
                        self.working.waiting.remove(&id);
                        self.working
                            .worker_tracked
                            .insert(row.run_id.clone(), own.display().to_string());
                        return Ok(());
                    }
                }
            }
        }
        self.delivered.insert(id.clone());
        let finish = matches!(row.event, Some(RunEvent::Finished(_)));
        // Console lines, system samples and machine facts of an ended run
        // (printed or sampled after its run-finished record, told again
        // after a restart) do not start a new directory: the run's file
        // is closed.
        let aside = matches!(
            row.event,
            Some(RunEvent::Console { .. } | RunEvent::System | RunEvent::Machine(_))
        );
        let reopen = match self.working.runs.get(&id) {
            None => true,
            // A repeated run-finished record: the exit record is written.
            Some(r) if r.finished.is_some() && (finish || aside) => return Ok(()),
            Some(r) if r.finished.is_some() => {
                tracing::warn!(run = %id, "rows for a finished run; they go to a new offline run directory");
                true
            }
            Some(_) => false,
        };
        if reopen {
            self.open_run(&id, row, checkpoint)?;
            if let Some(w) = self.working.waiting.remove(&id) {
                if let Some(m) = &w.machine {
                    // The opening metric row starts the run.
                    let start = match row.event {
                        None if row.wall_time.is_finite() => row.wall_time,
                        _ => f64::INFINITY,
                    };
                    self.write_environment(&id, m, start);
                }
                for text in &w.configs {
                    self.write_config(&id, text);
                }
            }
        }
        if let Some(r) = self.working.runs.get(&id) {
            if !self.owners.contains_key(&r.file) {
                self.owners.insert(r.file.clone(), row.run_id.clone());
            }
        }
        match &row.event {
            Some(RunEvent::Config(text)) => self.write_config(&id, text),
            Some(RunEvent::Finished(code)) => self.write_exit(&id, *code),
            Some(RunEvent::Console { stderr, line }) => {
                let record = super::overview::output_record(&id, *stderr, line, row.wall_time);
                self.push(&id, RecordType::OutputRaw(record), false);
                // And `files/output.log`, as the SDK keeps it offline for
                // `wandb sync` to upload; framed and committed like the
                // log (its length in `lengths`, cut back on recovery).
                let path = self.working.runs[&id]
                    .dir
                    .join("files")
                    .join(super::overview::OUTPUT_FILE);
                super::overview::push_output_file_line(
                    line,
                    self.pending.entry(path.clone()).or_default(),
                );
                self.owners
                    .entry(path)
                    .or_insert_with(|| row.run_id.clone());
            }
            Some(RunEvent::Machine(text)) => {
                let start = self.working.runs[&id].start;
                self.write_environment(&id, text, start);
            }
            Some(RunEvent::System) => {
                // A stats record, as the SDK's monitor writes it.
                let run = self.working.runs.get_mut(&id).expect("opened");
                let raw = crate::sink::wandb::system::stats_record(run.next_num, row);
                run.next_num += 1;
                let out = self.pending.entry(run.file.clone()).or_default();
                txlog::append_record(&mut run.len, &raw, out);
            }
            None => {
                let run = self.working.runs.get_mut(&id).expect("opened");
                // Only metric rows time the run: a row older than every
                // one before moves the start back (its `_runtime` is 0;
                // records written before are not rewritten).
                if row.wall_time.is_finite() {
                    run.start = run.start.min(row.wall_time);
                    run.last_time = run.last_time.max(row.wall_time);
                }
                let runtime = runtime(run.start, row.wall_time);
                let next = self.working.steps.entry(id.clone()).or_insert(0);
                let line_step = *next;
                *next += 1;
                let mut items: Vec<(&str, String)> = row
                    .values
                    .iter()
                    .filter(|(k, _)| {
                        !matches!(
                            k.as_str(),
                            "_step" | "_runtime" | "_timestamp" | step_metric::STEP_KEY
                        )
                    })
                    .map(|(k, v)| (k.as_str(), number_json(*v)))
                    .collect();
                items.push((step_metric::STEP_KEY, row.step.to_string()));
                items.push(("_timestamp", number_json(row.wall_time)));
                items.push(("_runtime", number_json(runtime)));
                items.push(("_step", line_step.to_string()));
                // The SDK writes the derived summary update, then history.
                let update = items
                    .iter()
                    .map(|(k, v)| item(k, v.clone(), false))
                    .collect();
                self.push(
                    &id,
                    RecordType::Summary(records::SummaryRecord {
                        update,
                        remove: Vec::new(),
                    }),
                    false,
                );
                let item = items.into_iter().map(|(k, v)| item(k, v, true)).collect();
                self.push(
                    &id,
                    RecordType::History(records::HistoryRecord {
                        item,
                        step: Some(records::HistoryStep { num: line_step }),
                    }),
                    false,
                );
            }
        }
        Ok(())
    }
}

impl Sink for WandbOfflineSink {
    fn name(&self) -> &'static str {
        "wandb-offline"
    }

    fn set_aside(&mut self, runs: &HashSet<String>) {
        self.set_aside = runs.iter().map(|r| wandb_run_id(r)).collect();
    }

    /// Writes exit records for runs whose worker exited (init mode's exit
    /// code, through the handle). Runs only with everything acknowledged,
    /// so the exit records are appended at committed lengths and committed
    /// with the unchanged cursor. A run without rows for a while gets no
    /// exit record: it is not known to have ended, and rows arriving later
    /// continue its file. Unlike online, an exit record cannot be
    /// replaced: the first end the worker reported stays (a later exit
    /// code of a run whose run-finished record was written is ignored).
    async fn tick(&mut self) -> Result<Option<Vec<u8>>, SinkError> {
        if self.log_artifacts().await? {
            return Ok(Some(self.flush().await?));
        }
        self.finish_inbox
            .gather(&mut self.finishing, wandb_run_id, self.delivered.iter());
        let mut due = Vec::new();
        for (id, run) in &self.working.runs {
            if run.finished.is_some() {
                self.finishing.remove(id);
                continue;
            }
            if self.set_aside.contains(id) {
                continue;
            }
            if let Some(&code) = self.finishing.get(id) {
                due.push((id.clone(), code));
            }
        }
        if due.is_empty() {
            return Ok(None);
        }
        for (id, code) in due {
            tracing::info!(run = %id, exit_code = code, state = super::ending::shown(code), reason = "the worker exited", "writing the offline run's exit record");
            self.write_exit(&id, code);
            self.finishing.remove(&id);
        }
        Ok(Some(self.flush().await?))
    }

    async fn recover(&mut self, state: &[u8]) -> Result<(), SinkError> {
        self.pending.clear();
        let mut committed: State = if state.is_empty() {
            State::default()
        } else {
            serde_json::from_slice(state).map_err(|e| {
                SinkError::Io(format!("wandb-offline sink: damaged saved state: {e}"))
            })?
        };
        let mut broken = Vec::new();
        let mut empty = Vec::new();
        for (path, &len) in &committed.lengths {
            let file = match OpenOptions::new().write(true).open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if len > 0 {
                        broken.push(path.clone());
                    } else {
                        // Killed between creating the directory and the
                        // file: clean up so the name is reused.
                        empty.push(path.clone());
                    }
                    continue;
                }
                Err(e) => {
                    let root = Some(self.settings.dir.as_path());
                    crate::sink::fs_refusal::let_pass("wandb-offline", root, path, "open", e)?;
                    continue;
                }
            };
            if len == 0 {
                // Created, but nothing of it was committed: remove it, so
                // the replayed rows recreate the same directory name.
                drop(file);
                empty.push(path.clone());
                continue;
            }
            let on_disk = file
                .metadata()
                .map_err(|e| io_err(path, "cannot stat", e))?
                .len();
            if on_disk > len {
                tracing::info!(file = %path.display(), from = on_disk, to = len, "cutting uncommitted records (written before a crash)");
                file.set_len(len)
                    .map_err(|e| io_err(path, "cannot truncate", e))?;
                file.sync_all()
                    .map_err(|e| io_err(path, "cannot sync", e))?;
            } else if on_disk < len {
                broken.push(path.clone());
            }
        }
        for path in empty {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&path, "cannot remove", e));
                }
                _ => {}
            }
            if let Some(dir) = path.parent() {
                // Only if nothing else is in it; failure to remove is harmless.
                let _ = std::fs::remove_dir(dir.join("files"));
                let _ = std::fs::remove_dir(dir);
            }
            committed.lengths.remove(&path);
        }
        for path in broken {
            tracing::warn!(file = %path.display(), "offline run file is missing or shorter than committed (edited?); its run's next rows go to a new directory");
            committed.lengths.remove(&path);
            committed.runs.retain(|_, r| r.file != path);
        }
        self.committed = committed.clone();
        self.working = committed;
        Ok(())
    }

    async fn write(&mut self, entries: &[Entry], checkpoint: &Checkpoint) -> Result<(), SinkError> {
        for entry in entries {
            self.take(&entry.row, checkpoint)?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<Vec<u8>, SinkError> {
        for (path, bytes) in std::mem::take(&mut self.pending) {
            let committed_len = self.committed.lengths.get(&path).copied().unwrap_or(0);
            let run = self.owners.get(&path).cloned().unwrap_or_default();
            let err = |what: &str, e| self.run_err(&run, &path, what, e);
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| err("cannot open", e))?;
            // A failed earlier attempt may have left a partial tail.
            file.set_len(committed_len)
                .map_err(|e| err("cannot truncate", e))?;
            file.seek(SeekFrom::Start(committed_len))
                .map_err(|e| io_err(&path, "cannot seek", e))?;
            file.write_all(&bytes).map_err(|e| err("cannot write", e))?;
            file.sync_data()
                .map_err(|e| io_err(&path, "cannot sync", e))?;
            if committed_len == 0 {
                // A new file: make its directory entry durable too.
                if let Some(dir) = path.parent() {
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| io_err(dir, "cannot sync", e))?;
                }
            }
            let len = committed_len + bytes.len() as u64;
            self.committed.lengths.insert(path.clone(), len);
            self.working.lengths.insert(path, len);
        }
        self.committed.runs = self.working.runs.clone();
        self.committed.steps = self.working.steps.clone();
        self.committed.waiting = self.working.waiting.clone();
        self.committed.worker_tracked = self.working.worker_tracked.clone();
        self.committed.artifacts = self.working.artifacts.clone();
        Ok(self.state())
    }
}

// Floats saved as Rust's shortest round-trip text: a replay after recovery
// must rebuild byte-identical `_runtime` values.
mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
