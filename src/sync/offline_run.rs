//! One W&B offline run directory, read into what an upload needs.
//!
//! Directories come from our `wandb-offline` sink or from the SDK's own
//! offline mode; both hold `run-<id>.wandb`, a transaction log of `Record`
//! protobufs. Like `wandb sync` (docs/wandb-protocol.md §6.2) the records
//! are replayed as they are: the run record names the run, config records
//! merge into its config, metric records become its `_wandb.m` metric
//! definitions, each history record is one history line, summary records
//! merge into the summary, and an exit record finishes the run. What the
//! SDK writes besides ([`super::sdk_records`]) is replayed as `wandb sync`
//! replays it too: stats records become the run's system metrics
//! (`wandb-events.jsonl`), console records its `output.log` lines,
//! environment records its `wandb-metadata.json` and `_wandb.e`, and
//! telemetry records `_wandb.t`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::Value;
use thiserror::Error;

use super::sdk_records::{
    self, sdk_record::Kind, seconds, telemetry_fields, timestamp_json, OutputRecord, SdkRecord,
    StatsRecord, Telemetry,
};
use crate::sink::wandb::offline::records::{
    record::RecordType, HistoryRecord, Item, MetricRecord, Record, Timestamp,
};
use crate::sink::wandb::offline::txlog::{self, Stop};

/// Why a directory cannot be uploaded at all.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Invalid { path: PathBuf, detail: String },
}

/// A JSON document assembled from W&B items, whose values are W&B's
/// extended JSON text (bare `NaN`, `Infinity`): kept as text, so values
/// reach the server exactly as they were logged, digits and all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc(BTreeMap<String, Node>);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(String),
    Map(Doc),
}

impl Doc {
    /// Sets the value at `path` (a key, or an item's nested key).
    fn set(&mut self, path: &[String], value_json: &str) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut doc = self;
        for p in parents {
            let node = doc
                .0
                .entry(p.clone())
                .or_insert_with(|| Node::Map(Doc::default()));
            if let Node::Leaf(_) = node {
                *node = Node::Map(Doc::default());
            }
            let Node::Map(inner) = node else {
                unreachable!("made a map above")
            };
            doc = inner;
        }
        doc.0
            .insert(last.clone(), Node::Leaf(value_json.to_string()));
    }

    fn remove(&mut self, path: &[String]) {
        if let [only] = path {
            self.0.remove(only);
        } else if let Some((first, rest)) = path.split_first() {
            if let Some(Node::Map(inner)) = self.0.get_mut(first) {
                inner.remove(rest);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The document as W&B extended JSON text.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k).expect("strings serialise"));
            out.push(':');
            match v {
                Node::Leaf(text) => out.push_str(text),
                Node::Map(d) => out.push_str(&d.to_json()),
            }
        }
        out.push('}');
        out
    }

    /// The document as a JSON value, for GraphQL variables: a non-finite
    /// number becomes its name as a string (strict JSON has none), text
    /// that is not JSON at all becomes a string.
    pub fn to_value(&self) -> serde_json::Map<String, Value> {
        self.0
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Node::Leaf(text) => crate::extract::pyjson::parse(text)
                        .map(strict)
                        .unwrap_or_else(|_| Value::String(text.clone())),
                    Node::Map(d) => Value::Object(d.to_value()),
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// Replaces pyjson's non-finite markers with the tokens' names.
fn strict(v: Value) -> Value {
    match v {
        Value::String(s) => match crate::extract::pyjson::non_finite(&s) {
            Some(f) if f.is_nan() => Value::String("NaN".into()),
            Some(f) if f > 0.0 => Value::String("Infinity".into()),
            Some(_) => Value::String("-Infinity".into()),
            None => Value::String(s),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(strict).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, strict(v))).collect()),
        v => v,
    }
}

/// An item's key path: `nested_key` when set (the SDK uses it even for
/// flat keys), else `key`.
fn path(item: &Item) -> Vec<String> {
    if item.nested_key.is_empty() {
        vec![item.key.clone()]
    } else {
        item.nested_key.clone()
    }
}

/// Everything an upload needs from one directory.
#[derive(Debug, Clone)]
pub struct OfflineRun {
    pub dir: PathBuf,
    /// The transaction log, `run-<id>.wandb`.
    pub file: PathBuf,
    /// The W&B run id, from the run record.
    pub run_id: String,
    pub entity: Option<String>,
    pub project: Option<String>,
    pub display_name: Option<String>,
    pub host: Option<String>,
    /// The logged config (without `_wandb`).
    pub config: serde_json::Map<String, Value>,
    /// The metric definitions (`define_metric`), in log order.
    pub metrics: Vec<MetricRecord>,
    /// History records in the log (up to `stop`): the lines to upload,
    /// read again in order with [`OfflineRun::history`].
    pub history_lines: u64,
    /// The last history line (the summary when there are no summary
    /// records).
    pub last_line: Option<String>,
    /// The summary as the summary records left it.
    pub summary: Doc,
    /// The exit record's code: the run finished.
    pub exit_code: Option<i32>,
    /// Where reading stopped before the end of the file, if it did.
    pub stop: Option<Stop>,
    /// What the SDK's own records add (system metrics, console, machine).
    pub sdk: SdkParts,
    /// Artifact records (`run.log_artifact` offline, or the agent's
    /// checkpoints), in log order.
    pub artifacts: Vec<crate::sink::wandb::offline::records::ArtifactRecord>,
}

/// What a log holds besides rows, config and summary: the system
/// metrics, console output and machine facts the SDK records (the
/// agent's offline sink writes system metrics too).
#[derive(Debug, Clone, Default)]
pub struct SdkParts {
    /// `wandb-events.jsonl` lines, one per stats record, as core writes
    /// them: `_wandb`, `_timestamp`, `_runtime` (from the run's start) and
    /// each metric as `system.<name>`.
    pub events: Vec<String>,
    /// `output.log` lines, as core streams them: `<UTC time> <text>` for
    /// stdout, `ERROR <UTC time> <text>` for stderr.
    pub console: Vec<String>,
    /// The merged environment record of each writer, by writer id
    /// (`_wandb.e`), in the order first seen.
    pub environment: Vec<(String, serde_json::Map<String, Value>)>,
    /// The telemetry records merged (`_wandb.t`), by field number.
    pub telemetry: BTreeMap<u64, Telemetry>,
    /// `_wandb` as the config records set it (the SDK writes `{}`).
    pub config_wandb: Option<serde_json::Map<String, Value>>,
}

impl SdkParts {
    /// Whether the log carries the SDK's own description of the run
    /// (then `_wandb` is made from it, as `wandb sync` makes it).
    pub fn from_sdk(&self) -> bool {
        !self.telemetry.is_empty() || !self.environment.is_empty()
    }

    /// `wandb-metadata.json`: the first writer's environment.
    pub fn metadata(&self) -> Option<Value> {
        self.environment
            .first()
            .map(|(_, e)| Value::Object(e.clone()))
    }

    /// `_wandb` as core fills it for a synced run (`AddInternalData`):
    /// the config records' `_wandb`, `cli_version` and `python_version`
    /// from telemetry, `t`, `m` (the metric definitions given) and `e`.
    pub fn wandb_value(&self, metrics: Vec<Value>) -> Value {
        let mut w = self.config_wandb.clone().unwrap_or_default();
        let text = |n: u64| match self.telemetry.get(&n) {
            Some(Telemetry::Text(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        if let Some(v) = text(5) {
            w.insert("cli_version".into(), Value::String(v));
        }
        if let Some(v) = text(4) {
            w.insert("python_version".into(), Value::String(v));
        }
        let t: serde_json::Map<String, Value> = self
            .telemetry
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_json()))
            .collect();
        w.insert("t".into(), Value::Object(t));
        w.insert("m".into(), Value::Array(metrics));
        if !self.environment.is_empty() {
            let e: serde_json::Map<String, Value> = self
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), Value::Object(v.clone())))
                .collect();
            w.insert("e".into(), Value::Object(e));
        }
        Value::Object(w)
    }
}

/// Console output cut into `output.log` lines, per stream: a line is
/// complete at its newline; a carriage return starts the line over (a
/// progress bar's redraw), as a terminal shows it.
#[derive(Debug, Default)]
struct ConsoleLines {
    /// Per stream (0 stderr, 1 stdout): the open line and when it began.
    open: [Option<(String, Timestamp)>; 2],
    lines: Vec<String>,
}

impl ConsoleLines {
    fn push(&mut self, out: &OutputRecord) {
        let stream = usize::from(out.output_type == 1);
        let at = out.timestamp.clone().unwrap_or_default();
        for (i, piece) in out.line.split('\n').enumerate() {
            if i > 0 {
                self.end_line(stream);
            }
            if piece.is_empty() {
                continue;
            }
            let slot = self.open[stream].get_or_insert_with(|| (String::new(), at.clone()));
            match piece.rfind('\r') {
                Some(cr) => {
                    slot.0.clear();
                    slot.0.push_str(&piece[cr + 1..]);
                }
                None => slot.0.push_str(piece),
            }
        }
    }

    fn end_line(&mut self, stream: usize) {
        let (text, at) = self.open[stream]
            .take()
            .unwrap_or_else(|| (String::new(), Timestamp::default()));
        let prefix = if stream == 0 { "ERROR " } else { "" };
        self.lines
            .push(format!("{prefix}{} {text}", console_time(&at)));
    }

    fn finish(mut self) -> Vec<String> {
        for stream in 0..2 {
            if self.open[stream].is_some() {
                self.end_line(stream);
            }
        }
        self.lines
    }
}

/// A console line's time as core writes it: UTC, microseconds, no zone
/// (`2026-12-02T05:10:57.135283`).
fn console_time(t: &Timestamp) -> String {
    let full = timestamp_json(&Timestamp {
        seconds: t.seconds,
        nanos: (t.nanos.max(0) / 1000) * 1000,
    });
    // Always six digits.
    let base = &full[..19];
    format!("{base}.{:06}", t.nanos.max(0) / 1000)
}

/// One stats record as a `wandb-events.jsonl` line.
fn events_line(stats: &StatsRecord, start: f64) -> Option<String> {
    let at = seconds(stats.timestamp.as_ref()?);
    let mut line = Doc::default();
    line.set(&["_wandb".to_string()], "true");
    let mut num = String::new();
    crate::sink::wandb::filestream::push_number(&mut num, at);
    line.set(&["_timestamp".to_string()], &num);
    num.clear();
    crate::sink::wandb::filestream::push_number(&mut num, at - start);
    line.set(&["_runtime".to_string()], &num);
    for item in &stats.item {
        line.set(&[format!("system.{}", item.key)], &item.value_json);
    }
    Some(line.to_json())
}

/// The transaction log in `dir`: `run-*.wandb`, exactly one.
pub fn log_file(dir: &Path) -> Result<PathBuf, ReadError> {
    let io = |source| ReadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("run-") && name.ends_with(".wandb") && path.is_file() {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.pop().expect("one")),
        0 => Err(ReadError::Invalid {
            path: dir.to_path_buf(),
            detail: "no run-<id>.wandb file in this directory".into(),
        }),
        _ => Err(ReadError::Invalid {
            path: dir.to_path_buf(),
            detail: format!("{} run-*.wandb files; expected one", found.len()),
        }),
    }
}

/// Walks the records of a log in order, decoding each: memory stays at
/// one block and one record whatever the file's size.
struct Records {
    file: PathBuf,
    reader: txlog::Reader<std::io::BufReader<std::fs::File>>,
    count: u64,
    stop: Option<Stop>,
}

impl Records {
    fn open(file: &Path) -> Result<Records, ReadError> {
        let f = std::fs::File::open(file).map_err(|source| ReadError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        Ok(Records {
            file: file.to_path_buf(),
            reader: txlog::Reader::new(std::io::BufReader::new(f)),
            count: 0,
            stop: None,
        })
    }

    /// The next record, undecoded; `None` at the end or where reading
    /// stopped (then in `stop`).
    fn next_raw(&mut self) -> Result<Option<Vec<u8>>, ReadError> {
        let raw = match self.reader.next_record() {
            Ok(txlog::Next::Record(raw)) => raw,
            Ok(txlog::Next::End) => return Ok(None),
            Ok(txlog::Next::Stopped(stop)) => {
                self.stop = Some(stop);
                return Ok(None);
            }
            Err(source) => {
                return Err(ReadError::Io {
                    path: self.file.clone(),
                    source,
                })
            }
        };
        self.count += 1;
        Ok(Some(raw))
    }

    fn decode(&self, raw: &[u8]) -> Result<Record, ReadError> {
        Record::decode(raw).map_err(|e| ReadError::Invalid {
            path: self.file.clone(),
            detail: format!("record {} is not a W&B Record: {e}", self.count),
        })
    }
}

/// `Record.history`'s field number (the `record_type` member).
const HISTORY: u64 = 2;

/// The field number of a raw `Record`'s `record_type` member, read from
/// its top-level field keys without decoding it: each pass of [`read`]
/// and [`HistoryLines`] then decodes only the records it needs (history
/// and summary records are most of a log, about one each per row).
/// `None` if there is none or the bytes are not protobuf.
fn record_type(mut raw: &[u8]) -> Option<u64> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    while !raw.is_empty() {
        let key = varint(&mut raw)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut raw)?;
            }
            1 => raw = raw.get(8..)?,
            5 => raw = raw.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut raw)?).ok()?;
                // num (1) is a varint; control (16), uuid (19) and _info
                // (200) are the only other messages/strings of Record.
                if !matches!(field, 16 | 19 | 200) {
                    return Some(field);
                }
                raw = raw.get(len..)?;
            }
            _ => return None,
        }
    }
    None
}

/// A history record as a history line.
fn history_line(h: &HistoryRecord) -> String {
    let mut line = Doc::default();
    for item in &h.item {
        line.set(&path(item), &item.value_json);
    }
    // wandb sync (0.31.0) puts the step number in the line as `_step`
    // when no item carries it.
    if let (false, Some(step)) = (line.contains_key("_step"), &h.step) {
        line.set(&["_step".to_string()], &step.num.to_string());
    }
    line.to_json()
}

impl OfflineRun {
    /// The history lines, in order, read from the log again: at most
    /// `history_lines` of them, so a log that grew since [`read`] yields
    /// what was counted then.
    pub fn history(&self) -> Result<HistoryLines, ReadError> {
        Ok(HistoryLines {
            records: Records::open(&self.file)?,
            left: self.history_lines,
        })
    }
}

/// See [`OfflineRun::history`].
pub struct HistoryLines {
    records: Records,
    left: u64,
}

impl HistoryLines {
    /// Up to `n` next lines; fewer only at the end.
    pub fn take(&mut self, n: usize) -> Result<Vec<String>, ReadError> {
        let mut out = Vec::new();
        while out.len() < n && self.left > 0 {
            match self.records.next_raw()? {
                Some(raw) if record_type(&raw) == Some(HISTORY) => {
                    if let Some(RecordType::History(h)) = self.records.decode(&raw)?.record_type {
                        out.push(history_line(&h));
                    }
                    self.left -= 1;
                }
                Some(_) => {}
                None => {
                    return Err(ReadError::Invalid {
                        path: self.records.file.clone(),
                        detail: format!(
                        "{} history lines fewer than when it was first read (changed meanwhile?)",
                        self.left
                    ),
                    })
                }
            }
        }
        Ok(out)
    }

    /// Skips `n` lines (uploaded by an earlier sync).
    pub fn skip(&mut self, mut n: u64) -> Result<(), ReadError> {
        while n > 0 {
            let step = n.min(10_000) as usize;
            let got = self.take(step)?.len() as u64;
            if got == 0 {
                break;
            }
            n -= got;
        }
        Ok(())
    }
}

/// Reads the directory's transaction log: everything but the history
/// lines, which [`OfflineRun::history`] streams.
pub fn read(dir: &Path) -> Result<OfflineRun, ReadError> {
    let file = log_file(dir)?;
    let mut records = Records::open(&file)?;
    let mut run: Option<OfflineRun> = None;
    let mut summary = Doc::default();
    let mut config = Doc::default();
    let mut history_lines = 0u64;
    let mut last_line = None;
    let mut exit_code = None;
    let mut metrics = Vec::new();
    let mut artifacts = Vec::new();
    let mut sdk = SdkParts::default();
    let mut stats: Vec<StatsRecord> = Vec::new();
    let mut console = ConsoleLines::default();
    let mut start_time = None;
    while let Some(raw) = records.next_raw()? {
        let kind = record_type(&raw);
        if kind == Some(HISTORY) {
            // Streamed later; only counted (and the last one kept) here.
            history_lines += 1;
            last_line = Some(raw);
            continue;
        }
        if kind.is_some_and(|k| sdk_records::FIELDS.contains(&k)) {
            let record = SdkRecord::decode(&raw[..]).map_err(|e| ReadError::Invalid {
                path: file.clone(),
                detail: format!("record {} is not a W&B Record: {e}", records.count),
            })?;
            match record.kind {
                Some(Kind::Stats(s)) => stats.push(s),
                Some(Kind::Output(o) | Kind::OutputRaw(o)) => console.push(&o),
                Some(Kind::Environment(env)) => {
                    let json = env.to_json();
                    match sdk
                        .environment
                        .iter_mut()
                        .find(|(w, _)| *w == env.writer_id)
                    {
                        Some((_, seen)) => sdk_records::merge_json(seen, json),
                        None => sdk.environment.push((env.writer_id.clone(), json)),
                    }
                }
                Some(Kind::Telemetry(raw)) => merge_telemetry(&mut sdk.telemetry, &raw),
                Some(Kind::Files(_)) | None => {}
            }
            continue;
        }
        match records.decode(&raw)?.record_type {
            Some(RecordType::Run(r)) if run.is_none() => {
                start_time = r.start_time.as_ref().map(seconds);
                for item in r.config.iter().flat_map(|c| &c.update) {
                    config.set(&path(item), &item.value_json);
                }
                let nonempty = |s: String| (!s.trim().is_empty()).then_some(s);
                run = Some(OfflineRun {
                    dir: dir.to_path_buf(),
                    file: file.clone(),
                    run_id: r.run_id,
                    entity: nonempty(r.entity),
                    project: nonempty(r.project),
                    display_name: nonempty(r.display_name),
                    host: nonempty(r.host),
                    config: Default::default(),
                    metrics: Vec::new(),
                    history_lines: 0,
                    last_line: None,
                    summary: Doc::default(),
                    exit_code: None,
                    stop: None,
                    sdk: SdkParts::default(),
                    artifacts: Vec::new(),
                });
            }
            Some(RecordType::Config(c)) => {
                for item in &c.update {
                    config.set(&path(item), &item.value_json);
                }
            }
            Some(RecordType::Summary(s)) => {
                for item in &s.update {
                    summary.set(&path(item), &item.value_json);
                }
                for item in &s.remove {
                    summary.remove(&path(item));
                }
            }
            Some(RecordType::Exit(e)) => exit_code = Some(e.exit_code),
            Some(RecordType::Metric(m)) => metrics.push(m),
            Some(RecordType::Artifact(a)) => artifacts.push(a),
            _ => {}
        }
    }
    let stop = records.stop.take();
    let Some(mut run) = run else {
        let detail = match &stop {
            Some(s) => format!("no run record before the log stops: it {s}"),
            None => "no run record (W&B needs one to know the run)".into(),
        };
        return Err(ReadError::Invalid { path: file, detail });
    };
    if run.run_id.trim().is_empty() {
        return Err(ReadError::Invalid {
            path: file,
            detail: "the run record has no run id".into(),
        });
    }
    let mut logged = config.to_value();
    sdk.config_wandb = match logged.remove("_wandb") {
        Some(Value::Object(w)) => Some(w),
        _ => None,
    };
    run.config = logged;
    // Runtimes count from the run's start, as core's; without one (never
    // written so) from the first sample.
    let start = start_time
        .or_else(|| {
            stats
                .first()
                .and_then(|s| s.timestamp.as_ref().map(seconds))
        })
        .unwrap_or(0.0);
    sdk.events = stats.iter().filter_map(|s| events_line(s, start)).collect();
    sdk.console = console.finish();
    run.sdk = sdk;
    run.metrics = metrics;
    run.artifacts = artifacts;
    run.history_lines = history_lines;
    run.last_line = match last_line {
        Some(raw) => match records.decode(&raw)?.record_type {
            Some(RecordType::History(h)) => Some(history_line(&h)),
            _ => None,
        },
        None => None,
    };
    run.summary = summary;
    run.exit_code = exit_code;
    run.stop = stop;
    Ok(run)
}

/// Merges one raw telemetry record into `into` (damaged ones are
/// skipped: telemetry only describes the SDK).
fn merge_telemetry(into: &mut BTreeMap<u64, Telemetry>, raw: &[u8]) {
    let Some(fields) = telemetry_fields(raw) else {
        return;
    };
    for (k, v) in fields {
        match into.get_mut(&k) {
            Some(seen) => seen.merge(v),
            None => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_records_become_output_log_lines() {
        let at = |nanos| {
            Some(Timestamp {
                seconds: 1796188168,
                nanos,
            })
        };
        let mut c = ConsoleLines::default();
        for (t, text, n) in [
            (1, "global_step=64", 135_283_000),
            (1, "\n", 135_300_000),
            (0, "warn\n", 135_345_000),
            (1, "10%\r50%\r100%\n", 2_000),
            (1, "no newline", 0),
        ] {
            c.push(&OutputRecord {
                output_type: t,
                timestamp: at(n),
                line: text.into(),
            });
        }
        assert_eq!(
            c.finish(),
            [
                "2026-12-02T05:09:28.135283 global_step=64",
                "ERROR 2026-12-02T05:09:28.135345 warn",
                "2026-12-02T05:09:28.000002 100%",
                "2026-12-02T05:09:28.000000 no newline",
            ]
        );
    }

    #[test]
    fn stats_records_become_events_lines() {
        let s = StatsRecord {
            stats_type: 0,
            timestamp: Some(Timestamp {
                seconds: 100,
                nanos: 500_000_000,
            }),
            item: vec![sdk_records::StatsItem {
                key: "cpu".into(),
                value_json: "0.25".into(),
            }],
        };
        assert_eq!(
            events_line(&s, 100.0).unwrap(),
            r#"{"_runtime":0.5,"_timestamp":100.5,"_wandb":true,"system.cpu":0.25}"#
        );
    }

    #[test]
    fn documents_keep_value_text_and_nest_paths() {
        let mut d = Doc::default();
        d.set(&["loss".into()], "NaN");
        d.set(&["_wandb".into(), "runtime".into()], "3");
        d.set(&["x".into()], "0.30000000000000004");
        d.set(&["a/b".into()], "-Infinity");
        assert_eq!(
            d.to_json(),
            r#"{"_wandb":{"runtime":3},"a/b":-Infinity,"loss":NaN,"x":0.30000000000000004}"#
        );
        let v = d.to_value();
        assert_eq!(v["loss"], Value::String("NaN".into()));
        assert_eq!(v["_wandb"]["runtime"], 3);
        d.remove(&["_wandb".into(), "runtime".into()]);
        d.remove(&["loss".into()]);
        assert_eq!(
            d.to_json(),
            r#"{"_wandb":{},"a/b":-Infinity,"x":0.30000000000000004}"#
        );
    }

    #[test]
    fn record_types_are_read_without_decoding() {
        use crate::sink::wandb::offline::records::{
            record, HistoryRecord, RecordInfo, SummaryRecord,
        };
        let history = Record {
            num: 300,
            record_type: Some(record::RecordType::History(HistoryRecord::default())),
            info: Some(RecordInfo {
                stream_id: "x".into(),
            }),
        };
        assert_eq!(record_type(&history.encode_to_vec()), Some(HISTORY));
        let summary = Record {
            num: 1,
            record_type: Some(record::RecordType::Summary(SummaryRecord::default())),
            info: None,
        };
        assert_eq!(record_type(&summary.encode_to_vec()), Some(3));
        // _info first, then the member; a record without one; garbage.
        let mut info_first = vec![0xC2, 0x0C, 0x01, b'x'];
        info_first.extend_from_slice(&[0x12, 0x00]);
        assert_eq!(record_type(&info_first), Some(HISTORY));
        assert_eq!(record_type(&[0x08, 0x05]), None);
        assert_eq!(record_type(&[0xFF]), None);
    }
}
