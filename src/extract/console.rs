//! The worker's console: lines of the files a source marks as its stdout
//! and stderr (`[[sources]] console`) become console rows, which W&B
//! shows in a run's Logs tab. They are journaled with the file's offset
//! like every row, so each line reaches the sinks once and in order.

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
            run_id: Some(regex::Regex::new(r"runs/(?P<run_id>[^/]+)/").expect("valid regex")),
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

    /// The console row of `line`: of the run its record named (the
    /// file's memo), else the run its path names (`runs/<run_id>/`);
    /// `None` when neither says.
    pub fn row(
        &self,
        path: &str,
        memo: &Memo,
        stderr: bool,
        line: &str,
        read_time: f64,
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
            wall_time: read_time,
            values: Default::default(),
            event: Some(RunEvent::Console {
                stderr,
                line: line.strip_suffix('\r').unwrap_or(line).to_string(),
            }),
            origin: Default::default(),
        })
    }
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
