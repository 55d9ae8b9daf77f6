//! Uploading the rows the journal holds for the online W&B sink: staged
//! with `mode = "stage"`, imported from another machine's bundle, or left
//! behind by an outage.
//!
//! This is the online sink itself, run over the journal until its cursor
//! reaches the last row (the same exactly-once contract, cursor, state and
//! W&B requests as the agent's), without reading any log file. Runs whose
//! worker logged a run-finished record are completed; others stay open
//! for the rows still to come.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use super::progress::Progress;
use crate::config::Config;
use crate::journal::Journal;
use crate::sink::wandb::{WandbSettings, WandbSink};
use crate::sink::{self, Mode, RunOptions};

/// What the journal part of a sync came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// There is no store at the configured path.
    NoStore,
    /// The store has never held rows for W&B (no `wandb` cursor).
    NothingStaged,
    Uploaded {
        rows: u64,
        runs: usize,
    },
}

/// Which run each pending row belongs to, as runs of consecutive rows:
/// enough to turn the sink's cursor into per-run progress.
struct Layout {
    runs: Vec<String>,
    /// `(last seq of the segment, index into runs)`, in seq order.
    segments: Vec<(u64, usize)>,
    totals: Vec<u64>,
}

impl Layout {
    fn scan(journal: &Journal, after: u64) -> anyhow::Result<Layout> {
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        let mut layout = Layout {
            runs: Vec::new(),
            segments: Vec::new(),
            totals: Vec::new(),
        };
        let mut at = after;
        loop {
            let batch = journal.read_after(at, 50_000)?;
            let Some(last) = batch.last() else { break };
            at = last.seq;
            for entry in &batch {
                let i = *index.entry(entry.row.run_id.clone()).or_insert_with(|| {
                    layout.runs.push(entry.row.run_id.clone());
                    layout.totals.push(0);
                    layout.runs.len() - 1
                });
                layout.totals[i] += 1;
                match layout.segments.last_mut() {
                    Some((end, run)) if *run == i => *end = entry.seq,
                    _ => layout.segments.push((entry.seq, i)),
                }
            }
        }
        Ok(layout)
    }

    /// Rows of each run at or before `acked`.
    fn done(&self, after: u64, acked: u64) -> Vec<u64> {
        let mut done = vec![0; self.runs.len()];
        let mut start = after + 1;
        for &(end, run) in &self.segments {
            if start > acked {
                break;
            }
            done[run] += end.min(acked) + 1 - start;
            start = end + 1;
        }
        done
    }
}

/// Runs the W&B sink over the journal at `config.store.path` until every
/// row held for it is acknowledged.
pub async fn sync(
    config: &Config,
    settings: &WandbSettings,
    progress: &Progress,
) -> anyhow::Result<Outcome> {
    let store: &Path = &config.store.path;
    if !store.join("journal").is_dir() {
        return Ok(Outcome::NoStore);
    }
    // Rows are W&B's if the store has a `wandb` cursor, or if this
    // configuration enables the W&B sink (online or staged): the agent
    // would register one at the oldest row held on its next start, too
    // (rows imported before the sink was on). Otherwise opening with
    // "wandb" would make rows held only for other sinks W&B's.
    let enabled = config.enabled_sinks();
    let staged = enabled.contains(&"wandb") || {
        let journal = Journal::open_existing(store).map_err(locked_hint)?;
        journal.cursors()?.iter().any(|(name, _)| name == "wandb")
    };
    if !staged {
        return Ok(Outcome::NothingStaged);
    }
    let mut enabled = enabled;
    if !enabled.contains(&"wandb") {
        enabled.push("wandb");
    }
    let journal = Arc::new(Journal::open(store, &enabled).map_err(locked_hint)?);
    let from = journal.cursor("wandb")?.seq;
    let last = journal.last_seq()?;
    let layout = Layout::scan(&journal, from)?;
    let mut bars: Vec<_> = layout
        .runs
        .iter()
        .zip(&layout.totals)
        .map(|(run, total)| progress.run(run, *total, "rows"))
        .collect();

    // Runs of the saved state without rows here are left as they are: no
    // worker vouches for them (the agent announces and heartbeats them).
    let mut settings = settings.clone();
    settings.revive_open_runs = false;
    let (sink, _finish) = WandbSink::new(settings.clone()).context("cannot start the W&B sink")?;
    // The same copies as the agent's (a run it began may end here).
    let sink = sink.keeping_output_files(store.join(crate::sink::wandb::output_file::STORE_DIR));
    let options = RunOptions {
        batch_rows: settings.rows_per_request,
        flush_interval: settings.flush_interval,
        tick_interval: Some(Duration::from_secs(1)),
        // As `run --once`: an unreachable W&B fails the sync after five
        // rounds of the retry policy; the rows stay in the journal.
        give_up_after: Some(5),
        ..RunOptions::default()
    };
    let until = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let (_mode, mode_rx) = watch::channel(Mode::Drain { until });
    let mut task = tokio::spawn(sink::run(sink, journal.clone(), options, mode_rx));
    let result = loop {
        tokio::select! {
            joined = &mut task => break joined.context("the W&B sink task panicked")?,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let acked = journal.cursor("wandb")?.seq;
                for (bar, done) in bars.iter_mut().zip(layout.done(from, acked)) {
                    bar.set(done);
                }
            }
        }
    };
    let acked = journal.cursor("wandb")?.seq;
    journal.flush()?;
    let done = layout.done(from, acked);
    let error = match result {
        Err(e) => Some(e.to_string()),
        Ok(()) if acked < last => Some(format!("acknowledged up to row #{acked} of #{last}")),
        Ok(()) => None,
    };
    for (mut bar, n) in bars.into_iter().zip(done) {
        bar.set(n);
        match &error {
            Some(e) => bar.fail(e),
            None => bar.finish("uploaded"),
        }
    }
    if let Some(e) = error {
        anyhow::bail!(
            "journal {}: W&B upload failed: {e}; the rest stays in the journal for the next sync",
            store.display()
        );
    }
    Ok(Outcome::Uploaded {
        rows: last.saturating_sub(from),
        runs: layout.runs.len(),
    })
}

fn locked_hint(e: crate::journal::JournalError) -> anyhow::Error {
    match e {
        crate::journal::JournalError::Locked { ref path } => anyhow::anyhow!(
            "{e}: an agent is running on {}; it uploads journal rows itself when W&B is on. \
             Stop it to sync the rows it staged, or give sync the offline directories to upload",
            path.display()
        ),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_becomes_per_run_progress() {
        let layout = Layout {
            runs: vec!["a".into(), "b".into()],
            // rows 11..=13 a, 14..=15 b, 16..=20 a
            segments: vec![(13, 0), (15, 1), (20, 0)],
            totals: vec![8, 2],
        };
        assert_eq!(layout.done(10, 10), [0, 0]);
        assert_eq!(layout.done(10, 12), [2, 0]);
        assert_eq!(layout.done(10, 14), [3, 1]);
        assert_eq!(layout.done(10, 17), [5, 2]);
        assert_eq!(layout.done(10, 20), [8, 2]);
    }
}
