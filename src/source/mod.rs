//! Metric sources other than log lines.
//!
//! - [`tfevents`]: TensorBoard event files that workers write (torch's and
//!   tensorboardX's `SummaryWriter`, TensorBoard's own writer), decoded
//!   into scalar points, with W&B's naming of sub-directory files.

pub mod tfevents;
