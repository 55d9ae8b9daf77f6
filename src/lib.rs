//! mosaic-shipper: ships training metrics from RL workers' structured JSON
//! logs to TensorBoard and Weights & Biases, exactly once.
//!
//! The pipeline, one way from source to sinks:
//!
//! ```text
//!   log files --tail--> lines --extract--> rows --journal (sled)--> sinks
//!               offsets ------------------------^         cursors --^
//! ```
//!
//! - [`tail`] follows files through rotation and truncation and proposes
//!   batches of complete lines with byte offsets.
//! - [`extract`] turns JSON lines into [`row::Row`]s with configurable rules.
//! - [`journal`] commits rows and offsets in one transaction.
//! - [`sink`] delivers rows behind per-sink durable cursors.
//! - [`agent`] wires them together with explicit shutdown.
//! - [`init`] runs a command under the agent as a container's init process.
//! - [`sync`] uploads what was staged for W&B (journal rows, offline run
//!   directories) from a connected machine.
//! - [`format`] holds wire formats shared by readers and writers
//!   (TFRecord framing, TensorBoard's event protos).
//! - [`source`] reads what workers write: line files (JSON and text),
//!   TensorBoard event files and whole documents, as records with exact
//!   offsets.
//! - [`metrics`] serves `/metrics`, `/health` and `/ready` (`[metrics]`).
//! - [`bundle`] carries rows staged for W&B between machines
//!   (`export`/`import`).

pub mod agent;
pub mod bundle;
pub mod config;
pub mod extract;
pub mod format;
pub mod ingest;
pub mod init;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod row;
pub mod sink;
pub mod source;
pub mod stats;
pub mod status;
pub mod sync;
pub mod util;
