//! Sinks: where rows go, each behind its own durable cursor.
//!
//! The contract every sink follows, and that the [`run`] loop enforces:
//!
//! 1. On start (and after any error) the sink is given the state it saved
//!    with its cursor and must put its destination back to exactly that
//!    point ([`Sink::recover`]), e.g. truncate files to committed lengths.
//! 2. Rows after the cursor are handed over in order ([`Sink::write`]).
//!    Before it creates anything that recovery must know of (a new file),
//!    the sink records that in its state through [`Checkpoint::save`].
//! 3. [`Sink::flush`] makes everything written durable and returns the
//!    state describing it; the runner commits that state and the cursor in
//!    one journal write ([`Journal::ack`]).
//!
//! A crash anywhere leaves a destination that is at or beyond the committed
//! state, and recovery cuts it back: each row arrives exactly once.

pub mod enabled;
mod fs_refusal;
pub mod health;
pub mod jsonl;
mod open_files;
pub mod runname;
mod template;
pub mod tensorboard;
pub mod wandb;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use thiserror::Error;
use tokio::sync::watch;

use crate::journal::{Journal, JournalError, RunName};
use crate::row::Entry;
pub use health::{RunnerStatus, SinkHealth};
pub use template::PathTemplate;

/// A sink failure. Every one but [`SinkError::Refused`] is retried after a
/// backoff (the destination may come back: a disk is freed, a server
/// restarts); rows stay in the journal meanwhile.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("{0}")]
    Io(String),
    /// The destination will not take rows of this one run, and trying
    /// again will not change that (W&B answered 4xx for it; a file sink
    /// cannot write under that run's directory, see `fs_refusal`). The runner
    /// sets the run's rows aside for this sink (kept in the journal, see
    /// `journal/set_aside.rs`) and every other run goes on.
    #[error("run {run:?} refused: {reason}")]
    Refused { run: String, reason: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// One destination for rows. See the module documentation for the contract.
pub trait Sink: Send + 'static {
    /// Stable name; the key of the sink's cursor in the journal.
    fn name(&self) -> &'static str;

    /// Restores the destination to the state committed with the cursor.
    fn recover(&mut self, state: &[u8]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Takes rows in sequence order; they need not be durable yet.
    fn write(
        &mut self,
        entries: &[Entry],
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes all written rows durable; returns the state to commit.
    fn flush(&mut self) -> impl Future<Output = Result<Vec<u8>, SinkError>> + Send;

    /// Periodic work of an idle sink (the W&B sink finishes idle runs),
    /// every [`RunOptions::tick_interval`], only when everything written is
    /// acknowledged. A returned state is committed without moving the cursor.
    fn tick(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>, SinkError>> + Send {
        async { Ok(None) }
    }

    /// The runs whose rows are set aside for this sink, told after every
    /// [`Sink::recover`]: no row of theirs will be written, and the sink
    /// must send nothing else for them either (W&B: no heartbeat, no
    /// finish), or it would be refused again.
    fn set_aside(&mut self, _runs: &HashSet<String>) {}
}

/// Lets a sink commit recovery state without moving its cursor.
pub struct Checkpoint {
    journal: Arc<Journal>,
    name: &'static str,
    seq: u64,
}

impl Checkpoint {
    /// A checkpoint at sink `name`'s cursor as the journal holds it: for a
    /// sink's `tick`, which runs with everything acknowledged.
    pub fn at_cursor(journal: Arc<Journal>, name: &'static str) -> Result<Checkpoint, SinkError> {
        let seq = journal.cursor(name)?.seq;
        Ok(Checkpoint { journal, name, seq })
    }

    /// Commits `state` with the unchanged cursor and makes it durable
    /// before returning. The flush matters: the sink is about to write
    /// bytes that recovery must be able to cut back, and a SIGKILL loses
    /// journal writes sled has not yet flushed while the sink's own
    /// fsynced bytes survive. (Acks need no flush: losing one only moves
    /// recovery back to an earlier state that was consistent too.)
    pub fn save(&self, state: Vec<u8>) -> Result<(), SinkError> {
        self.journal.ack(self.name, self.seq, state)?;
        self.journal.flush()?;
        Ok(())
    }
}

/// How the runner batches and paces a sink.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Rows handed to one `write`.
    pub batch_rows: usize,
    /// Longest time written rows wait for a flush while more keep coming.
    /// Every sink flushes when `batch_rows` rows or this interval have
    /// accumulated, and when caught up while draining; the first rows
    /// after a quiet spell go out at once. A trickle catches up on every
    /// commit, so flushing whenever caught up would fsync per commit.
    pub flush_interval: Duration,
    /// Consecutive failures after which the runner gives up (`--once`);
    /// `None`: retry forever (the daemon).
    pub give_up_after: Option<u32>,
    /// How often [`Sink::tick`] runs; `None`: never.
    pub tick_interval: Option<Duration>,
    /// Where the runner records failures and progress (the agent shares
    /// it with the status snapshot and the metrics endpoint).
    pub health: Arc<SinkHealth>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_rows: 2048,
            flush_interval: Duration::from_secs(1),
            give_up_after: None,
            tick_interval: None,
            health: Arc::default(),
        }
    }
}

/// What the agent asks of the sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep delivering as rows arrive.
    Run,
    /// Deliver what is in the journal, then stop (or at the deadline).
    Drain { until: Instant },
}

fn retry_policy() -> backoff::ExponentialBackoff {
    backoff::ExponentialBackoff {
        initial_interval: Duration::from_millis(200),
        max_interval: Duration::from_secs(30),
        max_elapsed_time: None,
        ..Default::default()
    }
}

/// Drives one sink until told to stop. Returns an error only when
/// `give_up_after` consecutive attempts failed.
pub async fn run<S: Sink>(
    sink: S,
    journal: Arc<Journal>,
    options: RunOptions,
    mode: watch::Receiver<Mode>,
) -> Result<(), SinkError> {
    let health = options.health.clone();
    let result = run_sessions(sink, journal, options, mode).await;
    health.stopped();
    result
}

async fn run_sessions<S: Sink>(
    mut sink: S,
    journal: Arc<Journal>,
    options: RunOptions,
    mut mode: watch::Receiver<Mode>,
) -> Result<(), SinkError> {
    let name = sink.name();
    let mut retry = retry_policy();
    let mut failures = 0u32;
    loop {
        // A session blocked on a slow destination (a W&B request retrying)
        // must not hold up shutdown past its deadline; dropping it there is
        // safe, as nothing uncommitted counts as delivered.
        let deadline = drain_deadline(mode.clone());
        let session = tokio::select! {
            r = deliver(&mut sink, &journal, &options, &mut mode) => r,
            _ = deadline => {
                tracing::warn!(sink = name, "shutdown deadline reached while delivering; the rest ships next time");
                return Ok(());
            }
        };
        match session {
            Ok(Session::Done) => return Ok(()),
            // `set-aside retry` or `drop` changed what is set aside.
            Ok(Session::Again) => continue,
            Err(SinkError::Refused { run, reason })
                if !journal
                    .set_aside_runs(Some(name))?
                    .iter()
                    .any(|r| r.run == run && !r.retry) =>
            {
                // Not a failure of the sink: one run is refused, the rest
                // go on at once (a new session replays from the cursor,
                // setting that run's rows aside).
                journal.refuse_run(name, &run, &reason)?;
                tracing::error!(
                    sink = name,
                    run = ?run,
                    reason = %reason,
                    "sink {name} refused run {run:?}: its rows are set aside for this sink (kept \
                     in the store, counted by `status`) and every other run goes on; once the \
                     cause is fixed: `mosaic-shipper set-aside retry --sink {name} --run {run:?}` \
                     (or `set-aside drop` to give them up)"
                );
                continue;
            }
            Err(e) => {
                failures += 1;
                options.health.failed();
                if options.give_up_after.is_some_and(|n| failures >= n) {
                    tracing::error!(sink = name, error = %e, failures, "sink failed; giving up (rows stay in the journal)");
                    return Err(e);
                }
                let wait = retry.next_backoff().unwrap_or(Duration::from_secs(30));
                tracing::warn!(sink = name, error = %e, retry_in = ?wait, "sink failed; will recover and retry");
                let deadline = tokio::time::sleep(wait);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        changed = mode.changed() => {
                            if changed.is_err() { return Err(e); }
                            if let Mode::Drain { until } = *mode.borrow() {
                                if Instant::now() >= until { return Err(e); }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Resolves when the agent is draining and its deadline has passed.
async fn drain_deadline(mut mode: watch::Receiver<Mode>) {
    loop {
        let current = *mode.borrow_and_update();
        if let Mode::Drain { until } = current {
            tokio::time::sleep_until(until.into()).await;
            return;
        }
        if mode.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Hands the kept rows of runs marked for retry (`set-aside retry`) to
/// the sink, before any new row: they are older than every row of their
/// run still in the journal. Each batch's rows are deleted in the
/// transaction that commits the sink's state; the cursor does not move.
async fn deliver_retries<S: Sink>(
    sink: &mut S,
    journal: &Arc<Journal>,
    options: &RunOptions,
    seq: u64,
) -> Result<(), SinkError> {
    let name = sink.name();
    for r in journal.set_aside_runs(Some(name))? {
        if !r.retry {
            continue;
        }
        let mut delivered = 0u64;
        loop {
            let batch = journal.set_aside_rows(name, &r.run, options.batch_rows)?;
            let Some(last) = batch.last().map(|e| e.seq) else {
                journal.forget_set_aside_run(name, &r.run)?;
                break;
            };
            let checkpoint = Checkpoint {
                journal: journal.clone(),
                name,
                seq,
            };
            sink.write(&batch, &checkpoint).await?;
            let state = sink.flush().await?;
            journal.ack_retried(name, seq, state, &r.run, last)?;
            delivered += batch.len() as u64;
        }
        tracing::info!(sink = name, run = ?r.run, rows = delivered, "set-aside rows delivered on retry; the run flows again");
    }
    Ok(())
}

/// Notes, once per process, the run ids the sinks show under other names.
#[derive(Default)]
struct NameNotes(HashSet<String>);

impl NameNotes {
    fn note(&mut self, journal: &Journal, run: &str) -> Result<(), JournalError> {
        if self.0.contains(run) {
            return Ok(());
        }
        self.0.insert(run.to_string());
        if runname::is_mapped(run) {
            let name = RunName {
                run: run.to_string(),
                path: runname::path_name(run).into_owned(),
                wandb: runname::wandb_id(run),
            };
            tracing::info!(run = ?run, path = %name.path, wandb = %name.wandb, "run id mapped to a safe name");
            journal.note_run_name(&name)?;
        }
        Ok(())
    }
}

/// How a delivery session ended (other than by an error).
enum Session {
    /// Drained: the agent is stopping.
    Done,
    /// The set-aside runs changed (`set-aside retry` or `drop` carried out
    /// by the running agent): a new session takes them into account.
    Again,
}

/// One recovery-and-deliver session; returns on drain completion, on a
/// change of the set-aside runs, or on error.
async fn deliver<S: Sink>(
    sink: &mut S,
    journal: &Arc<Journal>,
    options: &RunOptions,
    mode: &mut watch::Receiver<Mode>,
) -> Result<Session, SinkError> {
    let name = sink.name();
    let mut aside_changes = journal.subscribe_set_aside();
    aside_changes.borrow_and_update();
    let mut aside_changed = false;
    let cursor = journal.cursor(name)?;
    sink.recover(&cursor.state).await?;
    let refused: HashSet<String> = journal
        .set_aside_runs(Some(name))?
        .into_iter()
        .filter(|r| !r.retry)
        .map(|r| r.run)
        .collect();
    sink.set_aside(&refused);
    deliver_retries(sink, journal, options, cursor.seq).await?;
    let cursor = journal.cursor(name)?;
    let mut names = NameNotes::default();
    // Rows of refused runs read since the last acknowledgement: kept with
    // the next one.
    let mut aside: Vec<Entry> = Vec::new();
    let mut acked = cursor.seq;
    let mut written = cursor.seq;
    let mut unflushed = 0usize;
    // The first rows of a session go out at once, then at most one flush
    // per interval while more keep coming.
    let mut last_flush = Instant::now()
        .checked_sub(options.flush_interval)
        .unwrap_or_else(Instant::now);
    let mut last_tick = Instant::now();
    let mut rows = journal.subscribe_rows();
    loop {
        let batch = journal.read_after(written, options.batch_rows)?;
        let batch_len = batch.len();
        if let Some(last) = batch.last().map(|e| e.seq) {
            let mut previous: Option<&str> = None;
            for e in &batch {
                if previous != Some(e.row.run_id.as_str()) {
                    names.note(journal, &e.row.run_id)?;
                    previous = Some(e.row.run_id.as_str());
                }
            }
            let take: Vec<Entry> = if refused.is_empty() {
                batch
            } else {
                let (kept, take): (Vec<Entry>, Vec<Entry>) = batch
                    .into_iter()
                    .partition(|e| refused.contains(&e.row.run_id));
                aside.extend(kept);
                take
            };
            if !take.is_empty() {
                let checkpoint = Checkpoint {
                    journal: journal.clone(),
                    name,
                    seq: acked,
                };
                sink.write(&take, &checkpoint).await?;
            }
            // Set-aside rows count too: they are committed with the ack.
            unflushed += batch_len;
            written = last;
        }
        let caught_up = batch_len < options.batch_rows;
        let draining = matches!(*mode.borrow(), Mode::Drain { .. });
        // Caught up after a quiet spell: at once. While rows keep coming
        // (a trickle catches up on every commit), at most once per
        // interval: each flush is an fsync.
        let interval_passed = last_flush.elapsed() >= options.flush_interval;
        let again = aside_changed || aside_changes.has_changed().unwrap_or(false);
        let flush_due =
            (caught_up && draining) || unflushed >= options.batch_rows || interval_passed || again;
        if written > acked && flush_due {
            let state = sink.flush().await?;
            journal.ack_with_set_aside(name, written, state, &aside)?;
            aside.clear();
            tracing::debug!(sink = name, seq = written, "acknowledged");
            options.health.progress();
            acked = written;
            unflushed = 0;
            last_flush = Instant::now();
        }
        if again {
            // Everything written is acknowledged (the flush above): the
            // new session starts from this cursor.
            return Ok(Session::Again);
        }
        if !caught_up {
            continue;
        }
        if written == acked {
            // Nothing left to deliver: as current as a sink can be.
            options.health.progress();
        }
        let current = *mode.borrow_and_update();
        if let Mode::Drain { until } = current {
            // Draining may have begun after this round's flush decision:
            // rows written but not flushed go round once more, where
            // `draining` makes the flush due, instead of being left behind.
            if written > acked && Instant::now() < until {
                continue;
            }
            if written >= *rows.borrow() || Instant::now() >= until {
                // A last tick with everything acknowledged: what a sink
                // does when idle (W&B: mark finished runs complete) must
                // not wait for an agent that is about to exit.
                if options.tick_interval.is_some() && written == acked {
                    if let Some(state) = sink.tick().await? {
                        journal.ack(name, acked, state)?;
                    }
                }
                return Ok(Session::Done);
            }
            continue;
        }
        if let Some(every) = options.tick_interval {
            if written == acked && last_tick.elapsed() >= every {
                if let Some(state) = sink.tick().await? {
                    journal.ack(name, acked, state)?;
                }
                last_tick = Instant::now();
            }
        }
        // Wake up for a pending flush or the next tick even if no row comes.
        let mut wake = Duration::from_secs(3600);
        if written > acked {
            wake = wake.min(options.flush_interval.saturating_sub(last_flush.elapsed()));
        }
        if let Some(every) = options.tick_interval {
            wake = wake.min(every.saturating_sub(last_tick.elapsed()));
        }
        tokio::select! {
            _ = rows.changed() => {}
            changed = mode.changed() => {
                if changed.is_err() { return Ok(Session::Done); }
            }
            _ = aside_changes.changed() => { aside_changed = true; }
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

#[cfg(test)]
mod runner_tests;
