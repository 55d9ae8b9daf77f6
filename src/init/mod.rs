//! Init mode: `mosaic-shipper run [--config FILE] -- CMD [ARGS...]`.
//!
//! The agent becomes the container's ENTRYPOINT (or a wrapper around one
//! worker): it starts CMD, forwards signals to it, reaps every zombie that
//! lands on it, ships the metrics CMD logs, and when CMD exits it reads the
//! logs to their end, drains the sinks (bounded by `init.drain_deadline_secs`)
//! and exits with CMD's code (128+N if CMD died of signal N).
//!
//! Decisions, and why:
//!
//! - **Shipping never stops training.** CMD is started before the pipeline,
//!   and neither an invalid configuration nor a pipeline that fails to
//!   start (store locked or damaged) prevents it or changes its exit code:
//!   the failure is logged at error level (on stderr, which is the
//!   container's log) and the agent just supervises.
//! - **CMD runs in its own process group** and signals go to that group by
//!   default (`signal_target = "group"`), like a shell job receiving Ctrl-C:
//!   helpers CMD started get them too. `"child"` sends them to CMD alone,
//!   for a CMD that shuts its helpers down itself.
//! - **When CMD exits, the rest of its group gets SIGTERM** (group mode
//!   only), as dumb-init does and tini does not. The agent outlives CMD by
//!   the drain, and when it is not PID 1 nothing else would ever stop those
//!   processes; SIGTERM gives them the chance to finish their log lines that
//!   a SIGKILL at the container's end would not. Processes that must
//!   outlive CMD can leave its group (setsid).
//! - **A second SIGTERM/SIGINT stops the drain.** The first one (forwarded
//!   to CMD, or received after CMD exited on its own) lets the drain run;
//!   the next one received during the drain means "stop now" (signals
//!   received while CMD still ran never cut the drain short by
//!   themselves): the agent stops waiting for the sinks,
//!   flushes the journal (everything committed stays; it ships on the next
//!   start with the same store) and exits with CMD's code.
//! - **CMD's output passes through the agent** (see [`console`]): to the
//!   agent's own stdout/stderr unchanged, and into copies the follower
//!   ships. They are closed before the final read of the logs.

mod child;
pub mod console;
mod reap;
mod signals;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::agent::{Agent, InitStart, StoreOpening};
use crate::config::Config;
pub use crate::config::{InitConfig, SignalTarget};
use crate::logging;
use crate::signals::Watchdog;
pub use reap::ChildExit;
use signals::{is_stop, Blocked, Bound, Event};

/// Runs CMD under the agent and returns CMD's exit code. `command` is not
/// empty. Called by `main` before anything else has started a thread
/// (`main` has blocked the signals already: [`crate::signals::Startup`]).
pub fn main(
    config_path: Option<&Path>,
    command: Vec<OsString>,
    log_level: Option<&str>,
    reset_store: bool,
) -> ExitCode {
    // First, before any thread exists (see `signals`).
    let blocked = match Blocked::install() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("mosaic-shipper: cannot block signals for init mode: {e}");
            return ExitCode::from(1);
        }
    };
    // The hard bound of the drain (armed when CMD exits). Without its
    // thread the drain is bounded by the runtime's timers alone.
    let (dog, dog_error) = match Watchdog::start(console::restore_terminal) {
        Ok(dog) => (dog, None),
        Err(e) => (Watchdog::inert(), Some(e)),
    };
    let pid1 = std::process::id() == 1;
    let subreaper = if pid1 {
        None
    } else {
        Some(reap::become_subreaper())
    };

    let config = crate::agent::load_config(config_path);
    let _log = match &config {
        Ok(c) => logging::init(
            logging::filter(log_level, &c.log.level),
            &c.log_dir(),
            c.log.max_files,
            c.log.max_bytes,
        ),
        Err(_) => logging::init_stderr(logging::filter(log_level, "info")),
    };
    let (config, init) = match config {
        Ok(mut c) => {
            let init = c.init.clone();
            // While CMD runs the agent knows its runs are alive, however
            // long the worker is silent: they keep their W&B heartbeat and
            // end with CMD's exit code, not with an idle timeout.
            c.sinks.wandb.idle_finish_secs = 0;
            (Some(c), init)
        }
        Err(e) => {
            tracing::error!(
                "SHIPPING IS OFF for this run: {e}. CMD runs regardless, with the default [init] settings"
            );
            (None, InitConfig::default())
        }
    };
    // `--reset-store` first, so that what is opened is the new store;
    // then the store opens while CMD starts (see `StoreOpening`).
    let mut config = config.filter(|c| !reset_store || reset(c));
    let opening = config.as_ref().and_then(|c| match StoreOpening::start(c) {
        Ok(o) => Some(o),
        Err(e) => {
            tracing::debug!(error = %e, "cannot start a thread to open the store; it is opened after CMD starts");
            None
        }
    });
    if let Some(e) = dog_error {
        tracing::warn!(error = %e, "cannot start the drain's watchdog thread; the drain is bounded by its deadline alone");
    }
    match subreaper {
        None => tracing::debug!("running as PID 1: orphaned processes are reaped here"),
        Some(Ok(())) => tracing::debug!("child subreaper: orphaned descendants are reaped here"),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot become a child subreaper (PR_SET_CHILD_SUBREAPER); orphans of CMD will go to the system's init")
        }
    }

    // CMD's output: through the agent (and copied) unless `init.console`
    // is off or there is no valid configuration to say where copies go.
    let console_settings = config
        .as_ref()
        .and_then(|c| console::settings(&init, &c.store.path));
    if let (Some(c), Some(_)) = (config.as_mut(), &console_settings) {
        // The fallback copies are followed wherever the store is.
        let glob = console::fallback_glob(&c.store.path);
        let mut sources = c.sources();
        if !sources.iter().any(|s| s.paths.contains(&glob)) {
            sources.push(crate::config::SourceConfig {
                name: "init-console".into(),
                kind: crate::config::SourceKind::Lines,
                paths: vec![glob.clone()],
                exclude: Vec::new(),
                run_id_from_path: None,
                // CMD's own output: its console.
                console: vec![glob],
            });
        }
        c.sources = Some(sources);
        c.tail.sources = None;
    }
    let (stdio, prepared) = match console_settings.map(console::prepare) {
        Some(Ok((stdio, prepared))) => (stdio, Some(prepared)),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot set up CMD's output pipes; CMD writes to the agent's streams directly and its output is not copied");
            (console::ChildStdio::default(), None)
        }
        None => (console::ChildStdio::default(), None),
    };

    let child = match child::spawn(&command, stdio) {
        Ok(c) => c,
        Err(e) => {
            let code = child::spawn_failure_code(&e);
            tracing::error!(command = ?command, "cannot start CMD: {e}; exiting {code}");
            return ExitCode::from(code);
        }
    };
    let started_at = crate::util::now_secs();
    tracing::info!(pid = child.pid, command = ?command, "started CMD");
    let (console, resizer) = match prepared.map(console::Prepared::start) {
        Some((c, r)) => (Some(c), r),
        None => (None, None),
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let bound = Bound {
        dog,
        drain_deadline: init.drain_deadline(),
    };
    if let Err(e) =
        signals::spawn_supervisor(blocked, child, init.signal_target, resizer, bound, tx)
    {
        // Without the supervisor nothing forwards or reaps; CMD is running,
        // so the honest fallback is to wait for it plainly.
        tracing::error!(error = %e, "cannot start the signal/reaper thread; waiting for CMD without forwarding signals");
        let code = wait_plainly(child.pid);
        if let Some(c) = console {
            c.finish(console::EOF_WAIT);
        }
        return ExitCode::from(code);
    }

    let cmd: Vec<String> = command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let worker = crate::machine::WorkerFacts::of_command(&cmd, started_at);
    let code = supervise(config, opening, init, console, rx, worker, child.pid as u32);
    console::restore_terminal();
    ExitCode::from(code)
}

/// Runs the pipeline (if it starts) while CMD runs, then finishes it.
/// Returns CMD's exit code.
fn supervise(
    config: Option<Config>,
    opening: Option<StoreOpening>,
    init: InitConfig,
    console: Option<console::Console>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    worker: crate::machine::WorkerFacts,
    pid: u32,
) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "SHIPPING IS OFF for this run: cannot start the async runtime; supervising CMD only");
            let mut stops = 0;
            let exit = wait_for_exit_blocking(&mut rx, &mut stops);
            if let Some(c) = console {
                c.finish(console::EOF_WAIT);
            }
            return exit.map_or(1, exit_code_u8);
        }
    };
    // CMD already gone (reaped by the supervisor: `run -- true`)? Then the
    // pipeline has only its final read to do. Known only where /proc is.
    let cmd_exited =
        Path::new("/proc/self").exists() && !Path::new("/proc").join(pid.to_string()).exists();
    let code = runtime.block_on(async move {
        let mut agent = config.and_then(|config| match Agent::start_with(config, false, Some(InitStart { worker, opening, cmd_exited })) {
            Ok(mut agent) => {
                // The run ids CMD is known by before it says one.
                let named: Vec<String> = std::env::var("MOSAIC_RUN_ID")
                    .ok()
                    .filter(|r| !r.is_empty())
                    .or(init.run_id.clone())
                    .into_iter()
                    .collect();
                agent.watch_worker(pid, named);
                Some(agent)
            }
            Err(e) => {
                tracing::error!("SHIPPING IS OFF for this run: the pipeline did not start: {e:#}. CMD runs regardless");
                None
            }
        });
        let mut stops = 0u32;
        let failed: std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> =
            match &agent {
                Some(a) => Box::pin(a.store_failed()),
                None => Box::pin(std::future::pending()),
            };
        let exit = tokio::select! {
            exit = wait_for_exit(&mut rx, &mut stops) => exit,
            error = failed => {
                // CMD is not the agent's to stop: shipping stops, CMD runs
                // on and the process still exits with its code.
                if let Some(a) = agent.take() {
                    let e = a.stop_on_failure(error).await;
                    tracing::error!("SHIPPING IS OFF for the rest of this run: {e}. CMD runs regardless");
                }
                wait_for_exit(&mut rx, &mut stops).await
            }
        };
        let Some((exit, exited_at)) = exit else {
            tracing::error!("the signal/reaper thread stopped; cannot learn CMD's exit");
            return 1;
        };
        let code = exit.code();
        // Counted from CMD's exit, as the hard bound the supervisor armed.
        let until = exited_at + init.drain_deadline();
        // CMD's output must be in its copies before the final read.
        if let Some(c) = console {
            let wait = console::EOF_WAIT.min(until.saturating_duration_since(Instant::now()));
            let _ = tokio::task::spawn_blocking(move || c.finish(wait)).await;
        }
        if let Some(agent) = agent {
            let store = agent.journal().path().to_path_buf();
            tracing::info!(
                deadline_secs = init.drain_deadline_secs,
                "reading the logs to their end and delivering (a second SIGTERM/SIGINT stops waiting)"
            );
            let abort = second_stop(&mut rx, stops);
            match agent.finish(until, Some(code), abort).await {
                Ok(true) => tracing::info!("every row read was delivered"),
                Ok(false) => tracing::warn!(store = %store.display(), "not every row was delivered; the rest is committed in the store and ships on the next start with it"),
                Err(e) => tracing::error!(store = %store.display(), "finishing the pipeline failed: {e:#}"),
            }
        }
        exit_code_u8(exit)
    });
    // The ingest thread is done unless the drain was aborted mid-read; its
    // commits are atomic, so it is not waited for beyond this.
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!(code, "exiting with CMD's code");
    code
}

/// `--reset-store` in init mode: moves the store's journal aside; false
/// (shipping stays off, CMD runs) when it cannot.
fn reset(config: &Config) -> bool {
    match crate::journal::reset_store(&config.store.path) {
        Ok(Some(aside)) => {
            tracing::warn!(store = %config.store.path.display(), old = %aside.display(), "--reset-store: the old store is kept aside; starting with a new store (the logs are read again from the start)");
            true
        }
        Ok(None) => true,
        Err(e) => {
            tracing::error!(
                "SHIPPING IS OFF for this run: --reset-store failed: {e}. CMD runs regardless"
            );
            false
        }
    }
}

fn exit_code_u8(exit: ChildExit) -> u8 {
    u8::try_from(exit.code()).unwrap_or(255)
}

fn count_stop(sig: libc::c_int, stops: &mut u32) {
    if is_stop(sig) {
        *stops += 1;
    }
}

/// Waits for CMD's exit, counting SIGTERM/SIGINT received meanwhile.
async fn wait_for_exit(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    stops: &mut u32,
) -> Option<(ChildExit, Instant)> {
    loop {
        match rx.recv().await? {
            Event::ChildExited(exit, at) => return Some((exit, at)),
            Event::Signal(sig) => count_stop(sig, stops),
        }
    }
}

fn wait_for_exit_blocking(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    stops: &mut u32,
) -> Option<ChildExit> {
    loop {
        match rx.blocking_recv()? {
            Event::ChildExited(exit, _) => return Some(exit),
            Event::Signal(sig) => count_stop(sig, stops),
        }
    }
}

/// Resolves at a SIGTERM/SIGINT received during the drain that is not the
/// agent's first (`stops` were received before the drain began); never if
/// the supervisor thread is gone. So the SIGTERM that made CMD exit lets
/// the drain run and the next one stops it; if CMD exited by itself, the
/// first stop signal only warns. Resolves with the signal's number.
async fn second_stop(rx: &mut mpsc::UnboundedReceiver<Event>, mut stops: u32) -> i32 {
    loop {
        match rx.recv().await {
            Some(Event::Signal(sig)) if is_stop(sig) => {
                stops += 1;
                if stops >= 2 {
                    return sig;
                }
                tracing::warn!("draining: send SIGTERM/SIGINT again to stop waiting");
            }
            Some(_) => {}
            None => std::future::pending::<()>().await,
        }
    }
}

/// Last resort when the supervisor thread cannot start: wait for CMD with
/// signals still blocked (so none can kill the agent and orphan CMD).
fn wait_plainly(pid: libc::pid_t) -> u8 {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable c_int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status) as u8;
            }
            if libc::WIFSIGNALED(status) {
                return (128 + libc::WTERMSIG(status)) as u8;
            }
        } else if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_section_defaults_and_validation() {
        let c: InitConfig = toml::from_str("").unwrap();
        assert_eq!(c, InitConfig::default());
        assert_eq!(c.drain_deadline(), Duration::from_secs(30));
        assert_eq!(c.signal_target, SignalTarget::Group);
        let c: InitConfig = toml::from_str("signal_target = \"child\"").unwrap();
        assert_eq!(c.signal_target, SignalTarget::Child);
        assert!(toml::from_str::<InitConfig>("signal_target = \"pgrp\"").is_err());
        assert!(toml::from_str::<InitConfig>("drain_deadline = 3").is_err());
        let c: InitConfig = toml::from_str("drain_deadline_secs = 30000000").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .contains("init.drain_deadline_secs"));
    }

    #[test]
    fn console_keys_defaults_and_validation() {
        let c: InitConfig = toml::from_str("").unwrap();
        assert_eq!(
            c.console,
            "var/trainer/runs/{run_id}/logs/init.{stream}.log"
        );
        assert_eq!((c.run_id.as_deref(), c.run_id_wait_secs), (None, 60));
        assert!(c.validate().is_ok());
        let off: InitConfig = toml::from_str("console = \"\"").unwrap();
        assert!(off.validate().is_ok());
        assert!(console::settings(&off, Path::new("s")).is_none());
        let one_file: InitConfig = toml::from_str("console = \"out/{run_id}.log\"").unwrap();
        assert!(one_file.validate().unwrap_err().contains("{stream}"));
        let bad_id: InitConfig = toml::from_str("run_id = \"../x\"").unwrap();
        assert!(bad_id.validate().unwrap_err().contains("init.run_id"));
        let id: InitConfig = toml::from_str("run_id = \"01KKAQ6XP04TFF59TDWH9EDD1R\"").unwrap();
        assert!(id.validate().is_ok());
        let slow: InitConfig = toml::from_str("run_id_wait_secs = 100000").unwrap();
        assert!(slow.validate().unwrap_err().contains("run_id_wait_secs"));
        assert_eq!(
            console::fallback_glob(Path::new("/data/[x]/store")),
            "/data/[[]x[]]/store/console/*/*.log"
        );
    }
}
