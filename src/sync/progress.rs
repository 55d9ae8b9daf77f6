//! Progress of `sync`: a bar per run on a terminal, plain log lines
//! otherwise (CI logs, systemd, pipes), so a long upload is never silent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a run's progress is logged when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Hands out one [`RunProgress`] per run being uploaded; clones share the
/// terminal's bars (runs uploaded at once each keep their own line).
#[derive(Clone)]
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal, log lines otherwise.
    pub fn detect() -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            bars: tty.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
        }
    }

    /// Whether bars are drawn (then info logs would tear them).
    pub fn is_terminal(&self) -> bool {
        self.bars.is_some()
    }

    /// Progress of `label` over `total` items called `unit` ("lines").
    pub fn run(&self, label: &str, total: u64, unit: &'static str) -> RunProgress {
        let bar = self.bars.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix:.bold}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}}"
                ))
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        tracing::info!(run = label, total, unit, "uploading");
        RunProgress {
            bar,
            label: label.to_string(),
            unit,
            total,
            done: 0,
            logged: Instant::now(),
        }
    }
}

/// One run's progress.
pub struct RunProgress {
    bar: Option<ProgressBar>,
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    logged: Instant,
}

impl RunProgress {
    /// `done` of the total lines are acknowledged by the server.
    pub fn set(&mut self, done: u64) {
        if done == self.done {
            return;
        }
        self.done = done;
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.logged.elapsed() >= LOG_EVERY => {
                tracing::info!(run = %self.label, done, of = self.total, unit = self.unit, "uploading");
                self.logged = Instant::now();
            }
            None => {}
        }
    }

    /// Ends the run's progress with `message` (also logged).
    pub fn finish(self, message: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_with_message(message.to_string());
        }
        tracing::info!(run = %self.label, done = self.done, unit = self.unit, "{message}");
    }

    /// Ends the run's progress with a failure.
    pub fn fail(self, error: &str) {
        if let Some(bar) = &self.bar {
            bar.abandon_with_message(format!("FAILED: {error}"));
        }
        // Debug only: the failure is printed once, in the FAILED lines at the end.
        tracing::debug!(run = %self.label, done = self.done, unit = self.unit, error, "upload failed");
    }
}
