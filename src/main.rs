//! The `mosaic-shipper` command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mosaic_shipper::agent;
use mosaic_shipper::bundle::{self, Exported};
use mosaic_shipper::config::Config;
use mosaic_shipper::init;
use mosaic_shipper::journal::{Journal, JournalError};
use mosaic_shipper::logging;
use mosaic_shipper::signals::{self, Startup, Watchdog};
use mosaic_shipper::sink::wandb::redact;
use mosaic_shipper::status::Status;
use mosaic_shipper::sync::SyncOptions;

/// jemalloc, not glibc's malloc: rows are built on the ingest thread and
/// freed on the sinks', and glibc kept that memory in per-thread arenas
/// (peak RSS of a 1 M-row run 56-71 MiB against 43-47 with jemalloc, and
/// 10-15% less CPU; docs/performance.md, "The allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Ships training metrics from RL workers' JSON logs to TensorBoard and
/// Weights & Biases.
///
/// The agent follows the workers' log files (default:
/// var/trainer/runs/*/logs/*.log under the current directory), turns metric
/// records into rows, commits them with the file offsets to a journal
/// (default: var/shipper/), and delivers them to each enabled sink exactly
/// once. Without --config it uses an embedded default (the same as
/// config/mosaic-shipper.toml in the source tree).
#[derive(Parser)]
#[command(version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// Log level or filter (e.g. debug, or mosaic_shipper=trace). Overrides
    /// RUST_LOG and the configuration's log.level.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: follow the logs and deliver rows until SIGINT/SIGTERM.
    ///
    /// On SIGTERM, SIGINT or SIGQUIT it stops reading, delivers what it can
    /// for 5 seconds, commits, and exits 0; a second one stops at once
    /// (exit 128+N). Whatever was not delivered is kept in the journal and
    /// ships on the next start. SIGHUP reopens its log files, SIGUSR1 logs
    /// its status.
    ///
    /// With `-- CMD [ARGS...]` it is an init process (a container's
    /// ENTRYPOINT): it starts CMD in its own process group, forwards every
    /// signal tini forwards to it, reaps orphaned processes, and when CMD
    /// exits reads the logs to their end, delivers (up to
    /// init.drain_deadline_secs) and exits with CMD's exit code (128+N if
    /// it died of signal N). CMD runs even if shipping cannot start.
    Run {
        /// Configuration file (TOML). Default: $MOSAIC_SHIPPER_CONFIG, else
        /// the embedded default.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Ship what the files hold now, wait until every enabled sink has
        /// acknowledged it, then exit 0 (batch use, tests, benchmarks).
        #[arg(long)]
        once: bool,
        /// Move the store's journal aside (to <store.path>.broken-<time>)
        /// and start with a new, empty one. For a store the agent refuses
        /// (damaged, missing, deleted while running): the logs are then read
        /// again from the start, and sinks may receive rows they already
        /// have. Use it once, by hand, not in a service's command line.
        #[arg(long)]
        reset_store: bool,
        /// The command to run under the agent (init mode).
        #[arg(last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Show followed files with their committed offsets, sink cursors and
    /// pending rows, and the store's size.
    ///
    /// Works whether or not the agent is running (while it runs, from the
    /// snapshot it refreshes every 2 seconds in the store directory).
    Status {
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// One JSON object, with stable field names, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Say what the agent makes of FILE: which source reads it, and for each
    /// of its first lines or records which rule took it and what row(s) it
    /// made, or why none did.
    ///
    /// The first thing to run when a dashboard stays empty. It reads FILE
    /// the way the agent does (the same framing, rules and event-file
    /// reader, from the start of the file with nothing remembered), needs
    /// no store and changes nothing, so it works while the agent runs. A
    /// path that no source lists is said to be so, with the patterns, and
    /// read as its name suggests. Exits 0 whatever the file makes, 2 when
    /// FILE cannot be read or the configuration is not valid.
    Explain {
        /// The file: a log, a TensorBoard event file or a JSON document.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// How many lines (records) to explain from the start.
        #[arg(long, short = 'n', value_name = "N", default_value_t = mosaic_shipper::explain::DEFAULT_RECORDS)]
        lines: usize,
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// JSON lines for tools: a `file` object, one object per record
        /// (`outcome`: rows, no_match, rejected, invalid, repeated,
        /// gave_way, skipped), a `summary` object.
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration and print it as it takes effect.
    ///
    /// Exits 2 with a message naming the problem (unknown key, bad glob or
    /// regex, unusable path) when it is not valid.
    CheckConfig {
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Upload to W&B what was staged while it was out of reach.
    ///
    /// Without PATHs: the rows the journal holds for W&B (`sinks.wandb.mode
    /// = "stage"`, rows imported from another machine, or left by an
    /// outage) and every offline run directory under `sinks.wandb.offline_dir`.
    /// With PATHs: only those offline run directories (`offline-run-*`, a
    /// `run-<id>.wandb` file, or a directory holding such directories),
    /// written by this agent's wandb-offline sink or by the W&B SDK in
    /// offline mode.
    ///
    /// Uses the W&B sink's settings (key, base URL, project, entity, proxy,
    /// TLS, retries) whatever its mode. Re-running uploads nothing twice: a
    /// finished run's directory is marked synced the way `wandb sync` marks
    /// it (an empty run-<id>.wandb.synced), which both tools then skip; an
    /// unfinished one remembers how far it got. Shows a progress bar per
    /// run on a terminal, log lines otherwise. Exits 1 if anything failed.
    Sync {
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Upload directories already marked synced again.
        #[arg(long)]
        include_synced: bool,
        /// Move a refused store's journal aside and start a new one first
        /// (see `run --reset-store`).
        #[arg(long)]
        reset_store: bool,
        /// Offline runs uploaded at once (directories of one run always
        /// go one after another).
        #[arg(long, short, value_name = "N", default_value_t = mosaic_shipper::sync::DEFAULT_JOBS,
              value_parser = clap::value_parser!(u16).range(1..=64))]
        jobs: u16,
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Write the rows staged for W&B to a bundle directory, to carry them
    /// to a connected machine and `import` them there.
    ///
    /// Takes every row waiting for the `wandb` cursor (the agent holds
    /// them with sinks.wandb.mode = "stage") and writes DIR/rows.bin and
    /// DIR/manifest.json, which lists each file's size and SHA-256. DIR
    /// must not exist or be empty; the bundle appears there complete or
    /// not at all. Then the rows are handed over: they no longer count as
    /// pending for W&B here. The agent must not be running on the store.
    /// With nothing staged it says so, writes nothing and exits 0.
    Export {
        /// Configuration file (TOML); its store.path is the store. Default:
        /// $MOSAIC_SHIPPER_CONFIG, else the embedded default.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The bundle directory to create.
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Show, retry or drop the rows of runs a sink refused.
    ///
    /// When a sink cannot take one run (W&B answers 4xx for it), that run's
    /// rows are set aside for that sink: kept in the store, named in
    /// `status`, while every other run keeps flowing. Once the cause is
    /// fixed, `retry` hands them to the sink again when the agent next runs
    /// (before any newer row of theirs); `drop` deletes them. `retry` and
    /// `drop` change the store, so the agent must not be running on it.
    SetAside {
        /// Configuration file (TOML); its store.path is the store. Default:
        /// $MOSAIC_SHIPPER_CONFIG, else the embedded default.
        #[arg(long, short, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: SetAsideAction,
    },
    /// Add the rows of a bundle made by `export` to this machine's journal.
    ///
    /// The manifest, each file's size and SHA-256 and every row are checked
    /// first; a damaged bundle, one with files its manifest does not list,
    /// one already imported, or one whose predecessor from the same source
    /// has not been imported is refused and the journal is left as it was.
    /// The rows then go to every sink enabled here, like rows read from
    /// logs (to W&B with the online sink or `sync`). The agent must not be
    /// running on the store.
    Import {
        /// Configuration file (TOML); its store.path is the store. Default:
        /// $MOSAIC_SHIPPER_CONFIG, else the embedded default.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The bundle directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Import even though bundles exported before this one from the
        /// same journal were not imported; their rows can then never be.
        #[arg(long)]
        allow_gap: bool,
        /// Move a refused store's journal aside and start a new one first
        /// (see `run --reset-store`).
        #[arg(long)]
        reset_store: bool,
    },
}

#[derive(Subcommand)]
enum SetAsideAction {
    /// List the runs set aside, per sink, with the reason and rows kept.
    List {
        /// One JSON array, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Deliver the kept rows again: the next `run` (or `run --once`)
    /// hands them to the sink first. A run refused again is set aside
    /// again, with the new reason.
    Retry {
        #[command(flatten)]
        which: Which,
    },
    /// Delete the kept rows for good; the run's later rows flow again.
    Drop {
        #[command(flatten)]
        which: Which,
    },
}

/// Which set-aside runs a command means.
#[derive(clap::Args)]
struct Which {
    /// Only this run id (as `list` shows it).
    #[arg(long, value_name = "RUN")]
    run: Option<String>,
    /// Only this sink (`jsonl`, `tensorboard`, `wandb`, `wandb-offline`).
    #[arg(long, value_name = "SINK")]
    sink: Option<String>,
    /// Every run of every sink (needed when neither --run nor --sink is given).
    #[arg(long, conflicts_with_all = ["run", "sink"])]
    all: bool,
}

fn main() -> ExitCode {
    // Before anything else (see `signals`): a signal from now on waits
    // for the thread meant to take it, and none can kill the agent by
    // default in a window before that thread exists.
    let startup = match Startup::block() {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("mosaic-shipper: cannot block signals: {e}");
            None
        }
    };
    let cli = Cli::parse();
    let running = matches!(cli.command, Command::Run { .. });
    if running {
        // The agent ignores SIGPIPE: a closed stderr must not stop
        // shipping. (Init mode takes it, to forward a sent one, as tini.)
        // SAFETY: sets a disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    } else {
        // The commands that print (and --help): `status --json | head -c
        // 100` ends them quietly (141, as any Unix tool) instead of a
        // panic on EPIPE, and Ctrl-C ends them as it ends any tool.
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        if let Some(s) = startup {
            s.release();
        }
        return command(cli.command, cli.log_level.as_deref());
    }
    match cli.command {
        Command::Run {
            config,
            once,
            reset_store,
            command,
        } if !command.is_empty() => {
            if once {
                eprintln!(
                    "mosaic-shipper: --once cannot be combined with a command: `run --once` exits \
                     when the files are read, `run -- CMD` when CMD exits; use one or the other"
                );
                return ExitCode::from(2);
            }
            init::main(
                config.as_deref(),
                command,
                cli.log_level.as_deref(),
                reset_store,
            )
        }
        Command::Run {
            config,
            once,
            reset_store,
            ..
        } => daemon(
            config.as_deref(),
            once,
            reset_store,
            startup,
            cli.log_level.as_deref(),
        ),
        other => command(other, cli.log_level.as_deref()),
    }
}

/// `run` without a command: the daemon, or `--once`.
fn daemon(
    config: Option<&Path>,
    once: bool,
    reset_store: bool,
    startup: Option<Startup>,
    log_level: Option<&str>,
) -> ExitCode {
    // Job control and the ignored-by-default signals keep their usual
    // effect; the rest go to the daemon's signal thread, started now,
    // before the configuration is read or the journal opened.
    if let Some(s) = &startup {
        s.unblock(&signals::daemon::LEFT_ALONE);
    }
    let dog = Watchdog::start(|| {}).unwrap_or_else(|_| Watchdog::inert());
    let policy = signals::daemon::Policy {
        deadline: agent::STOP_DEADLINE,
        code_after_stop: if once {
            signals::daemon::code_of
        } else {
            |_| 0
        },
    };
    let signals = match signals::daemon::spawn(dog, policy) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mosaic-shipper: cannot start the signal thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match load(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log = logging::init(
        logging::filter(log_level, &config.log.level),
        &config.log_dir(),
        config.log.max_files,
        config.log.max_bytes,
    );
    if reset_store {
        if let Err(e) = reset(&config) {
            tracing::error!("{}", message(&e));
            return ExitCode::FAILURE;
        }
    }
    match mosaic_shipper::daemon::run(config, once, signals) {
        Ok(code) => ExitCode::from(code),
        // The agent's errors belong in its log files too; one line
        // on stderr either way.
        Err(e) if tracing::enabled!(tracing::Level::ERROR) => {
            tracing::error!("{}", message(&e));
            match e.downcast_ref::<agent::OnceStopped>() {
                Some(stopped) => ExitCode::from(stopped.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
        Err(e) => report(Err(e)),
    }
}

/// The commands other than `run`.
fn command(command: Command, log_level: Option<&str>) -> ExitCode {
    match command {
        Command::CheckConfig { config } => {
            let _log = logging::init_stderr(logging::filter(log_level, "warn"));
            match load(config.as_deref()) {
                Ok(c) => {
                    print!("{}", c.render());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            }
        }
        Command::Sync {
            config,
            include_synced,
            reset_store,
            jobs,
            paths,
        } => {
            use std::io::IsTerminal;
            // Info lines would tear the progress bars on a terminal.
            let default = if std::io::stderr().is_terminal() {
                "warn"
            } else {
                "info"
            };
            let _log = logging::init_stderr(logging::filter(log_level, default));
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if reset_store {
                if let Err(e) = reset(&config) {
                    return report(Err(e));
                }
            }
            let options = SyncOptions {
                paths,
                include_synced,
                jobs: usize::from(jobs),
            };
            sync(config, options)
        }
        Command::Explain {
            file,
            lines,
            config,
            json,
        } => {
            let _log = logging::init_stderr(logging::filter(log_level, "off"));
            explain(config, &file, lines, json)
        }
        Command::Status { config, json } => {
            let _log = logging::init_stderr(logging::filter(log_level, "warn"));
            match load(config.as_deref()) {
                Ok(c) => report(status(c, json)),
                Err(code) => code,
            }
        }
        // Their results and warnings are printed as such; log lines would
        // only repeat them (ask with --log-level).
        Command::Export { config, to } => {
            let _log = logging::init_stderr(logging::filter(log_level, "off"));
            match load(config.as_deref()) {
                Ok(c) => report(export(c, &to)),
                Err(code) => code,
            }
        }
        Command::SetAside { config, action } => {
            let _log = logging::init_stderr(logging::filter(log_level, "off"));
            match load(config.as_deref()) {
                Ok(c) => report(set_aside(c, action)),
                Err(code) => code,
            }
        }
        Command::Import {
            config,
            dir,
            allow_gap,
            reset_store,
        } => {
            let _log = logging::init_stderr(logging::filter(log_level, "off"));
            match load(config.as_deref()) {
                Ok(c) if reset_store => report(reset(&c).and_then(|()| import(c, &dir, allow_gap))),
                Ok(c) => report(import(c, &dir, allow_gap)),
                Err(code) => code,
            }
        }
        // `main` takes these.
        Command::Run { .. } => unreachable!("run is not one of the other commands"),
    }
}

/// The configuration, or exit code 2 after one line naming the problem
/// (the same for every command: a missing file, a bad key).
/// The configuration, checked by every room (`agent::load_config`); a
/// mistake in it is exit 2 for every command, named once.
fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    agent::load_config(path).map_err(|e| {
        eprintln!("mosaic-shipper: {e}");
        ExitCode::from(2)
    })
}

/// Prints a command's error once, as a plain line, and exits 1.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mosaic-shipper: {}", message(&e));
            match e.downcast_ref::<agent::OnceStopped>() {
                Some(stopped) => ExitCode::from(stopped.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes, each said once (errors that quote their
/// cause in their own message are not followed by it again), scrubbed of
/// secrets: a W&B failure may carry a server's words.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    redact::scrubbed(&out)
}

/// `--reset-store`: moves the store's journal aside, saying where.
fn reset(config: &Config) -> anyhow::Result<()> {
    let store = &config.store.path;
    match mosaic_shipper::journal::reset_store(store)? {
        Some(aside) => {
            let text = format!(
                "--reset-store: the old store of {} is kept in {}; starting with a new store \
                 (the logs are read again from the start, sinks may receive rows they already have)",
                store.display(),
                aside.display()
            );
            tracing::warn!("{text}");
            if !tracing::enabled!(tracing::Level::WARN) {
                eprintln!("mosaic-shipper: {text}");
            }
        }
        None => tracing::info!(store = %store.display(), "--reset-store: there is no store yet"),
    }
    Ok(())
}

fn sync(config: Config, options: SyncOptions) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return report(Err(anyhow::anyhow!("cannot start the async runtime: {e}"))),
    };
    let result = match runtime.block_on(mosaic_shipper::sync::sync(&config, &options)) {
        Ok(r) => r,
        Err(e) => return report(Err(e)),
    };
    for line in &result.lines {
        eprintln!("{}", redact::scrub(line));
    }
    for line in &result.failures {
        eprintln!("FAILED: {}", redact::scrub(line));
    }
    if result.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("mosaic-shipper: sync: {} failed", result.failures.len());
        ExitCode::FAILURE
    }
}

fn explain(config: Option<PathBuf>, file: &Path, lines: usize, json: bool) -> ExitCode {
    let config = match load(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match mosaic_shipper::explain::explain(&config, file, lines) {
        Ok(report) => {
            use mosaic_shipper::explain::render;
            if json {
                print!("{}", render::json_lines(&report));
            } else {
                print!("{}", render::text(&report));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mosaic-shipper: explain: {e}");
            ExitCode::from(2)
        }
    }
}

fn status(config: Config, json: bool) -> anyhow::Result<()> {
    let store = &config.store.path;
    // "Not run yet" would be a lie to a user who may not look inside.
    for dir in [store.clone(), store.join("journal")] {
        if let Err(e) = std::fs::read_dir(&dir) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                anyhow::bail!(
                    "permission denied reading {}: the store is readable only by the agent's \
                     user; run status as that user (or root)",
                    dir.display()
                );
            }
        }
    }
    let status = match Journal::open_existing(store) {
        Ok(journal) => Status::collect(&journal, &config.enabled_sinks(), Default::default())?,
        Err(JournalError::Locked { .. }) => Status::read_snapshot(store).with_context(|| {
            format!(
                "the agent is running on {} but its status snapshot cannot be read",
                store.display()
            )
        })?,
        Err(e) => return Err(e.into()),
    };
    let status = if config.artifacts.enabled {
        // Files still being written are in no journal record: found here.
        let a = &config.artifacts;
        let files = mosaic_shipper::source::artifacts::ArtifactSource::new(
            &a.runs_dir,
            &a.paths,
            std::time::Duration::from_millis(a.settle_ms),
        )
        .map_err(anyhow::Error::msg)?
        .list();
        status.with_unsettled(
            files
                .into_iter()
                .map(|f| (f.run_id, f.rel_path, f.size, f.mtime_ns))
                .collect(),
        )
    } else {
        status
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(())
}

fn set_aside(config: Config, action: SetAsideAction) -> anyhow::Result<()> {
    use mosaic_shipper::journal::SetAsideRun;
    let store = &config.store.path;
    use mosaic_shipper::journal::requests::{self, Action, Request};
    // The store itself, or (`None`) a running agent holds it: then the
    // request goes to that agent (journal/requests.rs).
    let open = || -> anyhow::Result<Option<Journal>> {
        match Journal::open_existing(store) {
            Ok(j) => Ok(Some(j)),
            Err(JournalError::Locked { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };
    let through_agent = |action: Action, which: &Which| -> anyhow::Result<Vec<SetAsideRun>> {
        let request = Request {
            action,
            sink: which.sink.clone(),
            run: which.run.clone(),
        };
        let path = requests::submit(store, &request).with_context(|| {
            format!(
                "the agent is running on store {}, and the request for it cannot be written",
                store.display()
            )
        })?;
        match requests::wait_answer(&path, std::time::Duration::from_secs(15)) {
            Some(a) => match a.error {
                Some(e) => anyhow::bail!("the running agent could not carry it out: {e}"),
                None => Ok(a.runs),
            },
            None => anyhow::bail!(
                "the agent running on store {} did not answer within 15 s; the request stays in \
                 {} and is carried out when the agent next runs",
                store.display(),
                path.display()
            ),
        }
    };
    let describe = |r: &SetAsideRun| {
        format!(
            "{:<14} run {:?}: {} rows{}, since {}: {}",
            r.sink,
            r.run,
            r.rows,
            if r.retry { " (retry pending)" } else { "" },
            time::OffsetDateTime::from_unix_timestamp(r.since as i64)
                .ok()
                .and_then(|t| t
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok())
                .unwrap_or_default(),
            r.reason
        )
    };
    let which_text = |w: &Which| match (&w.sink, &w.run) {
        (None, None) => String::new(),
        (Some(s), None) => format!(" for sink {s}"),
        (None, Some(r)) => format!(" for run {r:?}"),
        (Some(s), Some(r)) => format!(" for run {r:?} of sink {s}"),
    };
    match action {
        SetAsideAction::List { json } => {
            let runs = match Journal::open_existing(store) {
                Ok(j) => j.set_aside_runs(None)?,
                // While the agent runs, from its status snapshot.
                Err(JournalError::Locked { .. }) => Status::read_snapshot(store)
                    .with_context(|| {
                        format!(
                            "the agent is running on {} but its status snapshot cannot be read",
                            store.display()
                        )
                    })?
                    .sinks
                    .into_iter()
                    .flat_map(|s| s.set_aside)
                    .collect(),
                Err(e) => return Err(e.into()),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("nothing is set aside");
            } else {
                for r in &runs {
                    println!("{}", describe(r));
                }
            }
        }
        SetAsideAction::Retry { which } => {
            if which.run.is_none() && which.sink.is_none() && !which.all {
                anyhow::bail!("say which runs to retry: --run RUN, --sink SINK, or --all");
            }
            let (runs, running) = match open()? {
                Some(j) => (
                    j.retry_set_aside(which.sink.as_deref(), which.run.as_deref())?,
                    false,
                ),
                None => (through_agent(Action::Retry, &which)?, true),
            };
            if runs.is_empty() {
                println!("nothing is set aside{}", which_text(&which));
            }
            for r in &runs {
                println!("will retry: {}", describe(r));
            }
            if !runs.is_empty() && running {
                println!(
                    "The running agent delivers them now; a run refused again is set aside again."
                );
            } else if !runs.is_empty() {
                println!(
                    "The agent delivers them when it next runs (`mosaic-shipper run --once` to do \
                     it now); a run refused again is set aside again."
                );
            }
        }
        SetAsideAction::Drop { which } => {
            if which.run.is_none() && which.sink.is_none() && !which.all {
                anyhow::bail!("say which runs to drop: --run RUN, --sink SINK, or --all");
            }
            let runs = match open()? {
                Some(j) => j.drop_set_aside(which.sink.as_deref(), which.run.as_deref())?,
                None => through_agent(Action::Drop, &which)?,
            };
            if runs.is_empty() {
                println!("nothing is set aside{}", which_text(&which));
            }
            for r in &runs {
                println!("dropped: {}", describe(r));
            }
        }
    }
    Ok(())
}

fn export(config: Config, to: &Path) -> anyhow::Result<()> {
    match bundle::export(&config, to)? {
        Exported::Nothing {
            store,
            cursor,
            warning,
        } => {
            if let Some(w) = warning {
                eprintln!("mosaic-shipper: warning: {w}");
            }
            println!(
                "nothing to export: no row of store {} is waiting for W&B (its wandb cursor is at \
                 #{cursor}); no bundle was written",
                store.display()
            );
        }
        Exported::Written {
            dir,
            store,
            manifest,
            warnings,
        } => {
            for w in warnings {
                eprintln!("mosaic-shipper: warning: {w}");
            }
            println!(
                "exported {} rows (#{}..#{} of store {}; runs {}){} to bundle {}\n\
                 They no longer wait for W&B here. On the connected machine: \
                 mosaic-shipper import {}",
                manifest.rows,
                manifest.seq.first,
                manifest.seq.last,
                store.display(),
                manifest.runs.join(", "),
                if manifest.artifacts.is_empty() {
                    String::new()
                } else {
                    format!(" and {} checkpoint versions", manifest.artifacts.len())
                },
                dir.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn import(config: Config, dir: &Path, allow_gap: bool) -> anyhow::Result<()> {
    let done = bundle::import(&config, dir, allow_gap)?;
    for w in &done.warnings {
        eprintln!("mosaic-shipper: warning: {w}");
    }
    let r = &done.record;
    let skipped = if done.skipped > 0 {
        format!(
            " ({} rows of the bundle were already here from an earlier bundle and were skipped)",
            done.skipped
        )
    } else {
        String::new()
    };
    let checkpoints = if done.checkpoints > 0 {
        format!(
            "\n{} checkpoint versions were copied into the store; they are logged to W&B as \
             model artifacts by `mosaic-shipper sync` or the online W&B sink",
            done.checkpoints
        )
    } else {
        String::new()
    };
    println!(
        "imported {} rows (#{}..#{} of journal {} on {}) from bundle {} into store {} as rows \
         #{}..#{}{skipped}\nThey go to: {}{checkpoints}",
        r.rows,
        r.first,
        r.last,
        r.source_journal,
        r.source_host,
        done.dir.display(),
        done.store.display(),
        r.local_first,
        r.local_last,
        if done.sinks.is_empty() {
            "no sink (none is enabled)".to_string()
        } else {
            done.sinks.join(", ")
        }
    );
    Ok(())
}
