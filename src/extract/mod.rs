//! Turning log lines into rows.
//!
//! Each line is parsed as JSON (accepting Python's `NaN`/`Infinity`) and
//! offered to the configured rules in order; the first that matches makes a
//! row. Everything else is counted, never fatal: a worker's log is full of
//! ordinary lines, and a torn line must not stop the ones after it.

pub mod events;
pub mod pyjson;
mod rule;
mod time;

use serde_json::Value;

pub use self::time::parse_timestamp;
pub use pyjson::parse as parse_python_json;
pub use rule::{Applied, Rule};

use crate::config::ExtractConfig;
use crate::row::Row;
use crate::stats::Counters;

/// The compiled rule set.
#[derive(Debug)]
pub struct Extractor {
    rules: Vec<Rule>,
}

impl Extractor {
    pub fn new(config: &ExtractConfig) -> Result<Extractor, String> {
        let rules = config
            .rules
            .iter()
            .map(|r| Rule::compile(r).map_err(|e| format!("extract rule {:?}: {e}", r.name)))
            .collect::<Result<_, _>>()?;
        Ok(Extractor { rules })
    }

    /// Extracts the row in one complete line (without its newline) read
    /// from `path` at byte `offset`, counting what it is. Returns `None` for
    /// lines that carry no row.
    pub fn extract(
        &self,
        path: &str,
        offset: u64,
        line: &str,
        read_time: f64,
        counters: &mut Counters,
    ) -> Option<Row> {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('{') {
            // Foreign text (a traceback, a library printing to the stream).
            counters.unmatched += 1;
            return None;
        }
        let obj = match pyjson::parse(trimmed) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => {
                counters.unmatched += 1;
                return None;
            }
            Err(e) => {
                counters.invalid_json += 1;
                tracing::warn!(file = path, offset, error = %e, "skipping line: invalid JSON");
                return None;
            }
        };
        for rule in &self.rules {
            match rule.apply(&obj, path, read_time, counters) {
                Applied::NoMatch => continue,
                Applied::Row(row) => {
                    counters.rows += 1;
                    return Some(row);
                }
                Applied::Rejected(why) => {
                    counters.rejected += 1;
                    tracing::warn!(file = path, offset, rule = %rule.name, "skipping record: {why}");
                    return None;
                }
            }
        }
        counters.unmatched += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, EMBEDDED_DEFAULT};

    fn default_extractor() -> Extractor {
        Extractor::new(&Config::parse(EMBEDDED_DEFAULT, "t").unwrap().extract).unwrap()
    }

    const PATH: &str = "var/trainer/runs/01JABC/logs/cleanrl.stdout.log";

    #[test]
    fn flat_record_gets_cleanrl_names() {
        let mut c = Counters::default();
        let line = r#"{"timestamp": "2026-11-27T16:23:14.123Z", "level": "INFO", "logger": "w", "message": "metrics", "event": "metrics", "run_id": "01JXYZ", "global_step": 128, "episodic_return": NaN, "episodic_length": 42}"#;
        let row = default_extractor()
            .extract(PATH, 0, line, 0.0, &mut c)
            .unwrap();
        assert_eq!(row.run_id, "01JXYZ");
        assert_eq!(row.step, 128);
        assert!(
            (row.wall_time - 1795796594.123).abs() < 1e-6,
            "{}",
            row.wall_time
        );
        assert!(row.values["charts/episodic_return"].is_nan());
        assert_eq!(row.values["charts/episodic_length"], 42.0);
        assert_eq!(row.values.len(), 2);
    }

    #[test]
    fn nested_record_is_flattened() {
        let mut c = Counters::default();
        let line = r#"{"event": "metrics", "global_step": 256, "metrics": {"losses": {"policy_loss": 0.5, "value_loss": 3, "entropy": 0.25}, "charts": {"learning_rate": 0.00025, "SPS": Infinity, "note": "x", "done": true}}}"#;
        let row = default_extractor()
            .extract(PATH, 0, line, 7.0, &mut c)
            .unwrap();
        assert_eq!(row.run_id, "01JABC", "run id from the path");
        assert_eq!(row.wall_time, 7.0, "read time when the record has none");
        let tags: Vec<_> = row.values.keys().cloned().collect();
        assert_eq!(
            tags,
            [
                "charts/SPS",
                "charts/done",
                "charts/learning_rate",
                "losses/entropy",
                "losses/policy_loss",
                "losses/value_loss"
            ]
        );
        assert_eq!(row.values["charts/SPS"], f64::INFINITY);
        assert_eq!(row.values["charts/done"], 1.0);
        assert_eq!(c.skipped_values, 1);
    }

    #[test]
    fn config_and_run_finished_records_become_run_events() {
        use crate::row::RunEvent;
        let e = default_extractor();
        let mut c = Counters::default();
        let line = r#"{"event": "config", "run_id": "01JX", "config": {"lr": 0.00025, "env_id": "CartPole-v1"}}"#;
        let row = e.extract(PATH, 0, line, 5.0, &mut c).unwrap();
        assert_eq!(row.run_id, "01JX");
        assert!(row.values.is_empty());
        let Some(RunEvent::Config(text)) = row.event else {
            panic!("{row:?}")
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["lr"], 0.00025);
        let line = r#"{"event": "run_finished", "exit_code": 3}"#;
        let row = e.extract(PATH, 0, line, 5.0, &mut c).unwrap();
        assert_eq!(
            (row.run_id.as_str(), row.event),
            ("01JABC", Some(RunEvent::Finished(3)))
        );
        let line = r#"{"event": "config", "run_id": "01JX", "config": "lr=1"}"#;
        assert!(e.extract(PATH, 0, line, 5.0, &mut c).is_none());
        assert_eq!(c.rejected, 1, "a config record without an object");
    }

    #[test]
    fn ordinary_and_bad_lines_are_counted() {
        let e = default_extractor();
        let mut c = Counters::default();
        assert!(e
            .extract(
                PATH,
                0,
                r#"{"event": "heartbeat", "run_id": "r"}"#,
                0.0,
                &mut c
            )
            .is_none());
        assert!(e
            .extract(PATH, 0, "Traceback (most recent call last):", 0.0, &mut c)
            .is_none());
        assert!(e
            .extract(PATH, 0, r#"{"event": "metrics", "glo"#, 0.0, &mut c)
            .is_none());
        assert!(e
            .extract(
                PATH,
                0,
                r#"{"event": "metrics", "run_id": "r", "episodic_return": 1}"#,
                0.0,
                &mut c
            )
            .is_none());
        assert_eq!(
            (c.unmatched, c.invalid_json, c.rejected, c.rows),
            (2, 1, 1, 0)
        );
    }
}
