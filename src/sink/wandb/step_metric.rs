//! The worker's step as the x-axis of every metric: W&B's `define_metric`.
//!
//! W&B's own TensorBoard sync (wandb-core `core/internal/tensorboard/
//! tfeventconverter.go`, `ConvertNext`, and `emitter.go`, `historyRecord`)
//! writes every TF event as its own history row (`HistoryAction.Flush`)
//! carrying the event's step as the value `global_step`, so `_step` only
//! counts rows. The agent does the same, and declares `global_step` the
//! x-axis of every metric as `run.define_metric("*",
//! step_metric="global_step")` does. What that call sends was recorded from
//! wandb 0.31.0 (tests/fixtures/wandb-sdk-steps.json, made by
//! scripts/record-wandb-sdk): offline, one `MetricRecord` in the `.wandb`
//! log; online (and from `wandb sync`), `_wandb.m` entries in the run's
//! config, encoded as core's `runmetric.RunConfigMetrics.ToRunConfigData`
//! does (`core/internal/runmetric/runconfigmetrics.go`): field numbers as
//! keys, the step metric referred to by its one-based index.

use serde_json::{json, Map, Value};

use super::offline::records::{MetricOptions, MetricRecord};

/// The history key that carries the worker's step.
pub const STEP_KEY: &str = "global_step";

/// The record `run.define_metric("*", step_metric="global_step")` commits
/// (`wandb/sdk/wandb_metric.py`, `Metric._commit`: step_sync defaults to
/// true with a step metric; `defined` is always set).
pub fn declaration() -> MetricRecord {
    MetricRecord {
        glob_name: "*".into(),
        step_metric: STEP_KEY.into(),
        options: Some(MetricOptions {
            step_sync: true,
            hidden: false,
            defined: true,
        }),
        ..Default::default()
    }
}

/// One metric definition as core keeps it (`runmetric.definedMetric`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Defined {
    sync_step: bool,
    step: String,
    hidden: bool,
    explicit: bool,
    no_summary: bool,
    /// MetricSummary field numbers kept: min 1, max 2, mean 3, last 5,
    /// first 8 (core drops best and copy).
    summary: Vec<u32>,
    goal: i32,
}

impl Defined {
    /// Core's `definedMetric.With`.
    fn with(mut self, r: &MetricRecord) -> Defined {
        let o = r.options.clone().unwrap_or_default();
        self.sync_step |= o.step_sync;
        self.hidden |= o.hidden;
        if !r.step_metric.is_empty() {
            self.step = r.step_metric.clone();
        }
        if let Some(s) = &r.summary {
            self.no_summary = s.none;
            for (on, n) in [
                (s.min, 1),
                (s.max, 2),
                (s.mean, 3),
                (s.last, 5),
                (s.first, 8),
            ] {
                if on && !self.summary.contains(&n) {
                    self.summary.push(n);
                }
            }
            self.summary.sort_unstable();
        }
        if r.goal != 0 {
            self.goal = r.goal;
        }
        if !r.name.is_empty() {
            self.explicit = true;
        }
        self
    }
}

/// Metric definitions in the order first seen (core iterates Go maps, in
/// no fixed order; first-seen keeps the agent's output stable).
#[derive(Debug, Default)]
struct Definitions {
    named: Vec<(String, Defined)>,
    globs: Vec<(String, Defined)>,
}

fn upsert(list: &mut Vec<(String, Defined)>, key: &str, r: &MetricRecord) {
    let overwrite = r.control.as_ref().is_some_and(|c| c.overwrite);
    match list.iter_mut().find(|(k, _)| k == key) {
        Some((_, d)) => {
            let prev = if overwrite {
                Defined::default()
            } else {
                d.clone()
            };
            *d = prev.with(r);
        }
        None => list.push((key.to_string(), Defined::default().with(r))),
    }
}

/// The config's `_wandb.m` list for these `MetricRecord`s, in the order
/// they were logged, as 0.31.0 sends it (globs listed, not expanded per
/// key: the recording shows the SDK relies on the server for that).
pub fn config_entries(records: &[MetricRecord]) -> Vec<Value> {
    let mut defs = Definitions::default();
    for r in records {
        if !r.name.is_empty() {
            upsert(&mut defs.named, &r.name, r);
        } else if !r.glob_name.is_empty() {
            upsert(&mut defs.globs, &r.glob_name, r);
        }
        // Only a step metric: an explicit x-axis, nothing to record.
    }
    let mut out: Vec<Option<Value>> = Vec::new();
    let mut index: Vec<String> = Vec::new();
    let named = defs.named.clone();
    for (name, d) in &named {
        encode(name, d, false, &defs, &mut out, &mut index);
    }
    for (name, d) in &defs.globs {
        encode(name, d, true, &defs, &mut out, &mut index);
    }
    out.into_iter().map(|v| v.expect("filled")).collect()
}

/// Core's `encodeToRunConfigData`: reserves the metric's slot, makes sure
/// its step metric has one, then fills the slot.
fn encode(
    name: &str,
    d: &Defined,
    glob: bool,
    defs: &Definitions,
    out: &mut Vec<Option<Value>>,
    index: &mut Vec<String>,
) {
    // Globs and names share one index, as in core (keyed by the name).
    if index.iter().any(|n| n == name) {
        return;
    }
    let slot = out.len();
    index.push(name.to_string());
    out.push(None);
    let mut m = Map::new();
    m.insert(if glob { "2" } else { "1" }.into(), json!(name));
    if !d.step.is_empty() {
        let step_def = defs
            .named
            .iter()
            .find(|(k, _)| *k == d.step)
            .map(|(_, d)| d.clone())
            .unwrap_or_default();
        encode(&d.step, &step_def, false, defs, out, index);
        let at = index.iter().position(|n| *n == d.step).expect("encoded");
        m.insert("5".into(), json!(at + 1));
    }
    let options: Vec<u32> = [(d.sync_step, 1), (d.hidden, 2), (d.explicit, 3)]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
    m.insert("6".into(), json!(options));
    let mut summary = d.summary.clone();
    if d.no_summary {
        summary.push(6);
        summary.sort_unstable();
    }
    m.insert("7".into(), json!(summary));
    if d.goal != 0 {
        m.insert("8".into(), json!(d.goal));
    }
    out[slot] = Some(Value::Object(m));
}

/// The declaration's config entries: what the online sink sends.
pub fn agent_config_entries() -> Vec<Value> {
    config_entries(&[declaration()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::wandb::offline::records::MetricSummary;

    #[test]
    fn glob_with_step_metric_encodes_as_the_sdk_sends_it() {
        // As recorded from wandb 0.31.0 (tests/fixtures/wandb-sdk-steps.json).
        assert_eq!(
            Value::Array(agent_config_entries()),
            json!([{"2": "*", "5": 2, "6": [1], "7": []}, {"1": "global_step", "6": [], "7": []}])
        );
    }

    #[test]
    fn definitions_merge_and_refer_to_defined_steps() {
        let loss = MetricRecord {
            name: "loss".into(),
            step_metric: "epoch".into(),
            summary: Some(MetricSummary {
                min: true,
                ..Default::default()
            }),
            options: Some(MetricOptions {
                defined: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let epoch = MetricRecord {
            name: "epoch".into(),
            options: Some(MetricOptions {
                hidden: true,
                defined: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let again = MetricRecord {
            name: "loss".into(),
            goal: 1,
            ..Default::default()
        };
        assert_eq!(
            Value::Array(config_entries(&[loss, epoch, again])),
            json!([
                {"1": "loss", "5": 2, "6": [3], "7": [1], "8": 1},
                {"1": "epoch", "6": [2, 3], "7": []}
            ])
        );
    }
}
