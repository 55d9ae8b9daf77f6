//! The agent's own logs: stderr, plus size-capped daily files.
//!
//! Every line, to either, passes through the secret scrubber
//! ([`crate::sink::wandb::redact`]) and the repeat limiter
//! ([`ratelimit`]); colours only when stderr is a terminal and `NO_COLOR`
//! is not set.

mod ratelimit;
mod rolling;

/// The daemon's SIGHUP: the log files are opened again by name before
/// their next line (see `rolling`).
pub use rolling::reopen as reopen_files;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::sink::wandb::redact;

/// How long repeats of one warning are held back before a count of them
/// is logged.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Keeps the file writer's background thread alive; dropping it logs the
/// repeats still held back, then writes out buffered lines.
pub struct LogGuard {
    limit: Option<ratelimit::RateLimit>,
    _file_writer: Option<WorkerGuard>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(l) = &self.limit {
            l.flush(true);
        }
    }
}

/// The filter: `--log-level` wins, then `RUST_LOG`, then the config.
pub fn filter(cli_level: Option<&str>, config_level: &str) -> EnvFilter {
    if let Some(level) = cli_level {
        return EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    }
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v).unwrap_or_else(|_| EnvFilter::new("info")),
        _ => EnvFilter::try_new(config_level).unwrap_or_else(|_| EnvFilter::new("info")),
    }
}

/// Colours on stderr: only on a terminal, and never with `NO_COLOR` set
/// to anything (no-color.org). Pipes, files and the systemd journal get
/// plain text.
pub fn stderr_colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
}

/// Logs to stderr only (commands other than `run`).
pub fn init_stderr(filter: EnvFilter) -> LogGuard {
    let limit = ratelimit::RateLimit::new(REPEAT_WINDOW);
    let installed = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_ansi(stderr_colours())
                .with_writer(Scrubbed(std::io::stderr))
                .with_filter(filter),
        )
        .with(limit.clone())
        .try_init()
        .is_ok();
    if installed {
        limit.spawn_flusher();
    }
    LogGuard {
        limit: installed.then_some(limit),
        _file_writer: None,
    }
}

/// Logs to stderr and to `dir/mosaic-shipper.YYYY-MM-DD[.N].log`, keeping
/// at most `max_files` of them and `max_bytes` in total (rolling.rs). A log
/// directory that cannot be created is reported and the agent goes on with
/// stderr alone: shipping matters more.
pub fn init(filter: EnvFilter, dir: &Path, max_files: usize, max_bytes: u64) -> LogGuard {
    match rolling::Rolling::new(dir, max_files, max_bytes) {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let limit = ratelimit::RateLimit::new(REPEAT_WINDOW);
            let installed = tracing_subscriber::registry()
                .with(
                    fmt::layer()
                        .with_ansi(stderr_colours())
                        .with_writer(Scrubbed(std::io::stderr))
                        .with_filter(filter.clone()),
                )
                .with(
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(Scrubbed(writer))
                        .with_filter(filter),
                )
                .with(limit.clone())
                .try_init()
                .is_ok();
            if installed {
                limit.spawn_flusher();
            }
            LogGuard {
                limit: installed.then_some(limit),
                _file_writer: Some(guard),
            }
        }
        Err(e) => {
            let guard = init_stderr(filter);
            tracing::error!(dir = %dir.display(), error = %e, "cannot write log files; logging to stderr only");
            guard
        }
    }
}

/// A writer maker whose writers scrub secrets from every line.
struct Scrubbed<M>(M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Scrubbed<M> {
    type Writer = ScrubbedWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        ScrubbedWriter(self.0.make_writer())
    }
}

/// The fmt layer writes each event with one `write_all` of the whole
/// formatted line, so scrubbing per write sees whole lines.
struct ScrubbedWriter<W>(W);

impl<W: Write> Write for ScrubbedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(redact::scrub(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
