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
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

use crate::sink::wandb::redact;

/// How long repeats of one warning are held back before a count of them
/// is logged.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);

/// Lines queued for the log file's writer thread. tracing-appender's
/// default (128,000) allocates and touches a 5 MiB queue at start, a tenth
/// of the CPU of a `run -- true`; the repeat limiter keeps floods far
/// below this, and a line past a full queue is dropped, never waited for
/// (the default), so logging cannot stall shipping.
const FILE_QUEUE_LINES: usize = 8192;

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

/// The filter: `--log-level` wins, then `RUST_LOG`, then the config;
/// sled's own lines below `info` are always left out.
///
/// sled logs at debug and trace level from deferred clean-ups that
/// crossbeam-epoch runs while a thread exits, after that thread's
/// thread-locals are gone; tracing's formatter then panics inside a
/// thread-local destructor and the process aborts (seen with
/// `--log-level trace`). Those lines are sled's internals, of no use to
/// an operator, so no level setting lets them in.
pub fn filter(cli_level: Option<&str>, config_level: &str) -> Targets {
    let spec = match (cli_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => level.to_string(),
        (None, Ok(v)) if !v.is_empty() => v,
        _ => config_level.to_string(),
    };
    let capped = caps_sled(&spec);
    let filter =
        parse_filter(&spec).unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    // Only a filter that lets something below info through needs the cap,
    // and not one that already holds sled at info or less (the cap would
    // raise sled from `warn` to `info`).
    let max = filter
        .iter()
        .map(|(_, level)| level)
        .chain(filter.default_level())
        .max()
        .unwrap_or(LevelFilter::OFF);
    if max > LevelFilter::INFO && !capped {
        filter.with_target("sled", LevelFilter::INFO)
    } else {
        filter
    }
}

/// Reads a filter: a level (`debug`), targets with levels
/// (`mosaic_shipper=debug,sled=warn`), or both. A plain per-target list,
/// not `tracing`'s `EnvFilter` with span and field matching: that one
/// brings a regex engine whose full DFAs every regex of the agent would
/// then build at start-up.
pub fn parse_filter(spec: &str) -> Result<Targets, String> {
    if spec.trim().is_empty() {
        // `Targets` would read it as "log nothing", silently.
        return Err("empty: give a level (error, warn, info, debug, trace, off)".into());
    }
    spec.parse::<Targets>().map_err(|e| e.to_string())
}

/// Whether `spec` names a level of info or less for sled itself.
fn caps_sled(spec: &str) -> bool {
    spec.split(',').any(|d| {
        d.trim().strip_prefix("sled=").is_some_and(|level| {
            ["off", "error", "warn", "info"].contains(&level.trim().to_ascii_lowercase().as_str())
        })
    })
}

/// Colours on stderr: only on a terminal, and never with `NO_COLOR` set
/// to anything (no-color.org). Pipes, files and the systemd journal get
/// plain text.
pub fn stderr_colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
}

/// The levels the repeat limiter sees (it limits warnings and errors).
/// As its own filter, this also gives the subscriber its level hint:
/// without one the subscriber's maximum level was TRACE, and so was the
/// `log` crate's (tracing-subscriber sets it from the hint), so every
/// `log::trace!` on notify's and sled's hot paths went through the log
/// bridge and the filters only to be dropped (tests/log_level.rs).
const LIMITED: LevelFilter = LevelFilter::WARN;

/// Logs to stderr only (commands other than `run`).
pub fn init_stderr(filter: Targets) -> LogGuard {
    let limit = ratelimit::RateLimit::new(REPEAT_WINDOW);
    let installed = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_ansi(stderr_colours())
                .with_writer(Scrubbed(std::io::stderr))
                .with_filter(filter),
        )
        .with(limit.clone().with_filter(LIMITED))
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
pub fn init(filter: Targets, dir: &Path, max_files: usize, max_bytes: u64) -> LogGuard {
    match rolling::Rolling::new(dir, max_files, max_bytes) {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(FILE_QUEUE_LINES)
                .finish(appender);
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
                .with(limit.clone().with_filter(LIMITED))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether an event of `target` at `level` passes [`filter`] at `spec`.
    fn passes(spec: &str, target: &str, level: tracing::Level) -> bool {
        let subscriber =
            tracing_subscriber::registry().with(fmt::layer().with_filter(filter(Some(spec), "")));
        tracing::subscriber::with_default(subscriber, || match (target, level) {
            ("sled", tracing::Level::TRACE) => {
                tracing::enabled!(target: "sled::pagecache", tracing::Level::TRACE)
            }
            ("sled", tracing::Level::DEBUG) => {
                tracing::enabled!(target: "sled::pagecache", tracing::Level::DEBUG)
            }
            ("sled", tracing::Level::INFO) => {
                tracing::enabled!(target: "sled::pagecache", tracing::Level::INFO)
            }
            (_, tracing::Level::TRACE) => {
                tracing::enabled!(target: "mosaic_shipper::sink", tracing::Level::TRACE)
            }
            _ => unreachable!(),
        })
    }

    #[test]
    fn filters_are_levels_and_targets_and_bad_ones_are_refused() {
        use tracing::Level;
        assert!(passes("mosaic_shipper=trace", "agent", Level::TRACE));
        assert!(passes(
            "warn,mosaic_shipper::sink=trace",
            "agent",
            Level::TRACE
        ));
        assert!(!passes("debug", "agent", Level::TRACE));
        for bad in ["", "  ", "mosaic_shipper=loud", "a=b=c"] {
            assert!(parse_filter(bad).is_err(), "{bad:?}");
        }
        assert!(parse_filter("INFO").is_ok());
    }

    #[test]
    fn sled_never_logs_below_info_whatever_the_level() {
        use tracing::Level;
        for spec in ["trace", "debug", "sled=trace", "trace,sled=trace"] {
            assert!(!passes(spec, "sled", Level::TRACE), "{spec}");
            assert!(!passes(spec, "sled", Level::DEBUG), "{spec}");
            assert!(passes(spec, "sled", Level::INFO), "{spec}");
        }
        assert!(passes("trace", "agent", Level::TRACE));
        // The cap never raises sled above what was asked.
        assert!(!passes("warn", "sled", Level::INFO));
        assert!(!passes("debug,sled=warn", "sled", Level::INFO));
    }
}
