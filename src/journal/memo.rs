//! What extraction remembers between the lines of one file.
//!
//! The journal owns it because it stores it, in each file's checkpoint;
//! `extract` fills it in.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Facts carried from earlier lines of a file to later ones.
///
/// A worker's lines are not self-contained: CleanRL's `SPS: 2224` has no
/// step (it belongs to the latest `global_step`), text lines after a
/// lifecycle record carry no run id, and RLlib repeats the whole config in
/// every result. The ingest loop keeps one per file in the file's
/// checkpoint, committed with the offset, so a restart resumes with the
/// memo that goes with the next unread line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Memo {
    /// The latest step read from a line of this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<i64>,
    /// The run id last read from a record's own field (not from the path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Digest of the last configuration emitted (with its run id), so a
    /// configuration repeated in every record becomes one row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<u64>,
    /// The time given to this file's last console line: the next one's
    /// is never earlier (`extract::console::line_times`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_time: Option<f64>,
}

impl Memo {
    /// Notes a run id read from a record. A different run starts afresh:
    /// the step of another run is not this one's.
    pub(crate) fn saw_run_id(&mut self, run_id: &str) {
        if self.run_id.as_deref() != Some(run_id) {
            if self.run_id.is_some() {
                self.step = None;
            }
            self.run_id = Some(run_id.to_string());
        }
    }

    /// True (and remembered) when `config` for `run_id` differs from the
    /// last configuration emitted.
    pub(crate) fn config_is_new(&mut self, run_id: &str, config: &str) -> bool {
        let digest = digest(run_id, config);
        if self.config_digest == Some(digest) {
            return false;
        }
        self.config_digest = Some(digest);
        true
    }
}

fn digest(run_id: &str, config: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(run_id.as_bytes());
    h.update([0]);
    h.update(config.as_bytes());
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("32 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_run_forgets_the_step_and_configs_are_told_apart() {
        let mut m = Memo::default();
        m.saw_run_id("A");
        m.step = Some(5);
        m.saw_run_id("A");
        assert_eq!(m.step, Some(5));
        m.saw_run_id("B");
        assert_eq!((m.step, m.run_id.as_deref()), (None, Some("B")));
        assert!(m.config_is_new("B", "{}"));
        assert!(!m.config_is_new("B", "{}"));
        assert!(m.config_is_new("A", "{}"), "another run's config");
        assert!(m.config_is_new("A", r#"{"lr":1}"#));
    }

    #[test]
    fn round_trips_through_json_and_reads_old_checkpoints() {
        let m = Memo {
            step: Some(-3),
            run_id: Some("01K".into()),
            config_digest: Some(u64::MAX),
            console_time: Some(1796176183.30864),
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Memo>(&text).unwrap(), m);
        assert_eq!(serde_json::from_str::<Memo>("{}").unwrap(), Memo::default());
        assert_eq!(serde_json::to_string(&Memo::default()).unwrap(), "{}");
    }
}
