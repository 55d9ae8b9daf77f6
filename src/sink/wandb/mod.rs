//! The `wandb` sink: rows to a W&B server the way W&B's own SDK sends them.
//!
//! A run is created (or resumed) with GraphQL `UpsertBucket`; rows go out as
//! `wandb-history.jsonl` lines over file_stream with the latest values as
//! `wandb-summary.json`; a finished run gets `complete` with its exit code.
//!
//! A run's state on W&B ([`ending`]): `complete` goes out only when the
//! worker ended, with the code it ended with: a run-finished record (the
//! lifecycle `run_completed` / `run_failed` / `run_cancelled`) or, in init
//! mode, the worker's exit status (a kill by signal N is 128 + N). Exit
//! code 0 shows the run finished, any other failed. Until then the run is
//! open and gets a heartbeat every 30 s, as the SDK sends, also after an
//! agent restart (the saved state lists the open runs; each is announced
//! again and heartbeats resume without new rows). An open run without rows
//! for `idle_finish_secs` is not ended: its heartbeats stop, so the server
//! shows it crashed, which is all the agent knows; rows arriving later
//! announce it again and continue its history at the next offset.
//!
//! Steps and time ([`step_metric`], [`state::RunState::take_row`]): every
//! row is its own history line, `_step` counts the run's lines in delivery
//! order, the worker's step travels as `global_step`, declared the x-axis
//! of every metric in the run's config; `_runtime` counts from the
//! earliest wall time of the run's metric rows.
//!
//! Exactly once, on top of the sink contract (`sink` module docs):
//! every history line gets its file_stream offset when the sink takes the
//! row, counting on from the offset committed with the cursor. A crash or
//! a failed session replays the rows after the cursor from that committed
//! offset, so they get the same offsets again, and W&B stores history
//! lines by offset: the replay rewrites the lines instead of appending
//! duplicates. [`WandbSink::flush`] returns only after the server
//! acknowledged every line written, so the cursor never runs ahead of it.

pub mod artifact;
pub mod auth;
pub mod client;
pub mod ending;
pub mod filestream;
pub mod gql_errors;
pub mod graphql;
pub mod http;
pub mod offline; // wandb offline sink (issue 5)
pub mod output_file;
pub mod overview;
pub mod proxy;
pub mod redact;
pub mod settings;
pub mod state;
pub mod step_metric;
pub mod system;
pub mod worker_tracks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use tokio::sync::mpsc;

use super::{Checkpoint, Sink, SinkError};
use crate::row::{Entry, RunEvent};
use client::{Client, RunRef};
use filestream::Update;
use graphql::UpsertInput;
use http::WandbError;
pub use settings::{resolve, WandbSettings};
use state::{RunState, State};

/// Asks the sink to finish a run with an exit code (init mode: the worker
/// exited; a run-finished record). Cloneable; dropping it is harmless.
#[derive(Debug, Clone)]
pub struct FinishHandle(mpsc::UnboundedSender<(Option<String>, i32)>);

impl FinishHandle {
    /// Run `run_id` (the MOSAIC id) finished with `exit_code`: once its
    /// rows are delivered, the sink sends `complete` with that code.
    pub fn run_finished(&self, run_id: &str, exit_code: i32) {
        let _ = self.0.send((Some(run_id.to_string()), exit_code));
    }

    /// Init mode: the worker exited with `exit_code`, so every run this
    /// process has delivered rows to (now or until it stops) finished.
    pub fn all_runs_finished(&self, exit_code: i32) {
        let _ = self.0.send((None, exit_code));
    }
}

/// The receiving end of [`FinishHandle`]s, shared by the online and the
/// offline sink, which finish runs on the same requests.
#[derive(Debug)]
pub(crate) struct FinishInbox {
    rx: mpsc::UnboundedReceiver<(Option<String>, i32)>,
    /// Init mode's exit code for every run this process delivers to.
    all: Option<i32>,
}

/// A connected handle and inbox.
pub(crate) fn finish_channel() -> (FinishHandle, FinishInbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    (FinishHandle(tx), FinishInbox { rx, all: None })
}

impl FinishInbox {
    /// Moves the requests that arrived into `finishing`, keyed by
    /// `key(MOSAIC run id)`, and once init mode's exit code is known gives
    /// it to every run in `active` that has no code yet (also runs that
    /// become active later: this is called on every tick).
    pub(crate) fn gather<'a>(
        &mut self,
        finishing: &mut BTreeMap<String, i32>,
        key: impl Fn(&str) -> String,
        active: impl IntoIterator<Item = &'a String>,
    ) {
        while let Ok((run, code)) = self.rx.try_recv() {
            match run {
                Some(run) => {
                    finishing.insert(key(&run), code);
                }
                None => self.all = Some(code),
            }
        }
        if let Some(code) = self.all {
            for id in active {
                finishing.entry(id.clone()).or_insert(code);
            }
        }
    }
}

/// The W&B run id for a MOSAIC run id: the mapping every sink shares
/// ([`crate::sink::runname`]), in its W&B flavour (a ULID in lower case,
/// any other id kept when W&B can take it, else made safe with a hash of
/// the original). Stable, so a restarted agent resumes the same run.
pub fn wandb_run_id(mosaic: &str) -> String {
    crate::sink::runname::wandb_id(mosaic)
}

fn run_ref(run: &RunState) -> RunRef<'_> {
    RunRef {
        entity: &run.entity,
        project: &run.project,
        name: &run.name,
        display: &run.display,
    }
}

/// Lines taken but not yet acknowledged, for one run.
#[derive(Debug, Default)]
struct Pending {
    first_offset: u64,
    lines: Vec<String>,
    /// `output.log` lines (console rows) and the first one's offset.
    console_offset: u64,
    console: Vec<String>,
    /// The same lines as the `output.log` file holds them, and the byte
    /// of the run's copy they start at (`output_file`).
    output_at: u64,
    output: Vec<u8>,
}

/// See the module documentation.
pub struct WandbSink {
    settings: WandbSettings,
    client: Client,
    /// Run states as of the last commit (what recovery returns to).
    committed: State,
    /// Run states including rows written since.
    working: State,
    pending: BTreeMap<String, Pending>,
    /// System samples not yet sent, per run (`wandb-events.jsonl`).
    pending_events: BTreeMap<String, Pending>,
    /// Runs this process delivered rows or records to: init mode's exit
    /// code is theirs.
    delivered: HashSet<String>,
    /// Runs upserted by this process: like the SDK on resume, a restarted
    /// agent announces each run once before streaming to it again. A run
    /// that went idle leaves the set, so its next rows announce it again.
    upserted: HashSet<String>,
    /// Open runs whose heartbeats stopped because they went idle (logged
    /// once per idle spell).
    idle: HashSet<String>,
    /// Last file_stream request per run, for the heartbeat.
    last_sent: HashMap<String, Instant>,
    finish_inbox: FinishInbox,
    /// Finish requests waiting for their run's rows to be acknowledged.
    finishing: BTreeMap<String, i32>,
    /// Runs whose state a config or run-finished record changed since the
    /// last flush (flush commits them even without history lines).
    evented: HashSet<String>,
    /// Runs W&B refused, whose rows are set aside (told by the runner):
    /// no heartbeat or finish goes out for them until they are retried.
    set_aside: HashSet<String>,
    /// Where each run's `output.log` file is kept for its end; `None`:
    /// not kept (the lines are still streamed).
    output_files: Option<output_file::OutputFiles>,
    /// Copies of runs whose end was sent: removed once that is committed
    /// (at the next tick; a restart removes those of ended runs).
    output_done: Vec<String>,
}

fn sink_err(e: WandbError) -> SinkError {
    SinkError::Io(e.to_string())
}

/// Whether a final HTTP status for a request about one run refuses that
/// run, rather than everything: 401, 403 and 407 are about the key, the
/// project or the proxy, which every run shares, so they stay errors the
/// runner retries (as 408, 409, 429 and 5xx are retried by the client).
fn refuses_run(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 401 | 403 | 407 | 408 | 409 | 429)
}

/// The error of a request about MOSAIC run `run`: a 4xx that refuses the
/// run, or GraphQL errors about it alone (`gql_errors`), becomes [`SinkError::Refused`] (its rows are set aside and other
/// runs go on), anything else an error the runner retries.
fn run_err(run: &str) -> impl Fn(WandbError) -> SinkError + '_ {
    move |e| match &e {
        WandbError::Rejected { status, .. } if refuses_run(*status) => SinkError::Refused {
            run: run.to_string(),
            reason: e.to_string(),
        },
        WandbError::GraphQlRun { .. } => SinkError::Refused {
            run: run.to_string(),
            reason: e.to_string(),
        },
        _ => sink_err(e),
    }
}

impl WandbSink {
    /// Builds the client. Fails if the settings are not usable (no key,
    /// bad proxy URL, unreadable `ca_file`).
    pub fn new(settings: WandbSettings) -> Result<(WandbSink, FinishHandle), WandbError> {
        let client = Client::new(&settings)?;
        let (handle, inbox) = finish_channel();
        tracing::info!(
            base_url = %proxy::mask_url(&settings.base_url),
            project = %settings.project,
            proxy = %settings.http.proxy,
            key = %settings.key_source, // where from, never the key
            "W&B sink ready"
        );
        Ok((
            WandbSink {
                settings,
                client,
                committed: State::default(),
                working: State::default(),
                pending: BTreeMap::new(),
                pending_events: BTreeMap::new(),
                delivered: HashSet::new(),
                upserted: HashSet::new(),
                idle: HashSet::new(),
                last_sent: HashMap::new(),
                finish_inbox: inbox,
                evented: HashSet::new(),
                finishing: BTreeMap::new(),
                set_aside: HashSet::new(),
                output_files: None,
                output_done: Vec::new(),
            },
            handle,
        ))
    }

    /// Keeps each run's `output.log` file in `dir` (the agent: under its
    /// store) and uploads it at the run's end, as the SDK does.
    pub fn keeping_output_files(mut self, dir: std::path::PathBuf) -> WandbSink {
        self.output_files = Some(output_file::OutputFiles::new(dir));
        self
    }

    /// Writes the `output.log` bytes of `p` to `run`'s copy.
    fn write_output(&self, run: &RunState, p: &Pending) -> Result<(), SinkError> {
        let Some(files) = &self.output_files else {
            return Ok(());
        };
        if p.output.is_empty() {
            return Ok(());
        }
        match files.write(&run.name, p.output_at, &p.output) {
            Ok(output_file::Written::Done) => Ok(()),
            Ok(output_file::Written::Short { on_disk }) => {
                tracing::warn!(run = %run.display, file = %files.path(&run.name).display(), on_disk, expected = p.output_at, "the run's output.log copy is shorter than its lines (removed or cut by hand?): not kept, not uploaded at the end; the Logs tab has every line");
                Ok(())
            }
            Err(e) => Err(SinkError::Io(format!(
                "wandb sink: cannot write {}: {e}",
                files.path(&run.name).display()
            ))),
        }
    }

    fn run_config(run: Option<&RunState>) -> serde_json::Value {
        // Every run declares the worker's step its metrics' x-axis.
        let mut config = client::wandb_config(
            run.and_then(|r| r.config.as_ref()),
            &step_metric::agent_config_entries(),
        );
        // The producing machine, as the SDK's `_wandb.e`.
        if let Some((facts, start)) = run.and_then(|r| Some((r.machine.as_ref()?, r.start))) {
            overview::add_environment(&mut config, facts, start);
        }
        config
    }

    /// Creates or resumes the W&B run of `mosaic_run`.
    async fn open_run(&mut self, mosaic_run: &str) -> Result<(), SinkError> {
        let name = wandb_run_id(mosaic_run);
        let known = self.working.runs.get(mosaic_run).cloned();
        let waiting = self.working.waiting.get(mosaic_run).cloned();
        let config = match (&known, &waiting) {
            (None, Some(w)) => {
                // A new run: what waited for it is its config and facts.
                let mut provisional = RunState::new(&graphql::Bucket::default(), mosaic_run);
                provisional.config = w.config.clone();
                if let Some(f) = w.machine.clone() {
                    provisional.take_machine(f);
                }
                Self::run_config(Some(&provisional))
            }
            _ => Self::run_config(known.as_ref()),
        };
        // The machine that produced the rows (staged elsewhere, carried
        // in a bundle), else this one.
        let facts = known
            .as_ref()
            .and_then(|r| r.machine.clone())
            .or_else(|| waiting.as_ref().and_then(|w| w.machine.clone()));
        let host = facts
            .as_ref()
            .and_then(|f| f.host.clone())
            .or_else(crate::util::hostname);
        let program = facts
            .as_ref()
            .and_then(|f| f.worker.as_ref())
            .map(|w| w.program.clone());
        let entity = self
            .client
            .entity(self.settings.entity.as_deref())
            .await
            .map_err(sink_err)?;
        let input = UpsertInput {
            id: known
                .as_ref()
                .map(|r| r.storage_id.as_str())
                .filter(|s| !s.is_empty()),
            name: &name,
            project: &self.settings.project,
            entity: entity.as_deref(),
            display_name: Some(mosaic_run),
            config: Some(&config),
            host: host.as_deref(),
            program: program.as_deref(),
        };
        let bucket = self
            .client
            .upsert(&input)
            .await
            .map_err(run_err(mosaic_run))?;
        let run = match known {
            // Known from the saved state (a restart, or reopened after a
            // finish): continue where the committed lines end. The server's
            // historyLineCount may be larger (lines sent but not committed
            // before a crash): those are rewritten by offset.
            Some(mut r) => {
                r.finished = None;
                // Rows after a run-finished record reopen the run.
                r.finish_requested = None;
                r.storage_id = bucket.id.clone();
                r
            }
            None => {
                if bucket.history_line_count > 0 {
                    tracing::info!(
                        run = mosaic_run,
                        lines = bucket.history_line_count,
                        "W&B run exists; appending after its history"
                    );
                }
                let mut run = RunState::new(&bucket, mosaic_run);
                run.active_at = crate::util::now_secs();
                if let Some(w) = self.working.waiting.remove(mosaic_run) {
                    run.config = w.config;
                    if let Some(f) = w.machine {
                        run.take_machine(f);
                    }
                }
                run
            }
        };
        tracing::info!(run = mosaic_run, wandb_run = %run.name, entity = %run.entity, project = %run.project, offset = run.next_offset, "W&B run opened");
        // Recovery must know where the run lives and where its lines start
        // before any line is sent.
        self.committed
            .runs
            .entry(mosaic_run.to_string())
            .or_insert_with(|| run.clone());
        self.working.runs.insert(mosaic_run.to_string(), run);
        self.upserted.insert(mosaic_run.to_string());
        Ok(())
    }

    /// Uploads `wandb-summary.json` and `config.yaml` as the SDK does at
    /// finish; returns their names for the final request's `uploaded` list.
    async fn upload_run_files(&mut self, run: &RunState) -> Result<Vec<String>, SinkError> {
        let mut files = client::finish_files(&run.summary(), &Self::run_config(Some(run)));
        if let Some(facts) = &run.machine {
            files.insert(
                0,
                (
                    overview::METADATA_FILE.to_string(),
                    overview::metadata_file(facts, run.start),
                ),
            );
        }
        if let Some(out) = &self.output_files {
            if run.console_bytes > 0 {
                match out.read(&run.name, run.console_bytes) {
                    Some(bytes) => files.push((overview::OUTPUT_FILE.to_string(), bytes)),
                    None => {
                        tracing::warn!(run = %run.display, file = %out.path(&run.name).display(), "the run's output.log copy is missing or short: not uploaded; the Logs tab has every line")
                    }
                }
            }
        }
        self.client
            .upload_files(run_ref(run), &files)
            .await
            .map_err(run_err(&run.display))
    }

    async fn send(&mut self, run: &RunState, update: &Update) -> Result<(), SinkError> {
        self.client
            .send(run_ref(run), update)
            .await
            .map_err(run_err(&run.display))?;
        self.last_sent.insert(run.display.clone(), Instant::now());
        Ok(())
    }

    /// Sends `complete` for runs whose worker ended (a run-finished record,
    /// init mode's exit code); only called when everything written is
    /// acknowledged. Idle runs are not ended here ([`Self::heartbeat`]).
    async fn finish_due(&mut self) -> Result<bool, SinkError> {
        self.finish_inbox
            .gather(&mut self.finishing, str::to_string, self.delivered.iter());
        let mut due: Vec<(String, i32, &'static str)> = Vec::new();
        for (id, run) in &self.committed.runs {
            if self.set_aside.contains(id) {
                continue;
            }
            // The worker's exit status, with what its records said.
            if let Some(&exit) = self.finishing.get(id) {
                let code = ending::exit_code(run.finish_requested, exit);
                if run.finished != Some(code) {
                    due.push((id.clone(), code, "the worker exited"));
                } else {
                    self.finishing.remove(id);
                }
                continue;
            }
            // The worker's run-finished record.
            if let Some(code) = run.finish_requested {
                if run.finished != Some(code) {
                    due.push((id.clone(), code, "a run-finished record"));
                }
            }
        }
        let changed = !due.is_empty();
        for (id, code, why) in due {
            let run = self.committed.runs[&id].clone();
            let uploaded = self.upload_run_files(&run).await?;
            let update = Update {
                history_offset: run.next_offset,
                history: Vec::new(),
                summary: Some(run.summary()),
                uploaded,
                exit_code: Some(code),
                ..Update::default()
            };
            self.send(&run, &update).await?;
            tracing::info!(run = %id, exit_code = code, state = ending::shown(code), reason = why, "W&B run marked complete");
            for s in [&mut self.committed, &mut self.working] {
                if let Some(r) = s.runs.get_mut(&id) {
                    r.finished = Some(code);
                }
            }
            self.finishing.remove(&id);
            self.output_done.push(run.name.clone());
        }
        Ok(changed)
    }

    /// Uploads `wandb-metadata.json` (the Overview tab) for runs whose
    /// facts or start changed since it last went up, once they have a
    /// start; again at finish with the rest.
    async fn upload_metadata(&mut self) -> Result<(), SinkError> {
        let due: Vec<String> = self
            .committed
            .runs
            .iter()
            .filter(|(_, r)| {
                !r.metadata_sent
                    && r.machine
                        .as_ref()
                        .is_some_and(|f| overview::started_at(f, r.start).is_some())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let run = self.committed.runs[&id].clone();
            let Some(facts) = &run.machine else { continue };
            let file = (
                overview::METADATA_FILE.to_string(),
                overview::metadata_file(facts, run.start),
            );
            self.client
                .upload_files(run_ref(&run), &[file])
                .await
                .map_err(sink_err)?;
            for s in [&mut self.committed, &mut self.working] {
                if let Some(r) = s.runs.get_mut(&id) {
                    if r.start == run.start && r.machine == run.machine {
                        r.metadata_sent = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `run` had no rows for `idle_finish_secs` at `now`.
    fn is_idle(&self, run: &RunState, now: f64) -> bool {
        let idle = self.settings.idle_finish;
        !idle.is_zero() && now - run.active_at >= idle.as_secs_f64()
    }
}

/// W&B core sends an empty file_stream request when it has sent nothing
/// for 30 s (`defaultHeartbeatInterval`), so that the server keeps the run
/// "running"; the agent does the same for runs it has not finished.
pub(crate) const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

impl WandbSink {
    /// Keeps open runs alive: an empty file_stream request when nothing
    /// was sent for [`HEARTBEAT`]. An open run this process has not
    /// announced yet (the agent restarted) is announced first, so its
    /// heartbeats resume without new rows. An idle run gets none: the
    /// server then shows it crashed, and its next rows resume it.
    async fn heartbeat(&mut self) -> Result<(), SinkError> {
        let now = Instant::now();
        let wall = crate::util::now_secs();
        let mut due: Vec<(String, bool)> = Vec::new();
        for (id, run) in &self.committed.runs {
            if !run.is_open() || self.set_aside.contains(id) {
                continue;
            }
            if self.is_idle(run, wall) {
                if self.idle.insert(id.clone()) {
                    tracing::info!(
                        run = %id,
                        idle_secs = self.settings.idle_finish.as_secs(),
                        "no rows for idle_finish_secs: heartbeats stop, W&B will show the run crashed; rows arriving later resume it"
                    );
                    // Its next rows announce it again.
                    self.upserted.remove(id);
                }
                continue;
            }
            let announce = !self.upserted.contains(id);
            if announce && !self.settings.revive_open_runs {
                continue;
            }
            let quiet = self
                .last_sent
                .get(id)
                .map_or(true, |t| now.duration_since(*t) >= self.settings.heartbeat);
            if announce || quiet {
                due.push((id.clone(), announce));
            }
        }
        for (id, announce) in due {
            if announce {
                self.open_run(&id).await?;
                tracing::info!(run = %id, "open run announced again after a restart; heartbeats resume");
            }
            let run = self.committed.runs[&id].clone();
            self.send(&run, &Update::default()).await?;
        }
        Ok(())
    }
}

impl Sink for WandbSink {
    fn name(&self) -> &'static str {
        "wandb"
    }

    async fn recover(&mut self, state: &[u8]) -> Result<(), SinkError> {
        self.pending.clear();
        self.pending_events.clear();
        self.committed = State::decode(state)?;
        // Copies of runs whose end is committed (kept by a crash before
        // they were removed).
        if let Some(out) = &self.output_files {
            for run in self.committed.runs.values() {
                let settled = run
                    .finish_requested
                    .map_or(true, |c| run.finished == Some(c));
                if run.finished.is_some() && settled {
                    out.remove(&run.name);
                }
            }
        }
        self.output_done.clear();
        // A state saved before activity was kept: one idle period from now.
        let now = crate::util::now_secs();
        for run in self.committed.runs.values_mut() {
            if run.active_at == 0.0 {
                run.active_at = now;
            }
        }
        self.working = self.committed.clone();
        Ok(())
    }

    async fn write(&mut self, entries: &[Entry], checkpoint: &Checkpoint) -> Result<(), SinkError> {
        let mut opened = false;
        let now = crate::util::now_secs();
        for entry in entries {
            let id = entry.row.run_id.as_str();
            if self.working.worker_tracked.contains_key(id) {
                continue;
            }
            if !self.working.runs.contains_key(id) {
                if let Some(RunEvent::Config(text)) = &entry.row.event {
                    // The run opens with its first metric row, console
                    // line or end, carrying this configuration.
                    let logged: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(text).unwrap_or_default();
                    self.working
                        .waiting
                        .entry(id.to_string())
                        .or_default()
                        .config
                        .get_or_insert_with(Default::default)
                        .extend(logged);
                    continue;
                }
                if !matches!(entry.row.event, Some(RunEvent::Machine(_))) {
                    if let Some(own) = self.settings.tracking.own_run(id) {
                        worker_tracks::log_skipped(id, &own, "wandb");
                        self.working.waiting.remove(id);
                        self.working
                            .worker_tracked
                            .insert(id.to_string(), own.display().to_string());
                        continue;
                    }
                }
            }
            if let Some(RunEvent::Machine(text)) = &entry.row.event {
                let Some(facts) = crate::machine::MachineFacts::from_json(text) else {
                    tracing::warn!(
                        run = id,
                        "machine facts in the journal are not readable; the run shows this machine"
                    );
                    continue;
                };
                match self.working.runs.get_mut(id) {
                    // Announced with the run when it opens.
                    None => {
                        self.working
                            .waiting
                            .entry(id.to_string())
                            .or_default()
                            .machine = Some(facts);
                    }
                    Some(run) => {
                        let open = run.finished.is_none() && self.upserted.contains(id);
                        if run.take_machine(facts) && open {
                            // New facts (another host, a new worker):
                            // UpsertBucket again with host and `_wandb.e`.
                            self.open_run(id).await?;
                            opened = true;
                        }
                        self.evented.insert(id.to_string());
                    }
                }
                continue;
            }
            if let Some(RunEvent::Finished(code)) = entry.row.event {
                let run = self.working.runs.get(id);
                if ending::keeps_requested(
                    code,
                    run.and_then(|r| r.finish_requested),
                    run.and_then(|r| r.finished),
                ) {
                    tracing::debug!(
                        run = id,
                        "worker gone after it logged its end; its own end stands"
                    );
                    continue;
                }
            }
            if matches!(
                entry.row.event,
                Some(RunEvent::Console { .. } | RunEvent::System)
            ) && self
                .working
                .runs
                .get(id)
                .is_some_and(|r| r.finished.is_some())
            {
                // Printed or sampled after the run was completed (a
                // sampler's last tick races with the worker's end): its
                // Logs and System tabs are closed with it (reopening would
                // leave it running).
                tracing::debug!(
                    run = id,
                    "console line or system sample after the run was completed; not sent"
                );
                continue;
            }
            if self.idle.remove(id) {
                // Its heartbeats had stopped: announce it again, continue
                // its history where it ended.
                self.upserted.remove(id);
                tracing::info!(run = id, "rows again for an idle run; it resumes");
            }
            // Idle but not yet noticed by a tick: the same.
            if self
                .working
                .runs
                .get(id)
                .is_some_and(|r| self.is_idle(r, now))
            {
                self.upserted.remove(id);
            }
            self.delivered.insert(id.to_string());
            let open = self.upserted.contains(id)
                && self
                    .working
                    .runs
                    .get(id)
                    .is_some_and(|r| r.finished.is_none());
            if !open {
                self.open_run(id).await?;
                opened = true;
            }
            let run = self.working.runs.get_mut(id).expect("opened above");
            run.active_at = now;
            match &entry.row.event {
                None => {}
                Some(RunEvent::Config(text)) => {
                    let logged: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(text).unwrap_or_default();
                    run.config
                        .get_or_insert_with(Default::default)
                        .extend(logged);
                    // UpsertBucket again, now carrying the configuration.
                    self.open_run(id).await?;
                    self.evented.insert(id.to_string());
                    opened = true;
                    continue;
                }
                Some(RunEvent::Finished(code)) => {
                    run.finish_requested = Some(*code);
                    self.evented.insert(id.to_string());
                    continue;
                }
                Some(RunEvent::Console { stderr, line }) => {
                    let at = run.console_bytes;
                    let (offset, text) = run.take_console(*stderr, line, entry.row.wall_time);
                    let p = self.pending.entry(id.to_string()).or_default();
                    if p.console.is_empty() {
                        p.console_offset = offset;
                        p.output_at = at;
                    }
                    p.console.push(text);
                    overview::push_output_file_line(line, &mut p.output);
                    continue;
                }
                Some(RunEvent::Machine(_)) => unreachable!("taken above"),
                Some(RunEvent::System) => {
                    let line = system::events_line(&entry.row, run.start);
                    let offset = run.events_offset;
                    run.events_offset += 1;
                    self.pending_events
                        .entry(id.to_string())
                        .or_insert_with(|| Pending {
                            first_offset: offset,
                            ..Pending::default()
                        })
                        .lines
                        .push(line);
                    self.evented.insert(id.to_string());
                    continue;
                }
            }
            let (offset, line) = run.take_row(&entry.row);
            let p = self.pending.entry(id.to_string()).or_default();
            if p.lines.is_empty() {
                p.first_offset = offset;
            }
            p.lines.push(line);
        }
        if opened {
            checkpoint.save(self.committed.encode())?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<Vec<u8>, SinkError> {
        let per_request = self.settings.rows_per_request.max(1);
        let runs: Vec<String> = self.pending.keys().cloned().collect();
        for id in runs {
            let p = self.pending.remove(&id).expect("listed above");
            let run = self.working.runs[&id].clone();
            let summary = run.summary();
            let mut offset = p.first_offset;
            for chunk in p.lines.chunks(per_request) {
                let update = Update {
                    history_offset: offset,
                    history: chunk.to_vec(),
                    summary: Some(summary.clone()),
                    ..Update::default()
                };
                self.send(&run, &update).await?;
                offset += chunk.len() as u64;
            }
            // The file copy first: committed with these lines' offsets.
            self.write_output(&run, &p)?;
            let mut offset = p.console_offset;
            for chunk in p.console.chunks(per_request) {
                let update = Update {
                    console_offset: offset,
                    console: chunk.to_vec(),
                    ..Update::default()
                };
                self.send(&run, &update).await?;
                offset += chunk.len() as u64;
            }
            self.committed.runs.insert(id, run);
        }
        // System samples: `wandb-events.jsonl`, by offset like history.
        for (id, p) in std::mem::take(&mut self.pending_events) {
            let run = self.working.runs[&id].clone();
            let mut offset = p.first_offset;
            for chunk in p.lines.chunks(per_request) {
                let update = Update {
                    streams: vec![filestream::Stream {
                        name: filestream::EVENTS_FILE,
                        offset,
                        lines: chunk.to_vec(),
                    }],
                    ..Update::default()
                };
                self.send(&run, &update).await?;
                offset += chunk.len() as u64;
            }
        }
        // Runs changed only by a config, run-finished record or sample.
        for id in std::mem::take(&mut self.evented) {
            if let Some(run) = self.working.runs.get(&id) {
                self.committed.runs.insert(id, run.clone());
            }
        }
        // What waits and what is left to workers goes with the cursor.
        self.committed.waiting = self.working.waiting.clone();
        self.committed.worker_tracked = self.working.worker_tracked.clone();
        self.upload_metadata().await?;
        Ok(self.committed.encode())
    }

    fn set_aside(&mut self, runs: &HashSet<String>) {
        self.set_aside = runs.clone();
    }

    async fn tick(&mut self) -> Result<Option<Vec<u8>>, SinkError> {
        // The ends sent at the last tick are committed by now.
        if let Some(out) = &self.output_files {
            for run in self.output_done.drain(..) {
                out.remove(&run);
            }
        }
        if self.finish_due().await? {
            return Ok(Some(self.committed.encode()));
        }
        self.heartbeat().await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_run_specific_statuses_refuse_a_run() {
        for s in [400, 404, 410, 413, 422] {
            assert!(refuses_run(s), "{s}");
        }
        for s in [200, 401, 403, 407, 408, 409, 429, 500, 503] {
            assert!(!refuses_run(s), "{s}");
        }
    }

    #[test]
    fn run_ids_are_stable_and_valid() {
        assert_eq!(
            wandb_run_id("01JD9X2K7M3N4P5Q6R7S8T9V0X"),
            "01jd9x2k7m3n4p5q6r7s8t9v0x"
        );
        let mapped = wandb_run_id("a/b:c d");
        assert!(mapped.starts_with("a_b_c_d--"), "{mapped}");
    }
}
