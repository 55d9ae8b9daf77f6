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
}

/// Something a worker logged about its run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run's configuration (hyperparameters): a JSON object, as text.
    Config(String),
    /// The run ended with this exit code.
    Finished(i32),
}

/// A row as the journal hands it to a sink: with its sequence number, the
/// position sinks acknowledge.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub seq: u64,
    pub row: Row,
}
