//! Per-run destination paths such as `var/trainer/runs/{run_id}/shipper/rows.jsonl`.

use std::path::PathBuf;

/// A path with a `{run_id}` placeholder.
#[derive(Debug, Clone)]
pub struct PathTemplate(String);

impl PathTemplate {
    pub fn new(template: &str) -> PathTemplate {
        PathTemplate(template.to_string())
    }

    /// The path for `run_id`. Run ids come from log content, so anything
    /// that could leave the directory (`/`, `..`) is replaced: a record
    /// must never make the agent write outside the place configured.
    pub fn render(&self, run_id: &str) -> PathBuf {
        PathBuf::from(self.0.replace("{run_id}", &safe_component(run_id)))
    }
}

/// `s` made safe as a single path component.
pub fn safe_component(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => format!("_{cleaned}"),
        _ => cleaned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_cannot_escape_the_directory() {
        let t = PathTemplate::new("runs/{run_id}/rows.jsonl");
        assert_eq!(t.render("01JABC"), PathBuf::from("runs/01JABC/rows.jsonl"));
        assert_eq!(
            t.render("../../etc"),
            PathBuf::from("runs/.._.._etc/rows.jsonl")
        );
        assert_eq!(t.render(".."), PathBuf::from("runs/_../rows.jsonl"));
        assert_eq!(t.render(""), PathBuf::from("runs/_/rows.jsonl"));
    }
}
