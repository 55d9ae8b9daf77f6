//! Per-run destination paths such as `var/trainer/runs/{run_id}/shipper/rows.jsonl`.

use std::path::PathBuf;

/// A path with a `{run_id}` placeholder.
#[derive(Debug, Clone)]
pub struct PathTemplate(String);

impl PathTemplate {
    pub fn new(template: &str) -> PathTemplate {
        PathTemplate(template.to_string())
    }

    /// The path for `run_id`. Run ids come from log content, so they go
    /// through the one mapping every sink uses ([`super::runname`]): a
    /// record can never make the agent write outside the place configured,
    /// and two run ids never share a file.
    pub fn render(&self, run_id: &str) -> PathBuf {
        PathBuf::from(
            self.0
                .replace("{run_id}", &super::runname::path_name(run_id)),
        )
    }
}

/// `s` made safe as a single path component (a host name in a file name;
/// run ids go through [`super::runname`]).
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
        for id in ["../../etc", "..", "", "a/../../b", "%2e%2e", "x\0y"] {
            let p = t.render(id);
            let parts: Vec<_> = p.components().collect();
            assert_eq!(parts.len(), 3, "{id:?} -> {}", p.display());
            assert!(
                matches!(parts[1], std::path::Component::Normal(_)),
                "{id:?}"
            );
            assert!(!p.to_string_lossy().contains('\0'));
        }
    }
}
