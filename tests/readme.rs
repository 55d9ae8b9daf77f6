//! The README's examples work as documented.

use mosaic_shipper::config::ExtractConfig;
use mosaic_shipper::extract::{Extractor, Memo};
use mosaic_shipper::row::Row;
use mosaic_shipper::stats::Counters;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The TOML example that starts with the rule named `name`, compiled.
fn example(name: &str) -> Extractor {
    let readme = readme();
    let start = readme
        .find(&format!("name = \"{name}\""))
        .expect("README has the example");
    let end = start + readme[start..].find("```").unwrap();
    let text = format!("[[rules]]\n{}", &readme[start..end]);
    let config: ExtractConfig = toml::from_str(&text).unwrap();
    Extractor::new(&config).unwrap()
}

fn extract(e: &Extractor, path: &str, line: &str) -> Vec<Row> {
    let (mut memo, mut c, mut rows) = (Memo::default(), Counters::default(), Vec::new());
    e.extract(path, 0, line, 0.0, &mut memo, &mut c, &mut rows);
    rows
}

#[test]
fn the_text_rule_example_extracts_what_it_says() {
    let e = example("my-trainer-text");
    let rows = extract(
        &e,
        "var/trainer/runs/01K/logs/x.log",
        "[1970-01-01T00:00:02Z] iter=12 loss=0.5 reward: 3.5",
    );
    let row = &rows[0];
    assert_eq!(
        (row.run_id.as_str(), row.step, row.wall_time),
        ("01K", 12, 2.0)
    );
    assert_eq!(row.values["losses/loss"], 0.5);
    assert_eq!(row.values["charts/episodic_return"], 3.5);
    assert!(extract(&e, "var/trainer/runs/01K/logs/x.log", "iter=12 loss=0.5").is_empty());
}

#[test]
fn the_default_rule_example_extracts_what_it_says() {
    let e = example("mosaic-metrics");
    let line = r#"{"event": "metrics", "global_step": 256, "episodic_return": NaN, "metrics": {"losses": {"policy_loss": 0.5}}}"#;
    let rows = extract(&e, "var/trainer/runs/01K/logs/x.jsonl", line);
    assert_eq!(rows[0].step, 256);
    assert!(rows[0].values["charts/episodic_return"].is_nan());
    assert_eq!(rows[0].values["losses/policy_loss"], 0.5);
}

#[test]
fn the_default_rule_example_matches_the_embedded_default() {
    let readme = readme();
    for line in [
        "match = { event = \"metrics\" }",
        "run_id_from_path = \"runs/(?P<run_id>[^/]+)/\"",
        "step = [\"global_step\", \"step\", \"_step\"]",
        "naive_time = \"local\"",
    ] {
        assert!(readme.contains(line), "README: {line}");
        assert!(
            mosaic_shipper::config::EMBEDDED_DEFAULT.contains(line),
            "default: {line}"
        );
    }
}
