//! The ingest loop: follow, frame, extract, commit. One thread, synchronous I/O.
//!
//! It is the only writer of rows and file checkpoints, which is what lets
//! each commit be a single transaction that moves both together.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::SourceKind;
use crate::extract::console::{self, ConsoleFiles};
pub use crate::extract::events::{EventOutcome, Readers};
use crate::extract::silence::Silence;
use crate::extract::Extractor;
use crate::journal::{FileState, Journal};
use crate::row::{Origin, Row, RunEvent};
use crate::source::follow::watch::{Waker, Watcher};
use crate::source::{Batch, Tailer};
use crate::stats::Counters;

/// Handle the rest of the agent keeps on the ingest thread.
#[derive(Clone)]
pub struct IngestControl {
    stop: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
    at_cap: Arc<AtomicBool>,
    waker: Waker,
}

impl IngestControl {
    /// Asks the loop to finish its current commit and return.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Asks the loop to scan once more, read every file to its current end
    /// and return: `once` mode, entered later (init mode, when CMD exits).
    pub fn finish(&self) {
        self.finish.store(true, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Wakes the loop early (e.g. after sinks freed journal space).
    pub fn wake(&self) {
        self.waker.wake();
    }

    /// Whether reading is paused because the journal is full
    /// (`store.max_bytes`) until sinks catch up.
    pub fn at_cap(&self) -> bool {
        self.at_cap.load(Ordering::SeqCst)
    }
}

/// Ingest settings taken from the configuration.
pub struct Ingest {
    pub tailer: Tailer,
    pub extractor: Extractor,
    pub readers: Readers,
    pub journal: Arc<Journal>,
    pub watcher: Watcher,
    pub poll_interval: Duration,
    /// How often everything is scanned while file-system events cover
    /// every source root (`tail.rescan_interval_ms`); between such scans,
    /// events drive targeted ones.
    pub rescan_interval: Duration,
    /// What the last full scan took (see [`FULL_SCAN_COST_SHARE`]).
    full_scan_cost: Duration,
    pub max_bytes: u64,
    pub unreadable: Unreadable,
    /// Files that yield lines but no rows, warned about once.
    silence: Silence,
    stop: Arc<AtomicBool>,
    finish: Arc<AtomicBool>,
    at_cap: Arc<AtomicBool>,
    /// The files whose lines are the worker's console output.
    pub console: ConsoleFiles,
    /// This machine's facts (`machine::MachineFacts`, as JSON), journaled
    /// before each run's first rows of this process; empty: none.
    pub machine: String,
    /// Runs this process journaled the machine's facts for.
    machine_told: HashSet<String>,
    /// A batch read while gathering that must be committed on its own.
    pending: Option<Batch>,
    /// Events were lost and the full scan that makes up for them is owed.
    events_lost: bool,
}

/// How often idle file handles are closed in the daemon: files read to
/// their end are closed as soon as they have been quiet for a few seconds
/// (see `Tailer::read`); this catches those still being written then.
const CLOSE_IDLE_EVERY: Duration = Duration::from_secs(10);

/// While events cover every root, full scans (the check for lost events)
/// are spaced to at least this many times what the last one took, so that
/// they cost at most a fraction of a percent of a core however many runs
/// there are (listing 10,000 run directories takes a second or two on a
/// loaded machine: one every several minutes).
const FULL_SCAN_COST_SHARE: u32 = 400;

/// After lost events, a full scan comes no sooner than this many times
/// what the last one took after it (see [`Ingest::watch_and_scan`]).
const LOST_EVENTS_SCAN_SHARE: u32 = 10;

/// At most this many files' batches go in one commit ([`Ingest::gather`]):
/// more saves little CPU and keeps more in memory at once (RSS beside
/// 10,000 runs: 224 MiB at 64, about 250 at 256).
const GROUP_BATCHES: usize = 64;
/// A group stops taking batches once their bytes reach this: rows of a
/// group are held in memory together until they are committed.
const GROUP_BYTES: usize = 1 << 20;

use crate::util::now_secs;

/// Files that match a pattern but cannot be opened, shared with `status`.
pub type Unreadable = Arc<Mutex<BTreeMap<String, String>>>;

impl Ingest {
    /// `events`: whether file-system events drive the reads (see
    /// [`Watcher::without_events`] for when they are not wanted).
    pub fn new(
        tailer: Tailer,
        mut extractor: Extractor,
        readers: Readers,
        journal: Arc<Journal>,
        poll_interval: Duration,
        max_bytes: u64,
        events: bool,
    ) -> Ingest {
        let roots = tailer.sources().roots();
        let watcher = if events {
            Watcher::new(roots)
        } else {
            Watcher::without_events(roots)
        };
        // Event files read before this start: worker-written unless the
        // checkpoint says they are the agent's own.
        let runs = tailer
            .states()
            .into_iter()
            .filter(|s| s.kind == SourceKind::Tfevents && s.ignored.is_none() && s.offset > 0)
            .filter_map(|s| readers.run_of(&s));
        for run in runs {
            extractor.note_worker_tensorboard(&run);
        }
        Ingest {
            tailer,
            extractor,
            readers,
            journal,
            watcher,
            poll_interval,
            rescan_interval: poll_interval.max(Duration::from_millis(
                crate::config::TailConfig::default().rescan_interval_ms,
            )),
            full_scan_cost: Duration::ZERO,
            max_bytes,
            unreadable: Unreadable::default(),
            silence: Silence::default(),
            stop: Arc::new(AtomicBool::new(false)),
            finish: Arc::new(AtomicBool::new(false)),
            at_cap: Arc::new(AtomicBool::new(false)),
            console: ConsoleFiles::default(),
            machine: String::new(),
            machine_told: HashSet::new(),
            pending: None,
            events_lost: false,
        }
    }

    pub fn control(&self) -> IngestControl {
        IngestControl {
            stop: self.stop.clone(),
            finish: self.finish.clone(),
            at_cap: self.at_cap.clone(),
            waker: self.watcher.waker(),
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Runs until stopped, or with `once` (or once asked to finish) until
    /// every file is read to its current end.
    pub fn run(mut self, once: bool) {
        let mut backoff = Duration::from_millis(100);
        let mut paused = false;
        let mut last_close = Instant::now();
        let mut last_full_scan = Instant::now();
        let mut finishing = false;
        self.scan();
        while !self.stopping() {
            if !finishing && self.finish.load(Ordering::SeqCst) {
                // Files created since the last scan (CMD's last run
                // directory, a rotation just before it exited) are part of
                // "everything": scan before reading to the end.
                finishing = true;
                self.scan();
            }
            match self.journal.stored_bytes() {
                Ok(bytes) if bytes >= self.max_bytes => {
                    if !paused {
                        tracing::warn!(bytes, cap = self.max_bytes, "journal is full (store.max_bytes): reading paused until sinks catch up; nothing is dropped");
                        paused = true;
                        self.at_cap.store(true, Ordering::SeqCst);
                    }
                    self.watcher.wait(Duration::from_millis(200));
                    continue;
                }
                Ok(_) if paused => {
                    tracing::info!("journal has room again: reading resumed");
                    paused = false;
                    self.at_cap.store(false, Ordering::SeqCst);
                }
                _ => {}
            }
            let Some(first) = self.tailer.read() else {
                self.silence.idle(once || finishing);
                if once || finishing {
                    break;
                }
                if last_close.elapsed() >= CLOSE_IDLE_EVERY {
                    self.tailer.close_idle();
                    last_close = Instant::now();
                }
                self.watch_and_scan(&mut last_full_scan, CLOSE_IDLE_EVERY);
                continue;
            };
            let group = self.gather(first);
            match self.commit(group) {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(()) => {
                    self.watcher.wait(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        if let Err(e) = self.journal.flush() {
            tracing::error!(error = %e, "final journal flush failed");
        }
    }

    /// Sleeps until something changes or a full scan is due, then looks:
    /// at what the events named, or at everything when one is due, events
    /// were lost, or roots are not all watched (then every poll interval).
    fn watch_and_scan(&mut self, last_full_scan: &mut Instant, at_most: Duration) {
        let every = |w: &Watcher| {
            if w.reliable() {
                self.rescan_interval
                    .max(self.full_scan_cost * FULL_SCAN_COST_SHARE)
            } else {
                self.poll_interval
            }
        };
        // Events were lost (the kernel's queue overflowed): a full scan,
        // but no sooner after the last than a few times what it cost. A
        // full scan opens every watched directory, and its own events can
        // fill the queue at 10,000 runs on a slow machine: scanning at
        // once would then scan back to back, forever.
        let lost_after = self.full_scan_cost * LOST_EVENTS_SCAN_SHARE;
        let mut due = every(&self.watcher).saturating_sub(last_full_scan.elapsed());
        if self.events_lost {
            due = due.min(lost_after.saturating_sub(last_full_scan.elapsed()));
        }
        self.watcher.wait(due.min(at_most));
        self.watcher.refresh();
        let changes = self.watcher.take();
        self.events_lost |= changes.rescan;
        let since = last_full_scan.elapsed();
        if (self.events_lost && since >= lost_after) || since >= every(&self.watcher) {
            if self.events_lost {
                tracing::debug!("file-system events were lost: scanning everything");
            }
            self.events_lost = false;
            self.scan();
            *last_full_scan = Instant::now();
        } else {
            let mut paths = self.tailer.note_written(changes.modified, &changes.paths);
            if !changes.paths.is_empty() || !paths.is_empty() {
                paths.extend(changes.paths);
                self.tailer.scan_paths(&paths);
                self.publish_unreadable();
            }
        }
    }

    fn scan(&mut self) {
        let started = Instant::now();
        self.tailer.scan();
        self.full_scan_cost = started.elapsed();
        self.publish_unreadable();
    }

    fn publish_unreadable(&mut self) {
        let mut shared = self.unreadable.lock().unwrap_or_else(|p| p.into_inner());
        if *shared != *self.tailer.unreadable() {
            *shared = self.tailer.unreadable().clone();
        }
    }

    /// Puts the machine's facts before the first rows of each run this
    /// process has not told them for; returns those runs (a failed commit
    /// forgets them, so the retry tells them again).
    fn tell_machine(&mut self, rows: &mut Vec<Row>, read_time: f64) -> Vec<String> {
        let mut told = Vec::new();
        if self.machine.is_empty() || rows.iter().all(|r| self.machine_told.contains(&r.run_id)) {
            return told;
        }
        let mut out = Vec::with_capacity(rows.len() + 1);
        for row in rows.drain(..) {
            if self.machine_told.insert(row.run_id.clone()) {
                told.push(row.run_id.clone());
                out.push(Row {
                    run_id: row.run_id.clone(),
                    step: 0,
                    wall_time: read_time,
                    values: Default::default(),
                    event: Some(RunEvent::Machine(self.machine.clone())),
                    origin: Default::default(),
                });
            }
            out.push(row);
        }
        *rows = out;
        told
    }

    /// `first` and the batches of other files ready now, up to
    /// [`GROUP_BATCHES`] or [`GROUP_BYTES`], for one commit: a hundred runs
    /// written at once are two sled transactions per look, not a hundred.
    /// A batch that forgets a file is committed alone (its follow-up,
    /// dropping the checkpoint, is not part of the transaction).
    fn gather(&mut self, first: Batch) -> Vec<Batch> {
        let mut bytes = first.buf_len();
        let mut group = vec![first];
        while !group[0].forget
            && group.len() < GROUP_BATCHES
            && bytes < GROUP_BYTES
            && !self.tailer.forget_pending()
            && !self.stopping()
        {
            let Some(batch) = self.tailer.read() else {
                break;
            };
            if batch.forget {
                // A file gone and read to its end: its last batch. What was
                // gathered goes first, then this on its own.
                self.pending = Some(batch);
                break;
            }
            bytes += batch.buf_len();
            group.push(batch);
        }
        group
    }

    fn commit(&mut self, mut group: Vec<Batch>) -> Result<(), ()> {
        let read_time = now_secs();
        let mut rows = Vec::new();
        for batch in &mut group {
            self.extract(batch, read_time, &mut rows);
        }
        let told = self.tell_machine(&mut rows, read_time);
        let mut delta = Counters::default();
        let states: Vec<FileState> = group
            .iter()
            .map(|batch| {
                delta.add(&batch.delta);
                let mut state = batch.state.clone();
                state.counters.add(&batch.delta);
                state
            })
            .collect();
        let result = self
            .journal
            .commit_ingest(&states, rows, &delta)
            .and_then(|_| match &group[..] {
                [batch] if batch.forget => {
                    self.readers.forget(batch.state.id);
                    self.journal.forget_file(batch.state.id)
                }
                _ => Ok(()),
            });
        let outcome = match result {
            Ok(_) => {
                for batch in &group {
                    self.tailer.committed(batch);
                    self.silence.observe(batch, &self.extractor, &self.readers);
                }
                Ok(())
            }
            Err(e) => {
                let first = &group[0].state;
                tracing::error!(file = %first.path, offset = first.offset, files = group.len(), error = %e, "cannot commit rows; the lines will be read again");
                for run in told {
                    self.machine_told.remove(&run);
                }
                for batch in &group {
                    self.tailer.abandon(batch);
                }
                Err(())
            }
        };
        // The last batch of a gone file, read while gathering: on its own,
        // after what was read before it.
        if let Some(last) = self.pending.take() {
            if outcome.is_ok() {
                return self.commit(vec![last]);
            }
            self.tailer.abandon(&last);
        }
        outcome
    }

    /// Turns one batch's records into rows (appended to `rows`) and sets
    /// its counters.
    fn extract(&mut self, batch: &mut Batch, read_time: f64, all: &mut Vec<Row>) {
        let mut rows = Vec::with_capacity(batch.records.len());
        let mut delta = batch.delta;
        let path = batch.state.path.clone();
        match batch.state.kind {
            SourceKind::Lines => {
                // The memo goes with the offset: committed together, so a
                // restart resumes with what the next unread line needs.
                let mut memo = batch.state.memo.clone();
                let console = self.console.stream(&batch.state.source, &path);
                // Console lines: the time each was printed, as well as it
                // can be known (their own, else the file's), not when the
                // agent got to them.
                let times = match console {
                    Some(_) => {
                        let own: Vec<Option<f64>> = batch
                            .records
                            .iter()
                            .map(|r| self.extractor.line_time(batch.text(r)))
                            .collect();
                        let mtime =
                            (batch.state.mtime_ns > 0).then(|| batch.state.mtime_ns as f64 / 1e9);
                        console::line_times(&own, memo.console_time, read_time, mtime)
                    }
                    None => Vec::new(),
                };
                for (i, record) in batch.records.iter().enumerate() {
                    let text = batch.text(record);
                    let from = rows.len();
                    self.extractor.extract(
                        &path,
                        record.offset,
                        text,
                        read_time,
                        &mut memo,
                        &mut delta,
                        &mut rows,
                    );
                    if let Some(stderr) = console {
                        if let Some(row) = self.console.row(&path, &memo, stderr, text, times[i]) {
                            // A line that ends its run is in the run's
                            // console (before the end, as the SDK's last
                            // lines are before its finish); others follow
                            // their rows, which open and time the run.
                            let ends = rows[from..]
                                .iter()
                                .any(|r| matches!(r.event, Some(RunEvent::Finished(_))));
                            rows.insert(if ends { from } else { rows.len() }, row);
                        }
                    }
                }
                if let Some(&last) = times.last() {
                    memo.console_time = Some(last);
                }
                batch.state.memo = memo;
            }
            SourceKind::Document => {
                let mut memo = batch.state.memo.clone();
                for record in &batch.records {
                    let text = batch.text(record);
                    self.extractor
                        .extract_document(&path, text, read_time, &mut memo, &mut delta, &mut rows);
                }
                batch.state.memo = memo;
            }
            SourceKind::Tfevents => {
                let mut state = batch.state.clone();
                for record in &batch.records {
                    match self.readers.event(
                        &mut state,
                        record.offset,
                        batch.bytes(record),
                        &mut delta,
                    ) {
                        EventOutcome::Rows(r) => rows.extend(r),
                        EventOutcome::OwnFile => {
                            // One of the agent's own event files (its first
                            // record says so): never read it again.
                            tracing::debug!(file = %path, "event file written by mosaic-shipper itself; not read");
                            rows.clear();
                            batch.records.clear();
                            delta = Counters::default();
                            state.ignored = Some("written by mosaic-shipper".into());
                            break;
                        }
                    }
                }
                batch.state = state;
                if batch.state.ignored.is_none() && !batch.records.is_empty() {
                    // A worker's own event file: its run's logs now give
                    // way to it where they duplicate it, and TensorBoard
                    // is left to it.
                    if let Some(run) = self.readers.run_of(&batch.state) {
                        self.extractor.note_worker_tensorboard(&run);
                    }
                }
            }
        }
        if batch.state.kind != SourceKind::Tfevents {
            for row in &mut rows {
                if self.extractor.worker_writes_tensorboard(&row.run_id) {
                    row.origin = Origin::LogBesideEvents;
                }
            }
        }
        batch.delta = delta;
        all.append(&mut rows);
    }
}
