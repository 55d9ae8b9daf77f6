//! How an `explain` [`Report`] is shown: aligned text for people (one block
//! per record, long lines cut), or JSON lines for tools (a `file` object,
//! one object per record, a `summary` object), with stable field names.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use super::Report;
use crate::extract::silence::cut;
use crate::extract::Outcome;
use crate::row::{Row, RunEvent};

/// Characters of a record's text shown in the text form.
const SHOWN_CHARS: usize = 160;

/// The text form.
pub fn text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "file    {}", r.file);
    match &r.source {
        Some(m) => {
            let _ = writeln!(
                s,
                "source  {} (kind {}), pattern {}",
                m.name,
                r.kind.as_str(),
                m.pattern
            );
        }
        None => {
            let _ = writeln!(
                s,
                "source  none: no source matches this path: it would not be read. The patterns:"
            );
            let width = r.patterns.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
            for (name, pattern) in &r.patterns {
                let _ = writeln!(s, "          {name:<width$}  {pattern}");
            }
            let _ = writeln!(
                s,
                "        Below, the file is read as a {} source would read it.",
                r.kind.as_str()
            );
        }
    }
    let unit = unit(r);
    let last = r.records.last().map_or(0, |e| e.offset);
    let n_width = r.records.len().to_string().len() + 1;
    let o_width = last.to_string().len();
    for (i, e) in r.records.iter().enumerate() {
        let _ = writeln!(s);
        let head = format!("#{}", i + 1);
        let _ = write!(s, "{head:<n_width$}  byte {:<o_width$}", e.offset);
        match &e.text {
            Some(t) => {
                let _ = writeln!(s, "  {}", shown(t));
            }
            None => {
                let _ = writeln!(s, "  ({unit})");
            }
        }
        let said = e.explanation.to_string();
        let mut lines = said.lines();
        if let Some(first) = lines.next() {
            let _ = writeln!(s, "{:n_width$}  -> {first}", "");
        }
        for more in lines {
            let _ = writeln!(s, "{:n_width$}     {}", "", more.trim_start());
        }
    }
    let _ = writeln!(s);
    if let Some(w) = &r.waiting {
        let _ = writeln!(s, "then: {w}");
    }
    let made = r
        .records
        .iter()
        .filter(|e| matches!(e.explanation.outcome, Outcome::Rows(_)))
        .count();
    let _ = writeln!(
        s,
        "{} shown{}: {made} made rows ({}), {} made none.",
        count(r.records.len(), unit),
        if r.more {
            " (the file has more: --lines N)"
        } else {
            ""
        },
        count(r.rows(), "row"),
        r.records.len() - made,
    );
    s
}

/// The JSON-lines form.
pub fn json_lines(r: &Report) -> String {
    let mut out = String::new();
    let source = r
        .source
        .as_ref()
        .map(|m| json!({"name": m.name, "pattern": m.pattern}));
    let mut head = json!({
        "file": r.file,
        "source": source,
        "kind": r.kind.as_str(),
    });
    if r.source.is_none() {
        head["patterns"] = r
            .patterns
            .iter()
            .map(|(name, pattern)| json!({"source": name, "pattern": pattern}))
            .collect();
    }
    line(&mut out, &head);
    for (i, e) in r.records.iter().enumerate() {
        let x = &e.explanation;
        let mut o = Map::new();
        o.insert("record".into(), json!(i + 1));
        o.insert("offset".into(), json!(e.offset));
        if let Some(t) = &e.text {
            o.insert("text".into(), json!(t));
        }
        let (outcome, extra) = match &x.outcome {
            Outcome::Rows(rows) => (
                "rows",
                json!({"rows": rows.iter().map(row).collect::<Vec<_>>()}),
            ),
            Outcome::Repeated => ("repeated", json!({})),
            Outcome::GaveWay => ("gave_way", json!({})),
            Outcome::NoMatch { closest, missed } => {
                ("no_match", json!({"closest": closest, "missed": missed}))
            }
            Outcome::Rejected(why) => ("rejected", json!({"why": why})),
            Outcome::Invalid(why) => ("invalid", json!({"why": why})),
            Outcome::Skipped(why) => ("skipped", json!({"why": why})),
        };
        o.insert("outcome".into(), json!(outcome));
        o.insert("rule".into(), json!(x.rule));
        if let Value::Object(extra) = extra {
            o.extend(extra);
        }
        line(&mut out, &Value::Object(o));
    }
    line(
        &mut out,
        &json!({"summary": {
            "records": r.records.len(),
            "rows": r.rows(),
            "more": r.more,
            "waiting": r.waiting,
        }}),
    );
    out
}

fn line(out: &mut String, v: &Value) {
    out.push_str(&v.to_string());
    out.push('\n');
}

/// A row for tools; non-finite values as the strings Python prints.
fn row(r: &Row) -> Value {
    let values: Map<String, Value> = r
        .values
        .iter()
        .map(|(k, &v)| {
            let v = if v.is_finite() {
                json!(v)
            } else if v.is_nan() {
                json!("NaN")
            } else if v > 0.0 {
                json!("Infinity")
            } else {
                json!("-Infinity")
            };
            (k.clone(), v)
        })
        .collect();
    let mut o = json!({
        "run_id": r.run_id,
        "step": r.step,
        "wall_time": r.wall_time,
        "values": values,
    });
    match &r.event {
        Some(RunEvent::Config(text)) => {
            o["config"] = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
        }
        Some(RunEvent::Finished(code)) => o["finished"] = json!(code),
        Some(RunEvent::Console { stderr, line }) => {
            o["console"] =
                json!({"stream": if *stderr { "stderr" } else { "stdout" }, "line": line});
        }
        Some(RunEvent::Machine(text)) => {
            o["machine"] = serde_json::from_str(text).unwrap_or_else(|_| json!(text));
        }
        Some(RunEvent::System) => o["system"] = json!(true),
        None => {}
    }
    o
}

/// `1 line`, `2 lines`.
fn count(n: usize, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// What one record of this report is called.
fn unit(r: &Report) -> &'static str {
    match r.kind {
        crate::config::SourceKind::Lines => "line",
        crate::config::SourceKind::Tfevents => "record",
        crate::config::SourceKind::Document => "document",
    }
}

/// A record's text on one line, cut to [`SHOWN_CHARS`].
fn shown(text: &str) -> String {
    let one_line = text.replace('\n', "\\n");
    match one_line.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => cut(&one_line, end),
        None => one_line,
    }
}
