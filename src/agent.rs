//! Wiring: journal, ingest thread and sink tasks, with explicit shutdown.
//!
//! Data flows one way: files -> [`Ingest`] -> [`Journal`] -> sinks. The
//! agent owns the handles that stop each stage, in that order, so that
//! nothing is read that will not be committed and nothing is committed
//! that a sink will not see next time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, ConfigError};
use crate::extract::Extractor;
use crate::ingest::{Ingest, IngestControl, Readers};
use crate::journal::Journal;
use crate::metrics::Probe;
use crate::sink::tensorboard::TensorBoardSink;
use crate::sink::wandb::{FinishHandle, WandbSink}; // wandb sink (issue 4)
use crate::sink::{self, jsonl::JsonlSink, Mode, RunOptions, SinkError, SinkHealth};
use crate::source::Tailer;

/// Opens the store the configuration names, for the sinks it enables.
fn open_journal(config: &Config) -> Result<Journal, crate::journal::JournalError> {
    Journal::open_with_cache(
        &config.store.path,
        &config.enabled_sinks(),
        config.store.cache_bytes,
    )
}

/// What init mode knows when it starts the pipeline.
pub struct InitStart {
    /// The worker it started: its command and start go to W&B's Overview.
    pub worker: crate::machine::WorkerFacts,
    /// The store, if its opening has begun already.
    pub opening: Option<StoreOpening>,
    /// CMD has exited and been reaped already (`run -- true`): the
    /// pipeline only has a final read to do, which needs no file-system
    /// events ([`crate::source::follow::watch::Watcher::without_events`]).
    pub cmd_exited: bool,
}

/// The store, being opened on a thread of its own.
///
/// Init mode starts it as soon as the configuration is known and goes on
/// to start CMD meanwhile: opening sled (its recovery reads and rewrites
/// the tail of its log, its first open starts its I/O threads) is the
/// largest fixed cost of a start, and it would otherwise come after CMD's
/// start, lengthening every `run -- CMD` by its whole duration.
pub struct StoreOpening(std::thread::JoinHandle<Result<Journal, crate::journal::JournalError>>);

impl StoreOpening {
    /// Starts opening the store of `config`. Signals stay blocked on the
    /// new thread, as on every thread of init mode (it inherits the mask).
    pub fn start(config: &Config) -> std::io::Result<StoreOpening> {
        let config = config.clone();
        std::thread::Builder::new()
            .name("store-open".into())
            .spawn(move || open_journal(&config))
            .map(StoreOpening)
    }

    /// The opened store, or why it could not be opened.
    fn wait(self) -> anyhow::Result<Journal> {
        match self.0.join() {
            Ok(opened) => Ok(opened?),
            Err(_) => anyhow::bail!("the thread opening the store panicked"),
        }
    }
}

/// Loads the configuration the CLI asked for (see [`Config::load`]) and
/// has every room check its own section beyond the schema: the extraction
/// rules compile, the sources' regexes do, W&B's settings resolve.
pub fn load_config(explicit: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let config = Config::load(explicit)?;
    check(&config)?;
    Ok(config)
}

/// The rooms' checks of a parsed configuration (see [`load_config`]).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    Extractor::new(&config.extract).map_err(|e| config.invalid(e))?;
    Readers::new(&config.sources()).map_err(|e| config.invalid(e))?;
    let a = &config.artifacts;
    crate::source::artifacts::ArtifactSource::new(
        &a.runs_dir,
        &a.paths,
        Duration::from_millis(a.settle_ms),
    )
    .map_err(|e| config.invalid(e))?;
    sink::enabled::check(config)
}

/// Starts the task that records checkpoint versions in the journal as
/// they complete, without uploading them (W&B staged or offline).
fn spawn_recorder(
    sinks: &mut JoinSet<(&'static str, Result<(), SinkError>)>,
    config: &Config,
    wandb: &crate::sink::wandb::WandbSettings,
    journal: &Arc<Journal>,
    mode: &watch::Receiver<Mode>,
) -> anyhow::Result<()> {
    let shipper = crate::sink::wandb::artifact::ArtifactShipper::new(
        &config.artifacts,
        wandb.clone(),
        journal.clone(),
        false,
        Some(Box::new(
            crate::source::artifacts::Recorder::new(&config.artifacts)
                .map_err(anyhow::Error::msg)?,
        )),
    )
    .context("cannot start the checkpoint recorder")?;
    let m = mode.clone();
    sinks.spawn(async move {
        let r = shipper
            .run(m)
            .await
            .map_err(|e| sink::SinkError::Io(e.to_string()));
        ("wandb-artifacts", r)
    });
    Ok(())
}

/// How often a running agent refreshes `<store>/status.json`.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);

/// How often a running agent checks that its store is still there.
const PRESENCE_EVERY: Duration = Duration::from_secs(2);

/// How often a running agent brings the store's marker up to date (when
/// rows or cursors moved): each costs a flush of sled and a small file
/// written and synced, and a marker that lags only weakens the check of
/// the writes since.
const MARKER_EVERY: Duration = Duration::from_secs(10);

/// How long past a drain's deadline a sink may take to finish the flush it
/// is in before it is aborted. Aborting is safe (a sink's cursor and state
/// move in one journal write, and recovery cuts its destination back to
/// them); the grace only spares redoing a nearly finished flush.
pub const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// How long a stopping daemon (and an interrupted `run --once`) delivers
/// what is journaled, counted from the stop signal. Under docker's 10 s
/// stop timeout with the hard bound's margin
/// ([`crate::signals::watchdog::MARGIN`]).
pub const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The sinks were given until the deadline, the journal is flushed.
    Drained,
    /// A second stop signal (its number) cut the wait short.
    Aborted(i32),
}

/// A running pipeline.
pub struct Agent {
    config: Config,
    journal: Arc<Journal>,
    ingest: IngestControl,
    /// The ingest thread until it has been joined.
    ingest_done: Option<tokio::task::JoinHandle<()>>,
    sinks: JoinSet<(&'static str, Result<(), SinkError>)>,
    mode: watch::Sender<Mode>,
    background: JoinSet<()>,
    /// Init mode: CMD's exit code once it has exited, set by [`Agent::finish`]
    /// before the final drain. This is where the W&B sink learns that its
    /// run finished and with which code (wandb's `exit_code`): it takes
    /// `run_exit.subscribe()` when spawned in [`Agent::start`], and once it
    /// has delivered everything up to the drain it marks the run finished.
    /// `None` for the daemon and `--once`, where no run ends with the agent.
    run_exit: watch::Sender<Option<i32>>,
    /// The last row committed before this process started: rows after it
    /// are the ones this process read (init mode's staged exit code).
    first_seq: u64,
    /// wandb sink (issue 4): where "run X finished with code N" goes.
    wandb_finish: Option<FinishHandle>,
    /// What the status snapshots (and `/metrics`) read.
    probe: Probe,
    /// The system metrics sampler (W&B's System tab), while it runs.
    system: Option<crate::sysmetrics::Monitor>,
    /// Daemon mode's watch of the workers' processes; stops with the agent.
    _watcher: Option<crate::sysmetrics::liveness::Watcher>,
}

impl Agent {
    /// Opens the journal and starts reading and delivering. With `once`,
    /// the ingest stops by itself when the files are read to their end.
    pub fn start(config: Config, once: bool) -> anyhow::Result<Agent> {
        Agent::start_with(config, once, None)
    }

    /// [`Agent::start`] for init mode, with what it knows (see [`InitStart`]).
    pub fn start_with(
        config: Config,
        once: bool,
        init: Option<InitStart>,
    ) -> anyhow::Result<Agent> {
        let (worker, opening, cmd_exited) = match init {
            Some(i) => (Some(i.worker), i.opening, i.cmd_exited),
            None => (None, None, false),
        };
        let enabled = config.enabled_sinks();
        let worker_known = worker.as_ref().map(|_| ());
        let journal = Arc::new(match opening {
            Some(o) => o.wait()?,
            None => open_journal(&config)?,
        });
        // `set-aside retry` / `drop` made while no agent ran.
        crate::journal::requests::serve(&journal, &config.store.path);
        let metrics = if config.metrics.enabled {
            Some(crate::metrics::bind(&config.metrics)?)
        } else {
            None
        };
        let first_seq = journal.last_seq()?;
        let states = journal.files()?;
        let sources = config.sources();
        let tailer = Tailer::new(&config.tail, &sources, states);
        let extractor = Extractor::new(&config.extract).map_err(anyhow::Error::msg)?;
        let mut ingest = Ingest::new(
            tailer,
            extractor,
            Readers::new(&sources).map_err(anyhow::Error::msg)?,
            journal.clone(),
            Duration::from_millis(config.tail.poll_interval_ms),
            config.store.max_bytes,
            // Both read what is there and stop: nothing to wait for.
            !once && !cmd_exited,
        );
        ingest.rescan_interval = Duration::from_millis(config.tail.rescan_interval_ms);
        // Console lines and machine facts are for W&B (its Logs and
        // Overview tabs) alone: journaled only when a W&B sink is on.
        if enabled.iter().any(|s| s.starts_with("wandb")) {
            ingest.console =
                crate::extract::console::ConsoleFiles::new(&sources).map_err(anyhow::Error::msg)?;
            let smi = &config.system_metrics.nvidia_smi;
            let smi = if smi.is_empty() {
                crate::sysmetrics::gpu::find_on_path()
            } else {
                Some(std::path::PathBuf::from(smi))
            };
            ingest.machine = crate::machine::MachineFacts::local(worker, smi.as_deref()).to_json();
        }
        let control = ingest.control();
        let unreadable = ingest.unreadable.clone();
        let ingest_done = tokio::task::spawn_blocking(move || ingest.run(once));

        let (mode, mode_rx) = watch::channel(Mode::Run);
        let (run_exit, _) = watch::channel(None);
        let options = RunOptions {
            give_up_after: once.then_some(5),
            ..RunOptions::default()
        };
        // Each runner's health, shared with the snapshot and /metrics.
        let mut runners: Vec<(&'static str, Arc<SinkHealth>)> = Vec::new();
        // No sink delivers a row sooner than its flush interval, so the
        // journal need not be made durable more often than the shortest.
        let mut shortest_flush: Option<Duration> = None;
        let mut options_for = |name: &'static str, o: RunOptions| {
            let health = Arc::new(SinkHealth::default());
            runners.push((name, health.clone()));
            shortest_flush =
                Some(shortest_flush.map_or(o.flush_interval, |s| s.min(o.flush_interval)));
            RunOptions { health, ..o }
        };
        let mut sinks = JoinSet::new();
        if config.sinks.jsonl.enabled {
            let sink = JsonlSink::new(&config.sinks.jsonl.path);
            let o = options_for(
                "jsonl",
                RunOptions {
                    flush_interval: Duration::from_millis(config.sinks.jsonl.flush_interval_ms),
                    ..options.clone()
                },
            );
            let (j, m) = (journal.clone(), mode_rx.clone());
            sinks.spawn(async move { ("jsonl", sink::run(sink, j, o, m).await) });
        }
        if config.sinks.tensorboard.enabled {
            let tb = &config.sinks.tensorboard;
            let sink = TensorBoardSink::new(&tb.dir, tb.max_open_files);
            let o = options_for(
                "tensorboard",
                RunOptions {
                    flush_interval: Duration::from_millis(tb.flush_interval_ms),
                    ..options.clone()
                },
            );
            let (j, m) = (journal.clone(), mode_rx.clone());
            sinks.spawn(async move { ("tensorboard", sink::run(sink, j, o, m).await) });
        }
        // --- wandb sink (issue 4) ---
        let mut wandb_finish = None;
        let mut wandb = config.wandb();
        if once {
            // `--once` gives up after 5 failed attempts; keep each attempt
            // short so an unreachable W&B fails it in minutes, not in half
            // an hour (rows stay journaled either way).
            wandb.http.give_up_after = wandb.http.give_up_after.min(Duration::from_secs(30));
        }
        if wandb.is_on() {
            let o = options_for(
                "wandb",
                RunOptions {
                    batch_rows: wandb.rows_per_request,
                    flush_interval: wandb.flush_interval,
                    tick_interval: Some(Duration::from_secs(1)),
                    ..options.clone()
                },
            );
            if config.artifacts.enabled {
                // Checkpoints as W&B model artifacts, beside the rows.
                let shipper = crate::sink::wandb::artifact::ArtifactShipper::new(
                    &config.artifacts,
                    wandb.clone(),
                    journal.clone(),
                    true,
                    Some(Box::new(
                        crate::source::artifacts::Recorder::new(&config.artifacts)
                            .map_err(anyhow::Error::msg)?,
                    )),
                )
                .context("cannot start the W&B artifact uploader")?;
                let m = mode_rx.clone();
                sinks.spawn(async move {
                    let r = shipper
                        .run(m)
                        .await
                        .map_err(|e| sink::SinkError::Io(e.to_string()));
                    ("wandb-artifacts", r)
                });
            }
            let (sink, finish) = WandbSink::new(wandb).context("cannot start the W&B sink")?;
            let sink = sink.keeping_output_files(
                config
                    .store
                    .path
                    .join(crate::sink::wandb::output_file::STORE_DIR),
            );
            wandb_finish = Some(finish);
            let (j, m) = (journal.clone(), mode_rx.clone());
            sinks.spawn(async move { ("wandb", sink::run(sink, j, o, m).await) });
        } else if wandb.is_offline() {
            // wandb offline sink (issue 5)
            let (sink, finish) = crate::sink::wandb::offline::WandbOfflineSink::new(
                crate::sink::wandb::offline::OfflineSettings {
                    dir: wandb.offline_dir.clone(),
                    project: wandb.project.clone(),
                    entity: wandb.entity.clone(),
                    tracking: wandb.tracking.clone(),
                },
            );
            let sink = if config.artifacts.enabled {
                spawn_recorder(&mut sinks, &config, &wandb, &journal, &mode_rx)?;
                sink.with_artifacts(crate::sink::wandb::offline::artifacts::ArtifactFeed {
                    journal: journal.clone(),
                    cfg: config.artifacts.clone(),
                })
            } else {
                sink
            };
            wandb_finish = Some(finish);
            let o = options_for(
                "wandb-offline",
                RunOptions {
                    tick_interval: Some(Duration::from_secs(1)),
                    ..options.clone()
                },
            );
            let (j, m) = (journal.clone(), mode_rx.clone());
            sinks.spawn(async move { ("wandb-offline", sink::run(sink, j, o, m).await) });
        } else if wandb.is_staged() {
            if config.artifacts.enabled {
                // Checkpoints are recorded as they complete; `sync` uploads them.
                spawn_recorder(&mut sinks, &config, &wandb, &journal, &mode_rx)?;
            }
            tracing::info!(
                "W&B rows are staged in the journal; upload them with `mosaic-shipper sync` (or carry them with `export`)"
            );
        } else if let crate::sink::wandb::settings::Activity::Off(why) = &wandb.activity {
            tracing::info!(reason = %why, "W&B sink is off");
        }
        // --- end wandb sink ---
        if let Some(interval) = shortest_flush {
            journal.set_flush_interval(interval);
        }

        let mut background = JoinSet::new();
        // Sinks freeing journal space wake a paused ingest at once.
        let mut acked = journal.subscribe_acked();
        let wake = control.clone();
        background.spawn(async move {
            while acked.changed().await.is_ok() {
                wake.wake();
            }
        });
        let probe = Probe {
            journal: journal.clone(),
            config: config.clone(),
            unreadable,
            runners,
            started_at: crate::util::now_secs(),
        };
        if let Some(listener) = metrics {
            background.spawn(crate::metrics::serve(listener, probe.clone()));
        }
        background.spawn(snapshots(probe.clone()));
        background.spawn(guard_store(journal.clone()));
        background.spawn(serve_requests(journal.clone(), config.store.path.clone()));
        tracing::info!(
            store = %config.store.path.display(),
            sinks = ?enabled,
            sources = ?config.tail.sources,
            "mosaic-shipper started"
        );
        // The daemon samples the workers it can find when told to
        // (`[system_metrics] enabled = true`); init mode replaces this with
        // CMD's tree (`Agent::watch_worker`).
        let system = (!once)
            .then(|| {
                crate::sysmetrics::start(
                    &config,
                    journal.clone(),
                    crate::sysmetrics::Workers::Daemon,
                )
            })
            .flatten();
        // Daemon mode: a run whose worker process is gone without a
        // run-finished record ends failed (init mode knows CMD's status).
        let watcher =
            (!once && worker_known.is_none() && enabled.iter().any(|s| s.starts_with("wandb")))
                .then(|| crate::sysmetrics::liveness::start(&config, journal.clone()))
                .flatten();
        Ok(Agent {
            _watcher: watcher,
            system,
            first_seq,
            config,
            journal,
            ingest: control,
            ingest_done: Some(ingest_done),
            sinks,
            mode,
            background,
            run_exit,
            wandb_finish,
            probe,
        })
    }

    /// wandb sink (issue 4): run `run_id` finished with `exit_code` (init
    /// mode calls this when the worker exits). Once the run's rows are
    /// delivered, the W&B sink sends `complete` with that code. A no-op
    /// when the W&B sink is off.
    pub fn run_finished(&self, run_id: &str, exit_code: i32) {
        if let Some(f) = &self.wandb_finish {
            f.run_finished(run_id, exit_code);
        }
    }

    /// Init mode: samples CMD's process tree (pid `pid`) for W&B's System
    /// tab, for the runs named in `run_ids` and those whose files its
    /// processes hold (see `sysmetrics::discover`).
    pub fn watch_worker(&mut self, pid: u32, run_ids: Vec<String>) {
        self.system = None;
        self.system = crate::sysmetrics::start(
            &self.config,
            self.journal.clone(),
            crate::sysmetrics::Workers::Init { pid, run_ids },
        );
    }

    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// What status reports are made from (the daemon's SIGUSR1).
    pub fn probe(&self) -> Probe {
        self.probe.clone()
    }

    /// Resolves when the store has failed (sled's I/O errors, a full disk,
    /// damage, the store deleted), with the error in words. Retrying
    /// cannot help: the caller stops the agent ([`Agent::stop_on_failure`]).
    pub fn store_failed(&self) -> impl Future<Output = String> + Send + 'static {
        self.journal.failed()
    }

    /// Stops after the store failed: logs `error` once, with the store's
    /// path, stops reading, lets the sinks deliver what they can for a
    /// moment, and returns `error` (the process exits non-zero, and a
    /// supervisor such as systemd's `Restart=on-failure` starts it again).
    /// Nothing is lost: what was not acknowledged ships after the restart.
    pub async fn stop_on_failure(mut self, error: String) -> anyhow::Error {
        tracing::error!(store = %self.config.store.path.display(), "{error}; stopping");
        self.ingest.stop();
        // After a write error a sled call may never return (a flush
        // waiting for a write sled will not make): nothing here waits on
        // the store unbounded.
        if !matches!(
            self.join_ingest(Instant::now() + STORE_FAILED_WAIT).await,
            Ok(true)
        ) {
            tracing::warn!("the ingest thread is stuck in the store; not waiting for it");
        }
        let until = Instant::now() + STORE_FAILED_DRAIN;
        match tokio::time::timeout(STORE_FAILED_WAIT + DRAIN_GRACE, self.drain_sinks(until)).await {
            Ok(failed) if !failed.is_empty() => {
                tracing::debug!("draining after the store failed: {}", failed.join("; "))
            }
            Err(_) => tracing::warn!("the sinks are stuck in the store; not waiting for them"),
            Ok(_) => {}
        }
        anyhow::anyhow!(error)
    }

    /// Waits for the ingest thread to return, but not past `until`.
    /// Returns whether it did: a commit in progress is not waited for past
    /// the deadline (it lands whole or not at all).
    async fn join_ingest(&mut self, until: Instant) -> anyhow::Result<bool> {
        let Some(handle) = self.ingest_done.as_mut() else {
            return Ok(true);
        };
        match tokio::time::timeout_at(until.into(), handle).await {
            Ok(joined) => {
                self.ingest_done = None;
                joined.context("the ingest thread panicked")?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }

    /// Stops reading, delivers what is journaled until `until`, commits.
    ///
    /// Every step is bounded by `until` (the ingest thread's commit in
    /// progress, the sinks, which get [`DRAIN_GRACE`] more to finish a
    /// flush); `abort` (a second stop signal, resolving with its number)
    /// cuts it short: see [`Agent::abort`].
    pub async fn shutdown(
        mut self,
        until: Instant,
        abort: impl Future<Output = i32>,
    ) -> anyhow::Result<Stopped> {
        tokio::pin!(abort);
        self.ingest.stop();
        let joined = tokio::select! {
            joined = self.join_ingest(until) => Ok(joined?),
            sig = &mut abort => Err(sig),
        };
        match joined {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the stop deadline passed while a commit of the logs was in progress; not waiting for it (it lands whole or not at all)"
            ),
            Err(sig) => return self.abort(sig).await,
        }
        let failed = tokio::select! {
            failed = self.drain_sinks(until) => Ok(failed),
            sig = &mut abort => Err(sig),
        };
        let failed = match failed {
            Ok(failed) => failed,
            Err(sig) => return self.abort(sig).await,
        };
        self.close().await?;
        anyhow::ensure!(failed.is_empty(), "sinks failed: {}", failed.join("; "));
        tracing::info!("mosaic-shipper stopped; everything read is committed");
        Ok(Stopped::Drained)
    }

    /// A second stop signal: stop now. Reading stops after the commit in
    /// progress (waited for briefly), the sinks are stopped where they are
    /// (a sink's cursor moves with its output, so nothing is delivered
    /// twice), the journal is flushed. Everything committed and not yet
    /// delivered ships on the next start with this store.
    async fn abort(mut self, sig: i32) -> anyhow::Result<Stopped> {
        tracing::warn!(
            signal = %crate::signals::SigName(sig),
            "second stop signal: stopping at once; the rows not delivered yet stay in the journal and ship on the next start"
        );
        self.ingest.stop();
        let _ = self
            .join_ingest(Instant::now() + Duration::from_millis(500))
            .await;
        self.sinks.shutdown().await;
        self.background.shutdown().await;
        self.journal.flush()?;
        Ok(Stopped::Aborted(sig))
    }

    /// `run --once`: read everything, deliver everything, then return.
    ///
    /// It returns early, with a [`OnceStopped`] error, in two cases: the
    /// journal is full (`store.max_bytes`) while a sink that holds the
    /// oldest rows cannot take them in this process (W&B rows are staged,
    /// or a sink gave up after repeated failures): reading stops, what is
    /// read is delivered to the other sinks and kept; or `interrupt`
    /// resolves (a stop signal, and when it came): reading stops after the
    /// commit in progress and the sinks drain as the daemon's do on a
    /// signal, bounded by [`STOP_DEADLINE`] from the signal; `abort` (a
    /// second one) stops at once.
    pub async fn run_once(
        mut self,
        interrupt: impl Future<Output = (i32, Instant)>,
        abort: impl Future<Output = i32>,
    ) -> anyhow::Result<()> {
        tokio::pin!(interrupt);
        tokio::pin!(abort);
        // No deadline: `once` waits for every sink (each gives up after
        // repeated failures, which is reported as an error).
        let mut until = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut stopped: Option<OnceStopped> = None;
        let mut check = tokio::time::interval(Duration::from_millis(250));
        let failed = self.store_failed();
        tokio::pin!(failed);
        let mut store_failed = None;
        loop {
            tokio::select! {
                error = &mut failed => {
                    store_failed = Some(error);
                    break;
                }
                joined = self.join_ingest(until) => {
                    if !joined? {
                        tracing::warn!("the stop deadline passed while a commit of the logs was in progress; not waiting for it (it lands whole or not at all)");
                    }
                    break;
                }
                (signal, at) = &mut interrupt, if stopped.is_none() => {
                    tracing::info!(signal = %crate::signals::SigName(signal), deadline_secs = STOP_DEADLINE.as_secs(), "interrupted: committing and delivering what is read (a second SIGTERM/SIGINT stops at once)");
                    self.ingest.stop();
                    stopped = Some(OnceStopped::Interrupted { signal });
                    until = at + STOP_DEADLINE;
                }
                _ = check.tick(), if stopped.is_none() => {
                    if let Some(sink) = self.cannot_drain() {
                        tracing::error!(sink = %sink, cap = self.config.store.max_bytes, "the journal is full (store.max_bytes) and this sink cannot take its rows now; stopping (what was read is kept)");
                        self.ingest.stop();
                        stopped = Some(OnceStopped::Full { sink });
                    }
                }
            }
        }
        if let Some(error) = store_failed {
            return Err(self.stop_on_failure(error).await);
        }
        let last = self.journal.last_seq()?;
        let (journal, config) = (self.journal.clone(), self.config.clone());
        if matches!(stopped, Some(OnceStopped::Full { .. })) {
            until = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        }
        let failed = tokio::select! {
            failed = self.drain_sinks(until) => Ok(failed),
            sig = &mut abort => Err(sig),
        };
        let failed = match failed {
            Ok(failed) => failed,
            Err(signal) => {
                self.abort(signal).await?;
                return Err(OnceStopped::Interrupted { signal }.into());
            }
        };
        if let Some(error) = journal.failure() {
            // The store failed while draining: the error is what matters.
            tracing::error!(store = %config.store.path.display(), "{error}; stopping");
            return Err(anyhow::anyhow!(error));
        }
        let closed = self.close().await;
        let drained = closed.and_then(|()| {
            anyhow::ensure!(failed.is_empty(), "sinks failed: {}", failed.join("; "));
            Ok(())
        });
        if let Some(stopped) = stopped {
            if let Err(e) = drained {
                tracing::error!("{e:#}");
            }
            return Err(stopped.into());
        }
        drained?;
        let acked = delivered_up_to(&journal, &config)?;
        anyhow::ensure!(
            acked >= last,
            "not every row was delivered (acknowledged up to #{acked} of #{last}); they stay in the journal for the next run"
        );
        Ok(())
    }

    /// With reading paused at the journal's cap: a sink whose rows keep
    /// it full and that will not take them in this process.
    fn cannot_drain(&self) -> Option<String> {
        if !self.ingest.at_cap() {
            return None;
        }
        if self.config.wandb().is_staged() {
            return Some("wandb (staged for `sync`)".into());
        }
        self.probe
            .runners
            .iter()
            .find(|(_, health)| !health.report().running)
            .map(|(name, _)| format!("{name} (gave up after repeated failures)"))
    }

    /// Init mode, when CMD has exited: reads every file to its current end,
    /// then delivers until every sink has acknowledged everything or
    /// `until` passes (for reading and delivering together; init mode
    /// counts it from CMD's exit). `exit_code` is recorded for the sinks
    /// first (see `run_exit`).
    ///
    /// When `abort` resolves (a second SIGTERM/SIGINT), it stops waiting at
    /// once (see [`Agent::abort`]). Nothing committed is lost; it ships on
    /// the next start with this store.
    ///
    /// Returns whether every row read was acknowledged by every sink.
    pub async fn finish(
        mut self,
        until: Instant,
        exit_code: Option<i32>,
        abort: impl Future<Output = i32>,
    ) -> anyhow::Result<bool> {
        if let Some(code) = exit_code {
            self.run_exit.send_replace(Some(code));
            if let Some(f) = &self.wandb_finish {
                f.all_runs_finished(code);
            }
            tracing::info!(exit_code = code, "the run finished; recorded for the sinks");
        }
        tokio::pin!(abort);
        self.ingest.finish();
        let read = tokio::select! {
            read = self.join_ingest(until) => Ok(read?),
            sig = &mut abort => Err(sig),
        };
        let mut complete = true;
        match read {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("drain deadline passed while still reading the logs; stopping");
                complete = false;
                self.ingest.stop();
                // The commit in progress lands whole or not at all: a
                // short wait, not a long one.
                let _ = self
                    .join_ingest(Instant::now() + Duration::from_millis(500))
                    .await?;
            }
            Err(sig) => {
                self.abort(sig).await?;
                return Ok(false);
            }
        }
        if let (Some(code), true) = (exit_code, self.config.wandb().is_staged()) {
            self.stage_exit(code)?;
        }
        let last = self.journal.last_seq()?;
        let failed = tokio::select! {
            failed = self.drain_sinks(until) => Ok(failed),
            sig = &mut abort => Err(sig),
        };
        let failed = match failed {
            Ok(failed) => failed,
            Err(sig) => {
                self.abort(sig).await?;
                return Ok(false);
            }
        };
        self.close().await?;
        anyhow::ensure!(failed.is_empty(), "sinks failed: {}", failed.join("; "));
        let acked = delivered_up_to(&self.journal, &self.config)?;
        Ok(complete && acked >= last)
    }

    /// Init mode with W&B staged: no sink is there to learn the worker's
    /// exit code, so it is journaled as a run-finished event for every run
    /// this process read rows for (unless the worker logged its own), and
    /// `sync` (here, or after `export`/`import`) completes the W&B runs
    /// with it, as the online sink would have.
    fn stage_exit(&self, code: i32) -> anyhow::Result<()> {
        use crate::row::{Row, RunEvent};
        // Per run: whether its last row of this process was a finish.
        let mut runs: std::collections::BTreeMap<String, bool> = Default::default();
        let mut at = self.first_seq;
        loop {
            let batch = self.journal.read_after(at, 10_000)?;
            let Some(last) = batch.last() else { break };
            at = last.seq;
            for e in &batch {
                let finished = match e.row.event {
                    // Console lines and machine facts do not reopen a run.
                    Some(RunEvent::Console { .. } | RunEvent::Machine(_)) => None,
                    Some(RunEvent::Finished(_)) => Some(true),
                    _ => Some(false),
                };
                match runs.get_mut(e.row.run_id.as_str()) {
                    Some(was) => *was = finished.unwrap_or(*was),
                    None => {
                        runs.insert(e.row.run_id.clone(), finished.unwrap_or(false));
                    }
                }
            }
        }
        let events: Vec<Row> = runs
            .into_iter()
            .filter(|(_, finished)| !finished)
            .map(|(run_id, _)| Row {
                run_id,
                step: 0,
                wall_time: crate::util::now_secs(),
                values: Default::default(),
                event: Some(RunEvent::Finished(code)),
                origin: Default::default(),
            })
            .collect();
        if !events.is_empty() {
            self.journal.commit_events(&events)?;
            tracing::info!(
                runs = events.len(),
                exit_code = code,
                "the worker's exit code is staged for W&B with its runs"
            );
        }
        Ok(())
    }

    /// Tells the sinks to deliver what is journaled and stop, and waits for
    /// them, but not past `until` + [`DRAIN_GRACE`]: a sink still behind, in
    /// a retry backoff or in a hung request is aborted then, so that a
    /// deadline is a deadline. Returns the sinks' failures.
    async fn drain_sinks(&mut self, until: Instant) -> Vec<String> {
        let _ = self.mode.send(Mode::Drain { until });
        let mut failed = Vec::new();
        let hard_stop = tokio::time::sleep_until((until + DRAIN_GRACE).into());
        tokio::pin!(hard_stop);
        loop {
            tokio::select! {
                res = self.sinks.join_next() => match res {
                    None => break,
                    Some(Ok((_, Ok(())))) => {}
                    Some(Ok((name, Err(e)))) => failed.push(format!("{name}: {e}")),
                    Some(Err(e)) => failed.push(format!("a sink task panicked: {e}")),
                },
                _ = &mut hard_stop => {
                    tracing::warn!(sinks = self.sinks.len(), "sinks still delivering at the drain deadline; stopping them");
                    self.sinks.shutdown().await;
                    break;
                }
            }
        }
        failed
    }

    /// Stops the background tasks, flushes the journal and writes a last
    /// status snapshot, warning about rows still to deliver.
    async fn close(&mut self) -> anyhow::Result<()> {
        self.background.shutdown().await;
        self.journal.flush()?;
        self.journal.record_progress()?;
        if let Ok(status) = self.probe.status() {
            let _ = status.write_snapshot(&self.config.store.path);
            let delivering = self.config.delivering_sinks();
            for s in status.sinks.iter().filter(|s| s.enabled && s.pending > 0) {
                if delivering.contains(&s.name.as_str()) {
                    tracing::warn!(sink = %s.name, pending = s.pending, "stopped with rows still to deliver; they ship next time");
                } else {
                    tracing::info!(sink = %s.name, pending = s.pending, "rows staged in the journal (for `sync` or `export`)");
                }
            }
        }
        Ok(())
    }
}

/// Why `run --once` returned before reading everything; each has its own
/// exit status (see the README's "Exit status").
#[derive(Debug, thiserror::Error)]
pub enum OnceStopped {
    #[error(
        "stopped at the journal's cap (store.max_bytes): {sink} cannot take the oldest rows; \
         what was read is kept for the next run or `sync`"
    )]
    Full { sink: String },
    #[error("interrupted by signal {signal}: what was read is committed and ships next time")]
    Interrupted { signal: i32 },
}

impl OnceStopped {
    /// The process exit status: 3 at the cap, 128 + the signal's number.
    pub fn exit_code(&self) -> u8 {
        match self {
            OnceStopped::Full { .. } => 3,
            OnceStopped::Interrupted { signal } => (128 + signal).clamp(0, 255) as u8,
        }
    }
}

/// The last row every sink the agent runs has acknowledged (a staged
/// `wandb` cursor holds rows but never delivers: not waited for).
fn delivered_up_to(journal: &Journal, config: &Config) -> anyhow::Result<u64> {
    let mut upto = journal.last_seq()?;
    for name in config.delivering_sinks() {
        upto = upto.min(journal.cursor(name)?.seq);
    }
    Ok(upto)
}

/// How long the sinks may deliver after the store failed: nothing more can
/// be acknowledged then (the journal refuses every operation once it has
/// failed), so they only get [`DRAIN_GRACE`] to stop. What they wrote
/// without an acknowledgement is cut back by their recovery at the restart.
const STORE_FAILED_DRAIN: Duration = Duration::ZERO;

/// How long stopping after the store failed waits for each stage.
const STORE_FAILED_WAIT: Duration = Duration::from_secs(2);

/// Watches the store under a running agent: every [`PRESENCE_EVERY`] that
/// its files are still there ([`Journal::check_presence`]), every
/// [`MARKER_EVERY`] that its marker is up to date
/// ([`Journal::record_progress`]). A failure is recorded by the journal as
/// fatal, which stops the agent ([`Agent::store_failed`]).
/// Carries out `set-aside retry` / `drop` requests made while the agent
/// runs (journal/requests.rs).
async fn serve_requests(journal: Arc<Journal>, store: std::path::PathBuf) {
    let mut every = tokio::time::interval(crate::journal::requests::POLL);
    loop {
        every.tick().await;
        let (j, s) = (journal.clone(), store.clone());
        let _ = tokio::task::spawn_blocking(move || crate::journal::requests::serve(&j, &s)).await;
    }
}

async fn guard_store(journal: Arc<Journal>) {
    let mut last_marker = Instant::now();
    loop {
        tokio::time::sleep(PRESENCE_EVERY).await;
        let j = journal.clone();
        let due = last_marker.elapsed() >= MARKER_EVERY;
        let checked = tokio::task::spawn_blocking(move || {
            j.check_presence()?;
            if due {
                j.record_progress()?;
            }
            Ok::<(), crate::journal::JournalError>(())
        })
        .await;
        if due {
            last_marker = Instant::now();
        }
        match checked {
            Ok(Ok(())) => {}
            // Recorded as fatal by the journal: the agent is stopping.
            Ok(Err(_)) => return,
            Err(e) => tracing::error!(error = %e, "the store check panicked"),
        }
    }
}

/// Keeps `<store>/status.json` current without paying for it at rest.
///
/// A report lists every followed file, so it costs in proportion to the
/// files known (about a megabyte per thousand runs): it is made again only
/// when something it shows moved (rows, counters, cursors, unreadable
/// files, the sinks' health), and at least every [`SNAPSHOT_AT_LEAST_EVERY`];
/// while things keep moving, no more often than every [`SNAPSHOT_EVERY`] nor
/// than [`SNAPSHOT_COST_SHARE`] times what the last one took, so that
/// reporting stays a small share of the agent's work at any size.
async fn snapshots(probe: Probe) {
    let mut last: Option<(String, Instant)> = None;
    let mut wait = SNAPSHOT_EVERY;
    loop {
        let signature = change_signature(&probe);
        let due = match &last {
            None => true,
            Some((seen, at)) => *seen != signature || at.elapsed() >= SNAPSHOT_AT_LEAST_EVERY,
        };
        if due {
            let started = Instant::now();
            match probe.status() {
                Ok(status) => {
                    if let Err(e) = status.write_snapshot(&probe.config.store.path) {
                        tracing::debug!(error = %e, "cannot write status snapshot");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot collect status"),
            }
            wait = SNAPSHOT_EVERY.max(started.elapsed() * SNAPSHOT_COST_SHARE);
            last = Some((signature, Instant::now()));
        }
        tokio::time::sleep(wait).await;
    }
}

/// How long a snapshot may stand when nothing it shows moved (`status`
/// prints its age; at 10,000 runs rewriting it costs a few hundred ms).
const SNAPSHOT_AT_LEAST_EVERY: Duration = Duration::from_secs(300);

/// A snapshot is made at most once per this many times its own cost.
const SNAPSHOT_COST_SHARE: u32 = 200;

/// What a status report shows that can move, read cheaply (a few journal
/// keys, no file checkpoint): equal signatures, equal reports but the time.
fn change_signature(probe: &Probe) -> String {
    let journal = &probe.journal;
    let cursors: Vec<(String, u64)> = journal
        .cursors()
        .map(|c| c.into_iter().map(|(n, c)| (n, c.seq)).collect())
        .unwrap_or_default();
    // Not `last_progress_at`: an idle sink that ticks (W&B) renews it
    // every second without anything to show.
    let runners: Vec<_> = probe
        .runners
        .iter()
        .map(|(n, h)| {
            let r = h.report();
            (*n, r.running, r.retries, r.consecutive_failures)
        })
        .collect();
    let unreadable = probe
        .unreadable
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    format!(
        "{:?}",
        (
            journal.last_seq().ok(),
            journal.stored_bytes().ok(),
            journal.counters().ok(),
            cursors,
            runners,
            unreadable,
            journal.artifact_writes(),
            // Retried rows delivered and runs dropped move no cursor.
            journal
                .set_aside_runs(None)
                .map(|rs| rs.iter().map(|r| (r.rows, r.retry)).collect::<Vec<_>>())
                .ok(),
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EMBEDDED_DEFAULT;

    #[test]
    fn a_rooms_check_names_the_rule_or_source_at_fault() {
        let text = EMBEDDED_DEFAULT.replace("runs/(?P<run_id>[^/]+)/", "runs/(");
        let config = Config::parse(&text, "t.toml").expect("the schema is fine");
        let err = check(&config).unwrap_err().to_string();
        assert!(
            err.contains("mosaic-metrics") && err.contains("t.toml"),
            "{err}"
        );
        let text = EMBEDDED_DEFAULT.replace(
            "paths = [\"var/trainer/configs/config-*.json\"]",
            "paths = [\"var/trainer/configs/config-*.json\"]\nrun_id_from_path = \"configs/(x)\"",
        );
        let config = Config::parse(&text, "t.toml").unwrap();
        let err = check(&config).unwrap_err().to_string();
        assert!(
            err.contains("run-configs") && err.contains("run_id"),
            "{err}"
        );
        check(&Config::parse(EMBEDDED_DEFAULT, "t.toml").unwrap()).unwrap();
    }

    #[test]
    fn readiness_window_must_outlast_every_flush_interval() {
        let with = |stale: u64| {
            let text = EMBEDDED_DEFAULT
                .replace(
                    "stale_after_secs = 300",
                    &format!("stale_after_secs = {stale}"),
                )
                .replace(
                    "enabled = false\n# host:port (an IP address).",
                    "enabled = true\n# host:port (an IP address).",
                );
            assert!(
                text.contains("enabled = true\n# host:port"),
                "template changed"
            );
            Config::parse(&text, "t.toml").expect("the schema is fine")
        };
        // jsonl and tensorboard flush every 5 s by default.
        let err = check(&with(5)).unwrap_err().to_string();
        assert!(
            err.contains("metrics.stale_after_secs (5 s)")
                && err.contains("sinks.jsonl.flush_interval_ms (5000 ms)"),
            "{err}"
        );
        // Longer than W&B's 15 s too, should a key in the environment
        // turn that sink on.
        check(&with(20)).unwrap();
        // Off, the endpoint's window is not checked.
        let off = EMBEDDED_DEFAULT.replace("stale_after_secs = 300", "stale_after_secs = 1");
        check(&Config::parse(&off, "t.toml").unwrap()).unwrap();
    }
}
