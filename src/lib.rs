//! mosaic-shipper: ships training metrics from what RL workers write
//! (text and JSON logs, their own TensorBoard event files, RLlib's
//! `result.json`, configuration documents) to TensorBoard and Weights &
//! Biases, exactly once.
//!
//! The pipeline, one way from sources to sinks:
//!
//! ```text
//!   files --source--> records --extract--> rows --journal (sled)--> sinks
//!           offsets -----------------------------^        cursors --^
//! ```
//!
//! - [`source`] reads what workers write: line files (JSON and text),
//!   TensorBoard event files and whole documents, as records with exact
//!   offsets, through rotation and truncation.
//! - [`extract`] turns records into [`row::Row`]s with configurable rules
//!   (and event records with no rules at all).
//! - [`journal`] commits rows and offsets in one transaction; it owns the
//!   types it stores (file checkpoints, the per-file memo).
//! - [`sink`] delivers rows behind per-sink durable cursors.
//! - [`ingest`] is the loop from sources to the journal; [`agent`] wires
//!   everything together with explicit shutdown.
//! - [`config`] is the configuration's schema; each room reads its section.
//! - [`init`] runs a command under the agent as a container's init process.
//! - [`signals`] takes the agent's signals from the start of `main`
//!   (blocked, then taken by a thread) and bounds a stop's drain;
//!   [`daemon`] is `run` without a command and what its signals do.
//! - [`sysmetrics`] samples the workers' processes and host (W&B's
//!   System tab) into the journal, as rows from no file.
//! - [`sync`] uploads what was staged for W&B (journal rows, offline run
//!   directories) from a connected machine.
//! - [`format`] holds wire formats shared by readers and writers
//!   (TFRecord framing, TensorBoard's event protos).
//! - [`metrics`] serves `/metrics`, `/health` and `/ready` (`[metrics]`).
//! - [`bundle`] carries rows staged for W&B between machines
//!   (`export`/`import`).
//! - [`explain`] says what the agent makes of one file, record by record
//!   (`explain`).

pub mod agent;
pub mod bundle;
pub mod config;
pub mod daemon;
pub mod explain;
pub mod extract;
pub mod format;
pub mod ingest;
pub mod init;
pub mod journal;
pub mod logging;
pub mod machine;
pub mod metrics;
pub mod row;
pub mod signals;
pub mod sink;
pub mod source;
pub mod stats;
pub mod status;
pub mod sync;
pub mod sysmetrics;
pub mod util;
