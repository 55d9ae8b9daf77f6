//! The README's examples work as documented.

use mosaic_shipper::config::ExtractConfig;
use mosaic_shipper::extract::Extractor;
use mosaic_shipper::stats::Counters;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn the_rllib_rule_example_extracts_what_it_says() {
    let readme = readme();
    let start = readme
        .find("name = \"rllib-results\"")
        .expect("README has the example");
    let end = start + readme[start..].find("```").unwrap();
    let text = format!("[[rules]]\n{}", &readme[start..end]);
    let config: ExtractConfig = toml::from_str(&text).unwrap();
    let e = Extractor::new(&config).unwrap();
    let mut c = Counters::default();
    let line = r#"{"type": "result", "trial": "t1", "training_iteration": 12, "timestamp": 1700000000, "env_runners": {"episode_return_mean": 3.5}}"#;
    let row = e.extract("x.log", 0, line, 0.0, &mut c).unwrap();
    assert_eq!(
        (row.run_id.as_str(), row.step, row.wall_time),
        ("t1", 12, 1.7e9)
    );
    assert_eq!(row.values["rllib/episode_return_mean"], 3.5);
}

#[test]
fn the_default_rule_example_matches_the_embedded_default() {
    let readme = readme();
    for line in [
        "match = { event = \"metrics\" }",
        "run_id_from_path = \"runs/(?P<run_id>[^/]+)/\"",
        "step = [\"global_step\", \"step\", \"_step\"]",
    ] {
        assert!(readme.contains(line), "README: {line}");
        assert!(
            mosaic_shipper::config::EMBEDDED_DEFAULT.contains(line),
            "default: {line}"
        );
    }
}
