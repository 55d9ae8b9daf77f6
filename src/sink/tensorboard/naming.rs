//! Event file names, as TensorBoard's own writers choose them.
//!
//! `tensorboard/summary/writer/event_file_writer.py` names a file
//! `events.out.tfevents.%010d.<hostname>.<pid>.<counter>`: TensorBoard finds
//! event files by the `tfevents` substring, and the zero-padded seconds
//! make lexicographic order (the order its loaders read files in) follow
//! creation time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sink::template::safe_component;

/// Distinguishes files created by this process within one second.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The name of a new event file created at `secs` (epoch seconds).
pub fn event_file_name(secs: f64, hostname: &str) -> String {
    format!(
        "events.out.tfevents.{:010}.{}.{}.{}",
        secs.max(0.0) as u64,
        hostname,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// This machine's host name, made safe for a file name (it ends up in
/// one); "localhost" when it cannot be read.
pub fn hostname() -> String {
    match crate::util::hostname() {
        Some(h) => safe_component(&h),
        None => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time_and_are_unique() {
        let a = event_file_name(999_999_999.9, "h");
        let b = event_file_name(1_700_000_000.0, "h");
        let c = event_file_name(1_700_000_000.0, "h");
        assert!(a.starts_with("events.out.tfevents.0999999999.h."), "{a}");
        assert!(a < b, "{a} < {b}");
        assert_ne!(b, c);
        assert!(!hostname().is_empty());
        assert!(!hostname().contains('/'));
    }
}
