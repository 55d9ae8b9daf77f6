//! The unit that flows from extraction to the sinks.

use std::collections::BTreeMap;

/// One metric record: the values a worker logged at one step of one run.
///
/// Values are `f64` because that is what every sink stores and what the
/// JSON numbers Python writes fit in; non-finite values are legal (Python
/// logs `NaN` losses and `Infinity` rates) and are kept, not dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub run_id: String,
    pub step: i64,
    /// Seconds since the Unix epoch.
    pub wall_time: f64,
    /// Metric tag (e.g. `charts/episodic_return`) to value, sorted by tag.
    pub values: BTreeMap<String, f64>,
    /// Set for records that are about the run rather than metrics at a
    /// step (then `values` is empty). Metric sinks (TensorBoard, jsonl)
    /// skip them; W&B uses them.
    pub event: Option<RunEvent>,
    /// What kind of input the row was read from.
    pub origin: Origin,
}

/// What kind of input a row was read from.
///
/// A worker often writes one point twice, to its text log and to its own
/// TensorBoard event file: the origin lets the TensorBoard sink leave the
/// worker's own event data alone, and the ingest keep one copy of a point
/// that two kinds of input carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// A line of a log file (JSON or text), or a whole document.
    #[default]
    Log,
    /// A worker's TensorBoard event file.
    Tfevents,
    /// A log line of a run whose worker writes TensorBoard event files
    /// itself: TensorBoard has what the worker put there, so the
    /// TensorBoard sink leaves the run to them.
    LogBesideEvents,
}

impl Origin {
    /// Whether the TensorBoard sink writes rows of this origin: only where
    /// the worker's own event files hold no copy, so that
    /// `tensorboard --logdir` never shows a point twice.
    pub fn for_tensorboard(self) -> bool {
        self == Origin::Log
    }

    /// The number stored in the journal (0 is the default, omitted).
    pub fn code(self) -> u32 {
        match self {
            Origin::Log => 0,
            Origin::Tfevents => 1,
            Origin::LogBesideEvents => 2,
        }
    }

    /// The origin of a stored code; unknown codes (a newer agent's) read
    /// as `Log`, which only makes the TensorBoard sink write them.
    pub fn from_code(code: u32) -> Origin {
        match code {
            1 => Origin::Tfevents,
            2 => Origin::LogBesideEvents,
            _ => Origin::Log,
        }
    }
}

/// Something a worker logged about its run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run's configuration (hyperparameters): a JSON object, as text.
    Config(String),
    /// The run ended with this exit code.
    Finished(i32),
    /// One line the worker printed (its console: W&B's Logs tab), without
    /// its newline, and whether it went to stderr.
    Console { stderr: bool, line: String },
    /// What the machine that read the run's files knows about it and the
    /// worker (host, OS, CPUs, memory; in init mode the worker's program,
    /// arguments and start): a JSON object, as text. Journaled with the
    /// rows, so that W&B shows the producing machine also when the rows
    /// are uploaded from another one (`stage`, `export`/`import`, `sync`).
    Machine(String),
    /// A sample of the worker's processes and host (W&B's System tab):
    /// the row's `values` are the metrics under the names the W&B SDK's
    /// system monitor gives them (`cpu`, `proc.memory.rssMB`,
    /// `gpu.0.temp`, ...), its `wall_time` when it was taken.
    System,
}

/// A row as the journal hands it to a sink: with its sequence number, the
/// position sinks acknowledge.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub row: RowRef,
}

/// A row inside the block of rows it was committed (or read back) with,
/// shared: every sink reads the same decoded rows, and the rows the
/// ingest has just committed reach the sinks without being encoded and
/// decoded again. Reads as a [`Row`]. Holding one holds its whole block
/// in memory: sinks keep rows only until their next acknowledgement.
#[derive(Clone)]
pub struct RowRef {
    block: std::sync::Arc<Vec<Row>>,
    index: usize,
}

impl RowRef {
    /// A row that is a block of its own.
    pub fn new(row: Row) -> RowRef {
        RowRef {
            block: std::sync::Arc::new(vec![row]),
            index: 0,
        }
    }

    /// Row `index` of `block`.
    pub fn in_block(block: &std::sync::Arc<Vec<Row>>, index: usize) -> RowRef {
        assert!(
            index < block.len(),
            "row {index} of a block of {}",
            block.len()
        );
        RowRef {
            block: block.clone(),
            index,
        }
    }

    /// Whether `other` is a row of the same block in memory (not a copy).
    pub fn shares_block_with(&self, other: &RowRef) -> bool {
        std::sync::Arc::ptr_eq(&self.block, &other.block)
    }

    /// The row, owned: taken out of its block when nothing else holds the
    /// block, cloned otherwise.
    pub fn into_row(self) -> Row {
        match std::sync::Arc::try_unwrap(self.block) {
            Ok(mut rows) => rows.swap_remove(self.index),
            Err(block) => block[self.index].clone(),
        }
    }
}

impl std::ops::Deref for RowRef {
    type Target = Row;

    fn deref(&self) -> &Row {
        &self.block[self.index]
    }
}

impl std::fmt::Debug for RowRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        Row::fmt(self, f)
    }
}

impl PartialEq for RowRef {
    fn eq(&self, other: &RowRef) -> bool {
        **self == **other
    }
}

impl PartialEq<Row> for RowRef {
    fn eq(&self, other: &Row) -> bool {
        **self == *other
    }
}
