//! The front of the house: reading what workers write.
//!
//! Every kind of input is a room of its own behind one small contract: a
//! followed file yields *records*, each with the exact byte offset it
//! starts at, and the checkpoint (`journal::FileState`) that taking them
//! leads to. The journal commits the rows made of a batch of records with
//! that checkpoint in one transaction, which is what makes a crash
//! harmless for every kind alike.
//!
//! - [`follow`] finds files, tells them apart through rotation and
//!   truncation, and reads their bytes; it does not know what they mean.
//! - [`framing`] cuts those bytes into records: lines (JSON or text),
//!   TFRecord frames (TensorBoard event files), whole documents.
//! - [`artifacts`] finds checkpoint files and says when they are complete;
//!   they are shipped whole, as W&B artifacts, not as records.

pub mod artifacts;
pub mod follow;
pub mod framing;
pub mod tfevents;

pub use follow::{Batch, Record, Tailer};
