//! `mosaic-shipper run` without a command: the agent until a stop signal
//! (and `run --once`), and what the other signals do meanwhile.
//!
//! The signals come from the thread [`crate::signals::daemon`] starts in
//! `main` before anything else, so one that arrives while the journal
//! opens is acted on as soon as the agent runs: a SIGTERM in the first
//! milliseconds drains like any other. See that module for the table.

use std::time::Duration;

use anyhow::Context;

use crate::agent::{Agent, Stopped, STOP_DEADLINE};
use crate::config::Config;
use crate::metrics::Probe;
use crate::signals::daemon::{code_of, Request, Signals};
use crate::signals::SigName;

/// Runs the agent until a stop signal (or, with `once`, until the files
/// are read and delivered). Returns the exit code: 0, or 128+N when a
/// second stop signal N cut the drain short. `run --once`'s early ends
/// are [`crate::agent::OnceStopped`] errors.
pub fn run(config: Config, once: bool, signals: Signals) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let Signals {
            stops,
            mut requests,
        } = signals;
        let agent = Agent::start(config, once)?;
        let probe = agent.probe();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                serve(request, &probe).await;
            }
        });
        let (mut first, mut second) = (stops.clone(), stops);
        if once {
            agent
                .run_once(
                    async move { first.nth(1).await },
                    async move { second.nth(2).await.0 },
                )
                .await?;
            return Ok(0);
        }
        let failed = agent.store_failed();
        let (sig, at) = tokio::select! {
            stop = first.nth(1) => stop,
            error = failed => return Err(agent.stop_on_failure(error).await),
        };
        tracing::info!(
            signal = %SigName(sig),
            deadline_secs = STOP_DEADLINE.as_secs(),
            "stopping: committing and delivering what is read (a second SIGTERM/SIGINT stops at once)"
        );
        match agent
            .shutdown(at + STOP_DEADLINE, async move { second.nth(2).await.0 })
            .await?
        {
            Stopped::Drained => Ok(0),
            Stopped::Aborted(sig) => Ok(code_of(sig)),
        }
    });
    // The ingest thread may still be in its last commit when the deadline
    // cut the wait for it short: not waited for (commits are atomic).
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// SIGHUP, SIGUSR1 and the signals that are only logged.
async fn serve(request: Request, probe: &Probe) {
    match request {
        Request::ReopenLogs => {
            crate::logging::reopen_files();
            tracing::info!(
                "SIGHUP: log files opened again (the configuration is not reloaded; restart the agent for that)"
            );
        }
        Request::Status => {
            let probe = probe.clone();
            let line = tokio::task::spawn_blocking(move || status_line(&probe)).await;
            match line {
                Ok(Ok(line)) => tracing::info!("SIGUSR1: {line}"),
                Ok(Err(e)) => tracing::warn!("SIGUSR1: cannot collect the status: {e:#}"),
                Err(e) => tracing::warn!("SIGUSR1: cannot collect the status: {e}"),
            }
        }
        Request::Ignored(sig) => tracing::warn!(
            signal = %SigName(sig),
            "signal ignored (SIGTERM or SIGINT stop the agent, SIGHUP reopens its log files, SIGUSR1 logs its status)"
        ),
    }
}

/// Writes a fresh `status.json` and sums it up in one line.
fn status_line(probe: &Probe) -> anyhow::Result<String> {
    let status = probe.status()?;
    status
        .write_snapshot(&probe.config.store.path)
        .context("cannot write the status snapshot")?;
    let sinks: Vec<String> = status
        .sinks
        .iter()
        .filter(|s| s.enabled)
        .map(|s| format!("{} {} pending", s.name, s.pending))
        .collect();
    Ok(format!(
        "{} files followed, {} lines read, {} rows committed (last #{}), {} bytes held; {}; status.json refreshed",
        status.files.len(),
        status.counters.lines,
        status.counters.rows,
        status.store.last_seq,
        status.store.stored_bytes,
        if sinks.is_empty() {
            "no sink enabled".to_string()
        } else {
            sinks.join(", ")
        }
    ))
}
