//! The `mosaic-shipper` command line.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use mosaic_shipper::agent::{self, Agent};
use mosaic_shipper::bundle::{self, Exported};
use mosaic_shipper::config::Config;
use mosaic_shipper::init;
use mosaic_shipper::journal::{Journal, JournalError};
use mosaic_shipper::logging;
use mosaic_shipper::sink::wandb::redact;
use mosaic_shipper::status::Status;
use mosaic_shipper::sync::SyncOptions;

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
    /// On a signal it stops reading, delivers what it can for a few
    /// seconds, commits, and exits 0. Whatever was not delivered is kept
    /// in the journal and ships on the next start.
    ///
    /// With `-- CMD [ARGS...]` it is an init process (a container's
    /// ENTRYPOINT): it starts CMD in its own process group, forwards
    /// SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to
    /// it, reaps orphaned processes, and when CMD exits reads the logs to
    /// their end, delivers (up to init.drain_deadline_secs) and exits with
    /// CMD's exit code (128+N if it died of signal N). CMD runs even if
    /// shipping cannot start.
    Run {
        /// Configuration file (TOML). Default: $MOSAIC_SHIPPER_CONFIG, else
        /// the embedded default.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Ship what the files hold now, wait until every enabled sink has
        /// acknowledged it, then exit 0 (batch use, tests, benchmarks).
        #[arg(long)]
        once: bool,
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
    },
}

fn main() -> ExitCode {
    // The commands that print (and --help): `status --json | head -c 100`
    // ends them quietly (141, as any Unix tool) instead of a panic on
    // EPIPE. The agent itself goes back to ignoring SIGPIPE: a closed
    // stderr must not stop shipping.
    // SAFETY: sets a disposition before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run { .. }) {
        // SAFETY: as above.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
    match cli.command {
        Command::CheckConfig { config } => {
            let _log = logging::init_stderr(logging::filter(cli.log_level.as_deref(), "warn"));
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
            let _log = logging::init_stderr(logging::filter(cli.log_level.as_deref(), default));
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
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
            let _log = logging::init_stderr(logging::filter(cli.log_level.as_deref(), "off"));
            explain(config, &file, lines, json)
        }
        Command::Status { config, json } => {
            let _log = logging::init_stderr(logging::filter(cli.log_level.as_deref(), "warn"));
            match load(config.as_deref()) {
                Ok(c) => report(status(c, json)),
                Err(code) => code,
            }
        }
        // Their results and warnings are printed as such; log lines would
        // only repeat them (ask with --log-level).
        Command::Export { config, to } => {
            let _log = logging::init_stderr(logging::filter(cli.log_level.as_deref(), "off"));
            match load(config.as_deref()) {
                Ok(c) => report(export(c, &to)),
                Err(code) => code,
            }
        }
        Command::Import {
            config,
            dir,
            allow_gap,
        } => {
            let _log = logging::init_stderr(logging::filter(cli.log_level.as_deref(), "off"));
            match load(config.as_deref()) {
                Ok(c) => report(import(c, &dir, allow_gap)),
                Err(code) => code,
            }
        }
        Command::Run {
            config,
            once,
            command,
        } if !command.is_empty() => {
            if once {
                eprintln!(
                    "mosaic-shipper: --once cannot be combined with a command: `run --once` exits \
                     when the files are read, `run -- CMD` when CMD exits; use one or the other"
                );
                return ExitCode::from(2);
            }
            init::main(config.as_deref(), command, cli.log_level.as_deref())
        }
        Command::Run { config, once, .. } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _log = logging::init(
                logging::filter(cli.log_level.as_deref(), &config.log.level),
                &config.log_dir(),
                config.log.max_files,
                config.log.max_bytes,
            );
            match run(config, once) {
                Ok(()) => ExitCode::SUCCESS,
                // The agent's errors belong in its log files too; one line
                // on stderr either way.
                Err(e) if tracing::enabled!(tracing::Level::ERROR) => {
                    tracing::error!("{}", message(&e));
                    ExitCode::FAILURE
                }
                Err(e) => report(Err(e)),
            }
        }
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

fn run(config: Config, once: bool) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let agent = Agent::start(config, once)?;
        if once {
            return agent
                .run_once(async {
                    match wait_for_signal().await {
                        Ok(signal) => signal,
                        // No signal handling: never interrupted.
                        Err(_) => std::future::pending().await,
                    }
                })
                .await;
        }
        wait_for_signal().await?;
        tracing::info!("stopping: committing and delivering what is read");
        agent.shutdown(Duration::from_secs(5)).await
    })
}

/// Waits for SIGTERM or SIGINT; returns which (its number).
async fn wait_for_signal() -> anyhow::Result<i32> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => libc::SIGTERM,
        _ = int.recv() => libc::SIGINT,
    })
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
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
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
                "exported {} rows (#{}..#{} of store {}; runs {}) to bundle {}\n\
                 They no longer wait for W&B here. On the connected machine: \
                 mosaic-shipper import {}",
                manifest.rows,
                manifest.seq.first,
                manifest.seq.last,
                store.display(),
                manifest.runs.join(", "),
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
    println!(
        "imported {} rows (#{}..#{} of journal {} on {}) from bundle {} into store {} as rows \
         #{}..#{}{skipped}\nThey go to: {}",
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
