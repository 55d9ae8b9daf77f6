//! The agent's own logs: stderr, plus a daily-rolling file with retention.

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Keeps the file writer's background thread alive; drop it last so that
/// buffered lines are written out.
pub struct LogGuard {
    _file_writer: Option<WorkerGuard>,
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

/// Logs to stderr only (commands other than `run`).
pub fn init_stderr(filter: EnvFilter) -> LogGuard {
    let _ = tracing_subscriber::registry()
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .try_init();
    LogGuard { _file_writer: None }
}

/// Logs to stderr and to `dir/mosaic-shipper.YYYY-MM-DD.log`, keeping
/// `max_files` of them. A log directory that cannot be created is reported
/// and the agent goes on with stderr alone: shipping matters more.
pub fn init(filter: EnvFilter, dir: &Path, max_files: usize) -> LogGuard {
    let file = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix("mosaic-shipper")
                .filename_suffix("log")
                .max_log_files(max_files.max(1))
                .build(dir)
                .map_err(|e| e.to_string())
        });
    match file {
        Ok(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let _ = tracing_subscriber::registry()
                .with(
                    fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_filter(filter.clone()),
                )
                .with(
                    fmt::layer()
                        .with_ansi(false)
                        .with_writer(writer)
                        .with_filter(filter),
                )
                .try_init();
            LogGuard {
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
