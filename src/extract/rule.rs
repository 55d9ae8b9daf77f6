//! One compiled extraction rule: which records it takes and how it maps
//! their fields onto a [`Row`].

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::{Map, Value};

use super::pyjson::non_finite;
use crate::config::{RuleConfig, RuleKind};
use crate::row::{Row, RunEvent};
use crate::stats::Counters;

/// A rule compiled from its TOML form, so that paths are split and regexes
/// built once, not per line.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    kind: RuleKind,
    config: Vec<String>,
    exit_code: Vec<Vec<String>>,
    match_fields: Vec<(Vec<String>, Value)>,
    run_id: Vec<Vec<String>>,
    run_id_from_path: Option<Regex>,
    step: Vec<Vec<String>>,
    wall_time: Vec<Vec<String>>,
    metrics: Vec<(Vec<String>, Option<String>)>,
}

/// What a rule made of a record.
#[derive(Debug)]
pub enum Applied {
    /// The record is not for this rule.
    NoMatch,
    /// It matched but lacks what a row needs; the reason is logged.
    Rejected(&'static str),
    Row(Row),
}

fn split_path(p: &str) -> Vec<String> {
    p.split('.').map(str::to_string).collect()
}

fn lookup<'a>(obj: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = obj.get(first)?;
    for key in rest {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

impl Rule {
    pub fn compile(c: &RuleConfig) -> Result<Rule, String> {
        let mut match_fields = Vec::new();
        for (k, v) in &c.match_fields {
            let json = serde_json::to_value(v).map_err(|e| format!("match.{k}: {e}"))?;
            match_fields.push((split_path(k), json));
        }
        let run_id_from_path = match &c.run_id_from_path {
            None => None,
            Some(re) => {
                let re = Regex::new(re).map_err(|e| format!("run_id_from_path: {e}"))?;
                if !re.capture_names().any(|n| n == Some("run_id")) {
                    return Err("run_id_from_path needs a named group (?P<run_id>...)".into());
                }
                Some(re)
            }
        };
        if c.run_id.is_empty() && run_id_from_path.is_none() {
            return Err("give run_id fields or run_id_from_path".into());
        }
        match c.kind {
            RuleKind::Metrics => {
                if c.step.is_empty() {
                    return Err("step names no field".into());
                }
                if c.metrics.is_empty() {
                    return Err("metrics names no field".into());
                }
            }
            RuleKind::Config if !c.metrics.is_empty() || !c.exit_code.is_empty() => {
                return Err("a config rule takes `config`, not metrics or exit_code".into());
            }
            RuleKind::Finished if !c.metrics.is_empty() || c.config.is_some() => {
                return Err("a finished rule takes `exit_code`, not metrics or config".into());
            }
            _ => {}
        }
        for m in &c.metrics {
            if m.field.is_empty() || m.field.split('.').any(str::is_empty) {
                return Err(format!("metrics: bad field path {:?}", m.field));
            }
        }
        Ok(Rule {
            name: c.name.clone(),
            kind: c.kind,
            config: split_path(c.config.as_deref().unwrap_or("config")),
            exit_code: if c.exit_code.is_empty() {
                vec![split_path("exit_code")]
            } else {
                c.exit_code.iter().map(|p| split_path(p)).collect()
            },
            match_fields,
            run_id: c.run_id.iter().map(|p| split_path(p)).collect(),
            run_id_from_path,
            step: c.step.iter().map(|p| split_path(p)).collect(),
            wall_time: c.wall_time.iter().map(|p| split_path(p)).collect(),
            metrics: c
                .metrics
                .iter()
                .map(|m| (split_path(&m.field), m.tag.clone()))
                .collect(),
        })
    }

    fn matches(&self, obj: &Map<String, Value>) -> bool {
        self.match_fields.iter().all(|(path, want)| {
            lookup(obj, path).is_some_and(|got| match (got, want) {
                // 1 and 1.0 are the same number to a user writing TOML.
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => got == want,
            })
        })
    }

    /// Applies the rule to a parsed record read from `path`; `read_time` is
    /// the wall time used when the record carries none.
    pub fn apply(
        &self,
        obj: &Map<String, Value>,
        path: &str,
        read_time: f64,
        counters: &mut Counters,
    ) -> Applied {
        if !self.matches(obj) {
            return Applied::NoMatch;
        }
        let Some(run_id) = self.run_id(obj, path) else {
            return Applied::Rejected("no run id in the record or its path");
        };
        let step = self
            .step
            .iter()
            .find_map(|p| lookup(obj, p).and_then(as_step));
        let wall_time = self
            .wall_time
            .iter()
            .find_map(|p| lookup(obj, p).and_then(as_wall_time))
            .unwrap_or(read_time);
        let event = match self.kind {
            RuleKind::Metrics => None,
            RuleKind::Config => match lookup(obj, &self.config) {
                Some(v @ Value::Object(_)) => Some(RunEvent::Config(v.to_string())),
                _ => return Applied::Rejected("no configuration object"),
            },
            RuleKind::Finished => {
                let code = self.exit_code.iter().find_map(|p| {
                    let n = lookup(obj, p)?.as_i64()?;
                    i32::try_from(n).ok()
                });
                Some(RunEvent::Finished(code.unwrap_or(0)))
            }
        };
        if let Some(event) = event {
            // About the run, not a step: the step is what the record says,
            // or 0.
            return Applied::Row(Row {
                run_id,
                step: step.unwrap_or(0),
                wall_time,
                values: BTreeMap::new(),
                event: Some(event),
                origin: Default::default(),
            });
        }
        let Some(step) = step else {
            return Applied::Rejected("no integer step");
        };
        let mut values = BTreeMap::new();
        for (field, tag) in &self.metrics {
            if let Some(v) = lookup(obj, field) {
                let name = tag.clone().unwrap_or_else(|| match v {
                    Value::Object(_) => String::new(),
                    _ => field.join("/"),
                });
                collect(&name, v, &mut values, counters);
            }
        }
        if values.is_empty() {
            return Applied::Rejected("no numeric metric value");
        }
        Applied::Row(Row {
            run_id,
            step,
            wall_time,
            values,
            event: None,
            origin: Default::default(),
        })
    }

    fn run_id(&self, obj: &Map<String, Value>, path: &str) -> Option<String> {
        let from_field = self.run_id.iter().find_map(|p| match lookup(obj, p)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        from_field.or_else(|| {
            let caps = self.run_id_from_path.as_ref()?.captures(path)?;
            Some(caps.name("run_id")?.as_str().to_string())
        })
    }
}

fn as_step(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        _ => None,
    }
}

fn as_wall_time(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => super::time::parse_timestamp(s),
        _ => None,
    }
}

/// Adds `v` under `name`, flattening objects with `/`.
fn collect(name: &str, v: &Value, out: &mut BTreeMap<String, f64>, counters: &mut Counters) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let child_name = if name.is_empty() {
                    k.clone()
                } else {
                    format!("{name}/{k}")
                };
                collect(&child_name, child, out, counters);
            }
        }
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(name.to_string(), f);
            }
        }
        Value::Bool(b) => {
            out.insert(name.to_string(), if *b { 1.0 } else { 0.0 });
        }
        Value::String(s) => match non_finite(s) {
            Some(f) => {
                out.insert(name.to_string(), f);
            }
            None => counters.skipped_values += 1,
        },
        Value::Null | Value::Array(_) => counters.skipped_values += 1,
    }
}
