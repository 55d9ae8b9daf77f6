//! The Prometheus text exposition format (version 0.0.4), written by hand.
//!
//! Every figure is read from the journal at scrape time (the status
//! report) rather than kept in live instruments, so a client library's
//! registry and instrument types would only wrap what this writer does:
//! a `# HELP` and `# TYPE` line per family, then `name{labels} value`
//! lines, with the format's escaping. (`prometheus-client` was looked at:
//! its encoder writes the OpenMetrics variant and wants the values in its
//! own instruments; it would add a crate for forty lines.)

use std::fmt::Write;

use super::Readiness;
use crate::status::Status;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// Accumulates families; each is announced once, then its samples follow.
struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&number(value));
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// `\` and newline are escaped in HELP text.
fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// `\`, `"` and newline are escaped in label values.
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction (counters of rows stay exact up to 2^53),
/// the format's spellings for the non-finite values.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// What the endpoint knows besides the status report.
pub struct Meta<'a> {
    pub version: &'a str,
    pub started_at: f64,
    pub max_bytes: u64,
}

/// The whole `/metrics` page. Names follow Prometheus' conventions: the
/// `mosaic_shipper_` prefix, base units in the name (`_seconds`, `_bytes`),
/// `_total` on counters, labels for the sink and the reason a line was
/// set aside.
pub fn render(status: &Status, ready: &Readiness, meta: &Meta) -> String {
    use Kind::{Counter, Gauge};
    let mut w = Writer { out: String::new() };
    w.family(
        "mosaic_shipper_build_info",
        Gauge,
        "The agent's version; always 1.",
    );
    w.sample(
        "mosaic_shipper_build_info",
        &[("version", meta.version)],
        1.0,
    );
    w.single(
        "mosaic_shipper_start_time_seconds",
        Gauge,
        "When this agent process started, in Unix seconds.",
        meta.started_at,
    );
    w.single(
        "mosaic_shipper_ready",
        Gauge,
        "1 when /ready answers 200: the journal answers and every sink is current.",
        if ready.ready { 1.0 } else { 0.0 },
    );

    let c = &status.counters;
    w.single(
        "mosaic_shipper_lines_read_total",
        Counter,
        "Complete lines read from the followed files, good or bad.",
        c.lines as f64,
    );
    w.single(
        "mosaic_shipper_rows_extracted_total",
        Counter,
        "Rows the extraction rules made from the lines read.",
        c.rows as f64,
    );
    w.family(
        "mosaic_shipper_lines_skipped_total",
        Counter,
        "Lines set aside without a row, by reason: unmatched (ordinary log lines), \
         invalid_json, invalid_utf8, oversized, rejected (a matched record without run id, \
         step or value), unterminated (the last line of a deleted file).",
    );
    for (reason, n) in [
        ("unmatched", c.unmatched),
        ("invalid_json", c.invalid_json),
        ("invalid_utf8", c.invalid_utf8),
        ("oversized", c.oversized),
        ("rejected", c.rejected),
        ("unterminated", c.unterminated),
    ] {
        w.sample(
            "mosaic_shipper_lines_skipped_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    w.single(
        "mosaic_shipper_values_skipped_total",
        Counter,
        "Metric fields skipped because their value was a string, null or array.",
        c.skipped_values as f64,
    );
    w.single(
        "mosaic_shipper_file_truncations_total",
        Counter,
        "Times a followed file shrank below its offset (copytruncate) and was read again from 0.",
        c.truncations as f64,
    );
    w.single(
        "mosaic_shipper_files_followed",
        Gauge,
        "Log files the journal holds an offset for.",
        status.files.len() as f64,
    );
    w.single(
        "mosaic_shipper_files_unreadable",
        Gauge,
        "Files matching tail.sources that cannot be opened.",
        status.unreadable.len() as f64,
    );
    w.single(
        "mosaic_shipper_journal_rows_total",
        Counter,
        "Rows committed to the journal since it was created (the last row's number).",
        status.store.last_seq as f64,
    );
    w.single(
        "mosaic_shipper_journal_held_bytes",
        Gauge,
        "Bytes of rows held in the journal for sinks that have not acknowledged them.",
        status.store.stored_bytes as f64,
    );
    w.single(
        "mosaic_shipper_journal_max_bytes",
        Gauge,
        "store.max_bytes: at this many bytes held, reading pauses.",
        meta.max_bytes as f64,
    );
    w.single(
        "mosaic_shipper_journal_disk_bytes",
        Gauge,
        "Size of the journal's store on disk.",
        status.store.size_on_disk as f64,
    );

    let sinks: Vec<_> = status.sinks.iter().filter(|s| s.enabled).collect();
    w.family(
        "mosaic_shipper_sink_pending_rows",
        Gauge,
        "Rows journaled that the sink has not acknowledged yet.",
    );
    for s in &sinks {
        w.sample(
            "mosaic_shipper_sink_pending_rows",
            &[("sink", &s.name)],
            s.pending as f64,
        );
    }
    w.family(
        "mosaic_shipper_sink_lag_seconds",
        Gauge,
        "Now minus the wall time of the oldest row the sink has not acknowledged; 0 when none.",
    );
    for s in &sinks {
        w.sample(
            "mosaic_shipper_sink_lag_seconds",
            &[("sink", &s.name)],
            s.lag_seconds,
        );
    }
    w.family(
        "mosaic_shipper_sink_set_aside_rows",
        Gauge,
        "Rows of runs the sink refused, kept in the store for `mosaic-shipper set-aside retry` or `drop`.",
    );
    for s in &sinks {
        w.sample(
            "mosaic_shipper_sink_set_aside_rows",
            &[("sink", &s.name)],
            s.set_aside_rows as f64,
        );
    }
    let running: Vec<_> = sinks
        .iter()
        .filter_map(|s| s.runner.map(|r| (s.name.as_str(), r)))
        .collect();
    w.family(
        "mosaic_shipper_sink_retries_total",
        Counter,
        "Failed delivery attempts of the sink since the agent started; each is retried.",
    );
    for (name, r) in &running {
        w.sample(
            "mosaic_shipper_sink_retries_total",
            &[("sink", name)],
            r.retries as f64,
        );
    }
    w.family(
        "mosaic_shipper_sink_last_progress_timestamp_seconds",
        Gauge,
        "When the sink last acknowledged rows or found nothing to deliver, in Unix seconds.",
    );
    for (name, r) in &running {
        w.sample(
            "mosaic_shipper_sink_last_progress_timestamp_seconds",
            &[("sink", name)],
            r.last_progress_at,
        );
    }
    w.family(
        "mosaic_shipper_sink_current",
        Gauge,
        "1 when the sink counts as current for /ready (nothing pending, or progress within metrics.stale_after_secs).",
    );
    for (name, _) in &running {
        let current = !ready.lagging.iter().any(|l| l == name);
        w.sample(
            "mosaic_shipper_sink_current",
            &[("sink", name)],
            if current { 1.0 } else { 0.0 },
        );
    }
    w.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_escapes_as_the_format_spells_them() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1.7e9 + 0.5), "1700000000.5");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        let mut w = Writer { out: String::new() };
        w.family("m_total", Kind::Counter, "Help.");
        w.sample("m_total", &[("sink", "jsonl"), ("r", "x")], 2.0);
        assert_eq!(
            w.out,
            "# HELP m_total Help.\n# TYPE m_total counter\nm_total{sink=\"jsonl\",r=\"x\"} 2\n"
        );
    }
}
