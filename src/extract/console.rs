//! The worker's console: lines of the files a source marks as its stdout
//! and stderr (`[[sources]] console`) become console rows, which W&B
//! shows in a run's Logs tab. They are journaled with the file's offset
//! like every row, so each line reaches the sinks once and in order.
//!
//! Each line carries the time it was printed as well as the agent can
//! know it ([`line_times`]): its own timestamp when the extract rules can
//! read one, else the latest time it can have been written by, kept in
//! order within the file. Lines read long after they were printed (a
//! backlog, an agent restart, `sync` of staged rows) so keep their times,
//! and a live file's lines get the time they were read, which is when
//! they were printed.

use std::collections::HashMap;

use crate::config::SourceConfig;
use crate::journal::Memo;
use crate::row::{Row, RunEvent};

/// The compiled `console` patterns of every source, by source name.
#[derive(Debug, Default)]
pub struct ConsoleFiles {
    by_source: HashMap<String, Vec<glob::Pattern>>,
    run_id: Option<regex::Regex>,
}

impl ConsoleFiles {
    /// Compiles the sources' patterns (validated with the configuration).
    pub fn new(sources: &[SourceConfig]) -> Result<ConsoleFiles, String> {
        let mut by_source = HashMap::new();
        for s in sources.iter().filter(|s| !s.console.is_empty()) {
            let patterns = s
                .console
                .iter()
                .map(|p| {
                    glob::Pattern::new(p)
                        .map_err(|e| format!("sources {:?}: bad console glob {p:?}: {e}", s.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            by_source.insert(s.name.clone(), patterns);
        }
        Ok(ConsoleFiles {
            by_source,
            run_id: Some(
                super::patterns::compile(r"runs/(?P<run_id>[^/]+)/").expect("valid regex"),
            ),
        })
    }

    /// Whether the file `path` of `source` is console output, and if so
    /// whether it is stderr.
    pub fn stream(&self, source: &str, path: &str) -> Option<bool> {
        let patterns = self.by_source.get(source)?;
        let base = without_rotation(path);
        let opts = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        patterns
            .iter()
            .any(|p| p.matches_with(base, opts))
            .then(|| {
                std::path::Path::new(base)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("stderr"))
            })
    }

    /// The console row of `line`, printed at `wall_time` (see
    /// [`line_times`]): of the run its record named (the file's memo),
    /// else the run its path names (`runs/<run_id>/`); `None` when
    /// neither says.
    pub fn row(
        &self,
        path: &str,
        memo: &Memo,
        stderr: bool,
        line: &str,
        wall_time: f64,
    ) -> Option<Row> {
        let run_id = memo.run_id.clone().or_else(|| {
            self.run_id
                .as_ref()?
                .captures(path)
                .map(|c| c["run_id"].to_string())
        })?;
        Some(Row {
            run_id,
            step: memo.step.unwrap_or(0),
            wall_time,
            values: Default::default(),
            event: Some(RunEvent::Console {
                stderr,
                line: line.strip_suffix('\r').unwrap_or(line).to_string(),
            }),
            origin: Default::default(),
        })
    }
}

/// The times of one read's console lines, in file order. `own`: the time
/// each line carries itself (`Extractor::line_time`); `prev`: the time of
/// the file's line before them (the memo's, across reads and restarts);
/// `read_time` and `mtime`: when they were read and the file's
/// modification time as it was then (the lines were all written by it).
///
/// A line with its own time keeps it. A line without gets the latest
/// time it can have been printed by: the earliest of the read time, the
/// file's modification time and the own time of a later line of the
/// same read; but never earlier than the line before it, so times never
/// go back within a file. Read as it is written, that is the time it was
/// read; read later, the time the file last changed, or the next stamped
/// line's.
pub fn line_times(
    own: &[Option<f64>],
    prev: Option<f64>,
    read_time: f64,
    mtime: Option<f64>,
) -> Vec<f64> {
    let mut bound = match mtime {
        Some(m) if m.is_finite() => m.min(read_time),
        _ => read_time,
    };
    // Upper bounds from the back: each line's is the earliest own time
    // of the lines after it (and the file's).
    let mut upper = vec![0.0; own.len()];
    for (i, t) in own.iter().enumerate().rev() {
        upper[i] = bound;
        if let Some(t) = t.filter(|t| t.is_finite()) {
            bound = bound.min(t);
        }
    }
    let mut last = prev.filter(|p| p.is_finite());
    own.iter()
        .zip(upper)
        .map(|(t, up)| {
            let t = match t.filter(|t| t.is_finite()) {
                Some(t) => t,
                None => last.map_or(up, |p| up.max(p)),
            };
            last = Some(t);
            t
        })
        .collect()
}

/// `x.log.3` -> `x.log`: a rotated file is read as the file it was.
fn without_rotation(path: &str) -> &str {
    match path.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> ConsoleFiles {
        let mut s: SourceConfig = toml::from_str(
            r#"name = "w"
kind = "lines"
paths = ["runs/*/logs/*.log"]
console = ["runs/*/logs/*.stdout.log", "runs/*/logs/*.stderr.log"]"#,
        )
        .unwrap();
        let other = SourceConfig {
            name: "o".into(),
            console: Vec::new(),
            ..s.clone()
        };
        s.name = "w".into();
        ConsoleFiles::new(&[s, other]).unwrap()
    }

    #[test]
    fn lines_keep_their_own_time_else_the_latest_they_can_have() {
        // A backlog read at 1000 from a file last written at 900: stamped
        // lines keep their stamps, the others get the next stamp's time
        // or the file's, never earlier than the line before.
        let own = [None, Some(100.0), None, None, Some(200.0), None];
        assert_eq!(
            line_times(&own, None, 1000.0, Some(900.0)),
            vec![100.0, 100.0, 200.0, 200.0, 200.0, 900.0]
        );
        // Read live: the read time (the file changed just before).
        assert_eq!(
            line_times(&[None, None], None, 50.0, Some(49.5)),
            vec![49.5, 49.5]
        );
        assert_eq!(line_times(&[None], None, 50.0, Some(60.0)), vec![50.0]);
        assert_eq!(line_times(&[None], None, 50.0, None), vec![50.0]);
        // The file's earlier line (an earlier read) is a floor...
        assert_eq!(
            line_times(&[None], Some(70.0), 50.0, Some(49.0)),
            vec![70.0]
        );
        // ...but a line's own time stands, and the next ones follow it.
        assert_eq!(
            line_times(&[Some(10.0), None], Some(70.0), 50.0, Some(49.0)),
            vec![10.0, 49.0]
        );
        assert!(line_times(&[], None, 1.0, None).is_empty());
    }

    #[test]
    fn console_files_and_their_streams() {
        let f = files();
        assert_eq!(f.stream("w", "runs/R/logs/cleanrl.stderr.log"), Some(true));
        assert_eq!(f.stream("w", "runs/R/logs/cleanrl.stdout.log"), Some(false));
        assert_eq!(
            f.stream("w", "runs/R/logs/cleanrl.stdout.log.2"),
            Some(false)
        );
        assert_eq!(f.stream("w", "runs/R/logs/worker.log"), None);
        assert_eq!(f.stream("o", "runs/R/logs/cleanrl.stdout.log"), None);
        let row = f
            .row(
                "x/runs/R1/logs/a.stderr.log",
                &Memo::default(),
                true,
                "boom\r",
                5.0,
            )
            .unwrap();
        assert_eq!(row.run_id, "R1");
        assert_eq!(
            row.event,
            Some(RunEvent::Console {
                stderr: true,
                line: "boom".into()
            })
        );
        assert!(f
            .row("console/x/stdout.log", &Memo::default(), false, "a", 5.0)
            .is_none());
    }
}
