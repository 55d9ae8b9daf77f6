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

/// The shell commands of the code blocks between two headings.
fn commands(readme: &str, from: &str, to: &str) -> Vec<String> {
    let start = readme.find(from).expect("README section");
    let end = start + readme[start..].find(to).expect("next section");
    let mut out = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match (in_block, line.trim()) {
            (false, "```sh") => in_block = true,
            (true, "```") => in_block = false,
            (true, l) if !l.is_empty() => {
                out.push(l.split(" #").next().unwrap().trim().to_string())
            }
            _ => {}
        }
    }
    out
}

fn jsonl_lines(root: &std::path::Path, run: &str) -> Option<String> {
    std::fs::read_to_string(root.join(format!("var/trainer/runs/{run}/shipper/rows.jsonl"))).ok()
}

/// The quick start, command by command as the README writes it (in a
/// copy of the sample runs; `cargo run --release --` is the binary this
/// test was built with; `scripts/test` is what runs this): the samples
/// ship, `status` reports, a second `run --once` ships nothing twice, and
/// a run `gen-worker-logs.py` adds ships with the next `run --once`.
#[test]
fn the_quick_start_works_as_written() {
    let python = std::env::var("MOSAIC_TEST_PYTHON")
        .expect("MOSAIC_TEST_PYTHON is not set: run the tests with scripts/test");
    let readme = readme();
    let cmds = commands(&readme, "## Set-up", "## Commands");
    assert_eq!(cmds[0], "cargo run --release -- run --once", "{cmds:?}");
    assert_eq!(cmds[1], "scripts/test");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(root.join("var/trainer/runs")).unwrap();
    let samples: Vec<String> = std::fs::read_dir(repo.join("var/trainer/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|run| {
            repo.join("var/trainer/runs")
                .join(run)
                .join("logs")
                .is_dir()
        })
        .collect();
    assert!(!samples.is_empty());
    for run in &samples {
        let dest = root.join("var/trainer/runs").join(run);
        std::fs::create_dir_all(&dest).unwrap();
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(repo.join("var/trainer/runs").join(run).join("logs"))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(ok.success());
    }
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    std::fs::copy(
        repo.join("scripts/gen-worker-logs.py"),
        root.join("scripts/gen-worker-logs.py"),
    )
    .unwrap();

    let bin = env!("CARGO_BIN_EXE_mosaic-shipper");
    let mut shipped: std::collections::BTreeMap<String, String> = Default::default();
    for (i, cmd) in cmds
        .iter()
        .enumerate()
        .filter(|(_, c)| *c != "scripts/test")
    {
        let line = cmd
            .replace("cargo run --release --", bin)
            .replace("python3 ", &format!("{python} "));
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &line]).current_dir(root);
        // No W&B key from the caller: the quick start's machine has none.
        for (k, _) in std::env::vars() {
            if k.starts_with("WANDB_") || k == "NETRC" || k == "CREDENTIALS_DIRECTORY" {
                c.env_remove(k);
            }
        }
        c.env("HOME", root).env("NETRC", root.join("no-netrc"));
        let out = c.output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "`{cmd}` failed:\n{said}");
        if cmd.contains(" status") {
            assert!(said.contains("sinks:") && said.contains("jsonl"), "{said}");
        }
        if cmd.contains("gen-worker-logs.py") {
            let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let run = made["run_id"].as_str().unwrap().to_string();
            let rows = made["records"]["flat"].as_u64().unwrap()
                + made["records"]["nested"].as_u64().unwrap();
            // Shipped by the command after it, and the others stay as they were.
            let next = &cmds[i + 1];
            assert!(
                next.ends_with("run --once"),
                "the README ships the new run: {cmds:?}"
            );
            assert!(jsonl_lines(root, &run).is_none());
            shipped.insert(run, format!("{rows} rows"));
        }
        if cmd.ends_with("run --once") {
            for (run, before) in shipped.clone() {
                let now = jsonl_lines(root, &run).unwrap_or_else(|| panic!("{run} not shipped"));
                if let Some(rows) = before.strip_suffix(" rows") {
                    assert_eq!(now.lines().count().to_string(), rows, "{run}");
                } else {
                    assert_eq!(now, before, "`{cmd}` shipped {run}'s rows again");
                }
                shipped.insert(run, now);
            }
            for run in &samples {
                let now = jsonl_lines(root, run).unwrap_or_else(|| panic!("{run} not shipped"));
                assert!(now.lines().count() > 0);
                if let Some(before) = shipped.get(run) {
                    assert_eq!(&now, before, "`{cmd}` shipped {run}'s rows again");
                }
                shipped.insert(run.clone(), now);
            }
        }
    }
    assert!(
        shipped.len() > samples.len(),
        "the quick start adds a run: {cmds:?}"
    );
}
