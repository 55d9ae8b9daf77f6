//! Small helpers shared by several modules.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as every sink stores wall time.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
