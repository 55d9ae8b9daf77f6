//! One compiled extraction rule: which lines it takes and how it maps
//! their parts onto [`Row`]s.
//!
//! A rule reads a line into a [`Reading`] (JSON: fields by dotted path;
//! text: allow-listed `key=value` pairs); one shared step then fills in
//! what the line lacks from the file's [`Memo`] and makes the rows.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::json::{Json, Object};

use super::pyjson::non_finite;
use super::text::TextKeys;
use super::time::parse_timestamp_as;
use crate::config::{NaiveTime, RuleConfig, RuleInput, RuleKind};
use crate::journal::Memo;
use crate::row::{Origin, Row, RunEvent};
use crate::stats::Counters;

/// A line, parsed once and offered to every rule.
#[derive(Debug)]
pub enum Line<'a> {
    Json(Object<'a>),
    Text(&'a str),
}

/// A rule compiled from its TOML form, so that paths are split and regexes
/// built once, not per line.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    /// See `RuleConfig::yields_to_tensorboard`.
    pub(super) yields_to_tensorboard: bool,
    /// Reads whole documents (`input = "document"`), not lines.
    document: bool,
    kind: RuleKind,
    run_id_from_path: Option<Regex>,
    naive_time: NaiveTime,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Json(JsonRule),
    Text(TextRule),
}

type FieldPath = Vec<String>;

#[derive(Debug)]
struct JsonRule {
    match_fields: Vec<(FieldPath, Value)>,
    present: Vec<FieldPath>,
    run_id: Vec<FieldPath>,
    step: Vec<FieldPath>,
    wall_time: Vec<FieldPath>,
    metrics: Vec<Metric>,
    exclude: Vec<FieldPath>,
    config: Option<FieldPath>,
    exit_code: Vec<FieldPath>,
    default_exit_code: i32,
}

#[derive(Debug)]
enum Metric {
    /// `field = "*"`: every number in the record, named by its path.
    Whole,
    Field(FieldPath, Option<String>),
}

/// A `match` or `present` condition a record fails.
enum Failed<'a> {
    Value {
        path: &'a FieldPath,
        want: &'a Value,
        got: Option<&'a Json<'a>>,
    },
    Absent {
        path: &'a FieldPath,
    },
}

#[derive(Debug)]
struct TextRule {
    pattern: Option<Regex>,
    keys: TextKeys,
}

/// What a rule made of a line.
#[derive(Debug, PartialEq)]
pub enum Applied {
    /// The line is not for this rule.
    NoMatch,
    /// It matched but lacks what a row needs.
    Rejected(String),
    /// It matched and this many rows were appended.
    Rows(usize),
    /// It matched, and all it carries was already emitted (a configuration
    /// repeated in every record).
    Repeated,
}

/// What a rule read from one line, before the memo fills the gaps.
#[derive(Debug, Default)]
struct Reading {
    run_id: Option<String>,
    step: Option<i64>,
    wall_time: Option<f64>,
    values: BTreeMap<String, f64>,
    /// The configuration object, as JSON text.
    config: Option<String>,
    exit_code: Option<i32>,
}

fn split_path(p: &str) -> FieldPath {
    p.split('.').map(str::to_string).collect()
}

fn lookup<'o, 'a>(obj: &'o Object<'a>, path: &[String]) -> Option<&'o Json<'a>> {
    let (first, rest) = path.split_first()?;
    let mut v = obj.get(first)?;
    for key in rest {
        v = v.as_object()?.get(key)?;
    }
    Some(v)
}

fn check_path(what: &str, p: &str) -> Result<(), String> {
    if p.is_empty() || p.split('.').any(str::is_empty) {
        return Err(format!("{what}: bad field path {p:?}"));
    }
    Ok(())
}

impl Rule {
    pub fn compile(c: &RuleConfig) -> Result<Rule, String> {
        let run_id_from_path = match &c.run_id_from_path {
            None => None,
            Some(re) => {
                let re =
                    super::patterns::compile(re).map_err(|e| format!("run_id_from_path: {e}"))?;
                if !re.capture_names().any(|n| n == Some("run_id")) {
                    return Err("run_id_from_path needs a named group (?P<run_id>...)".into());
                }
                Some(re)
            }
        };
        match c.kind {
            RuleKind::Metrics => {
                if c.metrics.is_empty() {
                    return Err("metrics names no field".into());
                }
                if c.step.is_empty() {
                    return Err("step names no field".into());
                }
                if !c.exit_code.is_empty() || c.default_exit_code != 0 {
                    return Err("a metrics rule takes no exit_code".into());
                }
            }
            RuleKind::Config => {
                if !c.metrics.is_empty() || !c.exit_code.is_empty() || c.default_exit_code != 0 {
                    return Err("a config rule takes `config`, not metrics or exit_code".into());
                }
            }
            RuleKind::Finished => {
                if !c.metrics.is_empty() || c.config.is_some() {
                    return Err("a finished rule takes `exit_code`, not metrics or config".into());
                }
            }
        }
        for m in &c.metrics {
            if !(m.field == "*" && c.input != RuleInput::Text) {
                check_path("metrics", &m.field)?;
            }
        }
        let body = match c.input {
            RuleInput::Json | RuleInput::Document => Body::Json(JsonRule::compile(c)?),
            RuleInput::Text => Body::Text(TextRule::compile(c)?),
        };
        Ok(Rule {
            name: c.name.clone(),
            yields_to_tensorboard: c.yields_to_tensorboard,
            document: c.input == RuleInput::Document,
            kind: c.kind,
            run_id_from_path,
            naive_time: c.naive_time,
            body,
        })
    }

    /// Whether the rule reads lines of this form (JSON or text), or, with
    /// `document`, whole documents.
    pub fn reads(&self, line: &Line, document: bool) -> bool {
        self.document == document
            && matches!(
                (&self.body, line),
                (Body::Json(_), Line::Json(_)) | (Body::Text(_), Line::Text(_))
            )
    }

    /// Applies the rule to a line read from `path`, appending its rows to
    /// `out`; `read_time` is the wall time used when the line carries
    /// none. `memo` is read and updated: the line's step and run id carry
    /// over to the lines after it.
    pub fn apply(
        &self,
        line: &Line,
        path: &str,
        read_time: f64,
        memo: &mut Memo,
        counters: &mut Counters,
        out: &mut Vec<Row>,
    ) -> Applied {
        let reading = match (&self.body, line) {
            (Body::Json(r), Line::Json(obj)) => {
                if r.failed(obj).next().is_some() {
                    return Applied::NoMatch;
                }
                match r.read(obj, self.kind, self.naive_time, counters) {
                    Ok(reading) => reading,
                    Err(why) => return Applied::Rejected(why),
                }
            }
            (Body::Text(r), Line::Text(text)) => match r.read(text, self.naive_time, memo) {
                Some(reading) => reading,
                None => return Applied::NoMatch,
            },
            _ => return Applied::NoMatch,
        };
        self.emit(reading, path, read_time, memo, out)
    }

    /// The time `line` says it was written, where this rule looks for one
    /// (a JSON rule's `wall_time` fields, a text rule's `wall_time` group),
    /// whether or not the rule takes the line: a console line is timed by
    /// what the rules can read of it.
    pub fn line_time(&self, line: &Line) -> Option<f64> {
        if self.document {
            return None;
        }
        match (&self.body, line) {
            (Body::Json(r), Line::Json(obj)) => r
                .wall_time
                .iter()
                .find_map(|p| lookup(obj, p).and_then(|v| as_wall_time(v, self.naive_time))),
            (Body::Text(r), Line::Text(text)) => {
                let caps = r.pattern.as_ref()?.captures(text)?;
                parse_timestamp_as(caps.name("wall_time")?.as_str(), self.naive_time)
            }
            _ => None,
        }
    }

    /// Whether the rule reads text lines, and how it reads a time without
    /// a zone.
    pub fn text_naive_time(&self) -> Option<NaiveTime> {
        matches!(self.body, Body::Text(_)).then_some(self.naive_time)
    }

    /// Why the rule did not take `line`: each condition it missed.
    pub fn misses(&self, line: &Line) -> Vec<String> {
        match (&self.body, line) {
            (Body::Json(r), Line::Json(obj)) => r.misses(obj),
            (Body::Text(r), Line::Text(text)) => r.misses(text),
            (Body::Json(_), Line::Text(_)) => vec!["the line is not a JSON object".into()],
            (Body::Text(_), Line::Json(_)) => vec!["the rule reads text, the line is JSON".into()],
        }
    }

    /// How many of the rule's `match` fields the line has, whatever their
    /// value: of two rules that miss as much, the one whose fields the
    /// record carries (python-json-logger's `message` with another text)
    /// is the nearer.
    pub fn fields_present(&self, line: &Line) -> usize {
        match (&self.body, line) {
            (Body::Json(r), Line::Json(obj)) => r
                .match_fields
                .iter()
                .filter(|(path, _)| lookup(obj, path).is_some())
                .count(),
            _ => 0,
        }
    }

    /// How many conditions decide whether the rule takes a line (JSON:
    /// `match` and `present` entries; text: one, a metric key).
    pub fn conditions(&self) -> usize {
        match &self.body {
            Body::Json(r) => r.match_fields.len() + r.present.len(),
            Body::Text(r) => 1 + usize::from(r.pattern.is_some()),
        }
    }

    /// The step shared by every rule: the run id (the line's own, else
    /// the path's, else the file's last), the step (the line's; for text,
    /// else the file's latest), the configuration once, then the row.
    fn emit(
        &self,
        r: Reading,
        path: &str,
        read_time: f64,
        memo: &mut Memo,
        out: &mut Vec<Row>,
    ) -> Applied {
        if let Some(id) = &r.run_id {
            memo.saw_run_id(id);
        }
        if let Some(step) = r.step {
            memo.step = Some(step);
        }
        let run_id = r
            .run_id
            .or_else(|| {
                let caps = self.run_id_from_path.as_ref()?.captures(path)?;
                Some(caps.name("run_id")?.as_str().to_string())
            })
            .or_else(|| memo.run_id.clone());
        let Some(run_id) = run_id else {
            return Applied::Rejected(
                "no run id: none in the line, its path, or an earlier record of the file".into(),
            );
        };
        let wall_time = r.wall_time.unwrap_or(read_time);
        let event_row = |event| Row {
            run_id: run_id.clone(),
            step: r.step.unwrap_or(0),
            wall_time,
            values: BTreeMap::new(),
            event: Some(event),
            origin: Origin::Log,
        };
        match self.kind {
            RuleKind::Config => {
                let Some(config) = r.config else {
                    return Applied::Rejected("no configuration object".into());
                };
                if !memo.config_is_new(&run_id, &config) {
                    return Applied::Repeated;
                }
                out.push(event_row(RunEvent::Config(config)));
                Applied::Rows(1)
            }
            RuleKind::Finished => {
                let code = r.exit_code.unwrap_or(0);
                out.push(event_row(RunEvent::Finished(code)));
                Applied::Rows(1)
            }
            RuleKind::Metrics => {
                // Text lines lean on the file's latest step (CleanRL's `SPS:`
                // line); a JSON record names its step or is incomplete.
                let carried = match self.body {
                    Body::Text(_) => memo.step,
                    Body::Json(_) => None,
                };
                let Some(step) = r.step.or(carried) else {
                    return Applied::Rejected(match self.body {
                        Body::Text(_) => {
                            "no integer step: none in the line nor in an earlier line of the file"
                                .into()
                        }
                        Body::Json(_) => "no integer step".into(),
                    });
                };
                let mut rows = 0;
                if let Some(config) = r.config {
                    if memo.config_is_new(&run_id, &config) {
                        let mut row = event_row(RunEvent::Config(config));
                        row.step = step;
                        out.push(row);
                        rows += 1;
                    }
                }
                if r.values.is_empty() {
                    return match rows {
                        0 => Applied::Rejected("no numeric metric value".into()),
                        n => Applied::Rows(n),
                    };
                }
                out.push(Row {
                    run_id,
                    step,
                    wall_time,
                    values: r.values,
                    event: None,
                    origin: Origin::Log,
                });
                Applied::Rows(rows + 1)
            }
        }
    }
}

impl JsonRule {
    fn compile(c: &RuleConfig) -> Result<JsonRule, String> {
        if c.pattern.is_some() {
            return Err("`pattern` is for input = \"text\" rules".into());
        }
        let mut match_fields = Vec::new();
        for (k, v) in &c.match_fields {
            check_path("match", k)?;
            let json = serde_json::to_value(v).map_err(|e| format!("match.{k}: {e}"))?;
            match_fields.push((split_path(k), json));
        }
        let paths = |what: &str, list: &[String]| -> Result<Vec<FieldPath>, String> {
            list.iter()
                .map(|p| check_path(what, p).map(|()| split_path(p)))
                .collect()
        };
        let config = match (&c.config, c.kind) {
            (Some(p), _) => Some(p.as_str()),
            (None, RuleKind::Config) => Some("config"),
            (None, _) => None,
        };
        // `*`: the whole record is the configuration (a document).
        if let Some(p) = config.filter(|p| *p != "*") {
            check_path("config", p)?;
        }
        let exit_code = if c.exit_code.is_empty() {
            vec![split_path("exit_code")]
        } else {
            paths("exit_code", &c.exit_code)?
        };
        Ok(JsonRule {
            match_fields,
            present: paths("present", &c.present)?,
            run_id: paths("run_id", &c.run_id)?,
            step: paths("step", &c.step)?,
            wall_time: paths("wall_time", &c.wall_time)?,
            metrics: c
                .metrics
                .iter()
                .map(|m| match m.field.as_str() {
                    "*" => Metric::Whole,
                    f => Metric::Field(split_path(f), m.tag.clone()),
                })
                .collect(),
            exclude: paths("exclude", &c.exclude)?,
            config: config.map(|p| if p == "*" { Vec::new() } else { split_path(p) }),
            exit_code,
            default_exit_code: c.default_exit_code,
        })
    }

    /// The conditions of `match` and `present` that `obj` fails, unformatted
    /// (the hot path only asks whether there is one); the rule takes the
    /// record when there are none.
    fn failed<'a>(&'a self, obj: &'a Object<'a>) -> impl Iterator<Item = Failed<'a>> + 'a {
        let wrong_value = self.match_fields.iter().filter_map(|(path, want)| {
            let got = lookup(obj, path);
            let ok = got.is_some_and(|got| match (got, want) {
                // 1 and 1.0 are the same number to a user writing TOML.
                (Json::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                _ => got.equals(want),
            });
            (!ok).then_some(Failed::Value { path, want, got })
        });
        let absent = self
            .present
            .iter()
            .filter(|path| lookup(obj, path).is_none())
            .map(|path| Failed::Absent { path });
        wrong_value.chain(absent)
    }

    /// [`failed`](Self::failed), in words.
    fn misses(&self, obj: &Object) -> Vec<String> {
        self.failed(obj)
            .map(|f| match f {
                Failed::Value {
                    path,
                    want,
                    got: None,
                } => format!("{} = {want} (absent)", path.join(".")),
                Failed::Value {
                    path,
                    want,
                    got: Some(got),
                } => format!(
                    "{} = {want} (the record has {})",
                    path.join("."),
                    short(got)
                ),
                Failed::Absent { path } => format!("{} present (absent)", path.join(".")),
            })
            .collect()
    }

    fn read(
        &self,
        obj: &Object,
        kind: RuleKind,
        naive: NaiveTime,
        counters: &mut Counters,
    ) -> Result<Reading, String> {
        let mut r = Reading {
            run_id: self.run_id.iter().find_map(|p| match lookup(obj, p)? {
                Json::Str(s) if !s.is_empty() => Some(s.to_string()),
                Json::Number(n) => Some(n.to_string()),
                _ => None,
            }),
            step: self
                .step
                .iter()
                .find_map(|p| lookup(obj, p).and_then(as_step)),
            wall_time: self
                .wall_time
                .iter()
                .find_map(|p| lookup(obj, p).and_then(|v| as_wall_time(v, naive))),
            ..Reading::default()
        };
        if let Some(path) = &self.config {
            let found = if path.is_empty() {
                Some(plain_json(&Value::Object(obj.to_map())).to_string())
            } else {
                lookup(obj, path)
                    .filter(|v| v.is_object())
                    .map(|v| plain_json(&v.to_value()).to_string())
            };
            match found {
                Some(text) => r.config = Some(text),
                _ if kind == RuleKind::Config => {
                    return Err(format!("no configuration object at {}", path.join(".")))
                }
                _ => {}
            }
        }
        if kind == RuleKind::Finished {
            let code = self.exit_code.iter().find_map(|p| {
                let n = lookup(obj, p)?.as_i64()?;
                i32::try_from(n).ok()
            });
            r.exit_code = Some(code.unwrap_or(self.default_exit_code));
        }
        let mut skip: Vec<&[String]> = self.exclude.iter().map(Vec::as_slice).collect();
        if let Some(config) = &self.config {
            skip.push(config);
        }
        for metric in &self.metrics {
            match metric {
                Metric::Whole => {
                    let mut at = Vec::new();
                    let mut name = String::new();
                    for (k, v) in obj.iter() {
                        at.push(k);
                        name.clear();
                        name.push_str(k);
                        let f = Flatten {
                            skip: &skip,
                            count_skipped: false,
                        };
                        f.collect(&mut name, &mut at, v, &mut r.values, counters);
                        at.pop();
                    }
                }
                Metric::Field(field, tag) => {
                    let Some(v) = lookup(obj, field) else {
                        continue;
                    };
                    let f = Flatten {
                        skip: &skip,
                        count_skipped: true,
                    };
                    if !v.is_object() {
                        // The common case, a number under its tag: the
                        // tag is the one string the row needs.
                        if f.skips(field) {
                            continue;
                        }
                        if let Some(x) = f.leaf(v, counters) {
                            let name = tag.clone().unwrap_or_else(|| field.join("/"));
                            r.values.insert(name, x);
                        }
                        continue;
                    }
                    let mut name = tag.clone().unwrap_or_default();
                    let mut at: Vec<&str> = field.iter().map(String::as_str).collect();
                    f.collect(&mut name, &mut at, v, &mut r.values, counters);
                }
            }
        }
        Ok(r)
    }
}

impl TextRule {
    fn compile(c: &RuleConfig) -> Result<TextRule, String> {
        if c.kind != RuleKind::Metrics {
            return Err("an input = \"text\" rule reads metrics (kind = \"metrics\")".into());
        }
        if !c.match_fields.is_empty() || !c.present.is_empty() {
            return Err(
                "`match` and `present` are for JSON rules; text rules take `pattern`".into(),
            );
        }
        if !c.exclude.is_empty() || c.config.is_some() || !c.wall_time.is_empty() {
            return Err(
                "`exclude`, `config` and `wall_time` are for JSON rules (text: the pattern's wall_time group)"
                    .into(),
            );
        }
        if c.metrics.iter().any(|m| m.field == "*") {
            return Err("a text rule names its metric keys; `*` is for JSON".into());
        }
        let pattern = match &c.pattern {
            None => None,
            Some(p) => Some(super::patterns::compile(p).map_err(|e| format!("pattern: {e}"))?),
        };
        let metrics = c
            .metrics
            .iter()
            .map(|m| {
                (
                    m.field.clone(),
                    m.tag.clone().unwrap_or_else(|| m.field.clone()),
                )
            })
            .collect();
        Ok(TextRule {
            pattern,
            keys: TextKeys::new(metrics, c.step.clone(), c.run_id.clone())?,
        })
    }

    /// The line's metrics, or `None` when it has no metric key with a
    /// number (an ordinary log line). A step alone is still noted in the
    /// memo: `Resuming from global_step=4096` is where the next `SPS`
    /// belongs.
    fn read(&self, line: &str, naive: NaiveTime, memo: &mut Memo) -> Option<Reading> {
        let caps = match &self.pattern {
            None => None,
            Some(re) => Some(re.captures(line)?),
        };
        let scan = self.keys.scan(line);
        if scan.values.is_empty() {
            if let Some(step) = scan.step {
                memo.step = Some(step);
            }
            return None;
        }
        let group = |name| caps.as_ref()?.name(name).map(|m| m.as_str());
        Some(Reading {
            run_id: group("run_id").map(str::to_string).or(scan.run_id),
            step: scan.step,
            wall_time: group("wall_time").and_then(|t| parse_timestamp_as(t, naive)),
            values: scan.values,
            ..Reading::default()
        })
    }

    fn misses(&self, line: &str) -> Vec<String> {
        if let Some(re) = &self.pattern {
            if !re.is_match(line) {
                return vec![format!("the line does not match pattern {:?}", re.as_str())];
            }
        }
        let scan = self.keys.scan(line);
        let mut missed: Vec<String> = scan
            .unreadable
            .iter()
            .map(|p| format!("{p}: the value is not one number"))
            .collect();
        if scan.values.is_empty() {
            let keys: Vec<&str> = self.keys.metric_keys().collect();
            missed.push(format!(
                "no metric key with a number (`key=value` or `Key: value`; keys: {})",
                keys.join(", ")
            ));
        }
        missed
    }
}

/// A JSON value shortened for an explanation.
fn short(v: &Json) -> String {
    let text = v.to_value().to_string();
    if text.chars().count() <= 40 {
        text
    } else {
        format!("{}…", text.chars().take(40).collect::<String>())
    }
}

/// `v` with the parser's markers for `NaN`/`Infinity` written as the strings
/// the jsonl sink uses, so a configuration's text holds no NUL markers.
fn plain_json(v: &Value) -> Value {
    match v {
        Value::String(s) => match non_finite(s) {
            Some(f) if f.is_nan() => Value::String("NaN".into()),
            Some(f) if f > 0.0 => Value::String("Infinity".into()),
            Some(_) => Value::String("-Infinity".into()),
            None => v.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(plain_json).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), plain_json(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

fn as_step(v: &Json) -> Option<i64> {
    match v {
        Json::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
        }),
        _ => None,
    }
}

fn as_wall_time(v: &Json, naive: NaiveTime) -> Option<f64> {
    match v {
        Json::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Json::Str(s) => parse_timestamp_as(s, naive),
        _ => None,
    }
}

/// Flattening of objects into `/`-joined metric names.
struct Flatten<'a> {
    /// Record paths left out (`exclude`, the configuration).
    skip: &'a [&'a [String]],
    /// Count strings, nulls and arrays as skipped values: yes for fields
    /// a rule names, no for a whole record (`*`), where they are the
    /// record's ordinary text (hostnames, dates, histograms).
    count_skipped: bool,
}

impl Flatten<'_> {
    /// Adds `v` (at record path `at`) under `name`. `name` is a buffer
    /// grown and cut back as objects are walked, so that a nested metric
    /// costs one `String` (its tag), not one per level.
    fn collect<'v>(
        &self,
        name: &mut String,
        at: &mut Vec<&'v str>,
        v: &'v Json,
        out: &mut BTreeMap<String, f64>,
        counters: &mut Counters,
    ) {
        if self.skips(at) {
            return;
        }
        match v {
            Json::Object(map) => {
                let len = name.len();
                for (k, child) in map.iter() {
                    if len > 0 {
                        name.push('/');
                    }
                    name.push_str(k);
                    at.push(k);
                    self.collect(name, at, child, out, counters);
                    at.pop();
                    name.truncate(len);
                }
            }
            _ => {
                if let Some(f) = self.leaf(v, counters) {
                    insert(out, name, f);
                }
            }
        }
    }

    /// Whether record path `at` is left out.
    fn skips<S: AsRef<str>>(&self, at: &[S]) -> bool {
        self.skip
            .iter()
            .any(|s| s.len() == at.len() && s.iter().zip(at.iter()).all(|(a, b)| a == b.as_ref()))
    }

    /// The number a value other than an object stands for, counting it
    /// as skipped when it is none and [`count_skipped`](Self::count_skipped).
    fn leaf(&self, v: &Json, counters: &mut Counters) -> Option<f64> {
        let f = match v {
            Json::Number(n) => return n.as_f64(),
            Json::Bool(b) => return Some(if *b { 1.0 } else { 0.0 }),
            Json::Str(s) => non_finite(s),
            Json::Null | Json::Array(_) | Json::Object(_) => None,
        };
        if f.is_none() && self.count_skipped {
            counters.skipped_values += 1;
        }
        f
    }
}

/// Sets `out[name] = value`, allocating the tag only when it is new.
fn insert(out: &mut BTreeMap<String, f64>, name: &str, value: f64) {
    match out.get_mut(name) {
        Some(slot) => *slot = value,
        None => {
            out.insert(name.to_string(), value);
        }
    }
}
