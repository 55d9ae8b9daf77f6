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

/// The committed sample runs: the `!/var/trainer/runs/<id>/` lines of
/// .gitignore (everything else there is generated and ignored).
fn sample_runs(repo: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(repo.join(".gitignore"))
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("!/var/trainer/runs/"))
        .filter_map(|l| l.strip_suffix('/'))
        .map(str::to_string)
        .collect()
}

/// Every file under `dir`, relative, with its bytes.
fn files(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(
        base: &std::path::Path,
        d: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = Default::default();
    walk(dir, dir, &mut out);
    out
}

/// (run, metric, step, value) -> count of the jsonl files of `runs`.
type Points = std::collections::BTreeMap<(String, String, i64, String), usize>;

fn value_text(v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(f) => format!("{f:?}"),
        None => v.as_str().unwrap().to_string(),
    }
}

fn jsonl_points(root: &std::path::Path, runs: &[String]) -> Points {
    let mut out = Points::new();
    for run in runs {
        let text = jsonl_lines(root, run).unwrap_or_else(|| panic!("{run} not shipped"));
        for line in text.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            for (k, v) in row["values"].as_object().unwrap() {
                let key = (
                    run.clone(),
                    k.clone(),
                    row["step"].as_i64().unwrap(),
                    value_text(v),
                );
                *out.entry(key).or_default() += 1;
            }
        }
    }
    out
}

/// The committed samples are what scripts/gen-mosaic-runs.py writes
/// with the seed and time .gitignore names (in UTC: local times are in
/// the files, as the workers write them), byte for byte; returns the
/// points it says jsonl must receive for them.
fn regenerate_samples(python: &str, repo: &std::path::Path, samples: &[String]) -> Points {
    let gitignore = std::fs::read_to_string(repo.join(".gitignore")).unwrap();
    let how = gitignore
        .lines()
        .find_map(|l| l.split("`TZ=UTC scripts/gen-mosaic-runs.py . ").nth(1))
        .and_then(|l| l.split('`').next())
        .expect(".gitignore says how the samples are made");
    let tmp = tempfile::tempdir().unwrap();
    let expect = tmp.path().join("expect.json");
    let out = std::process::Command::new(python)
        .arg(repo.join("scripts/gen-mosaic-runs.py"))
        .arg(tmp.path())
        .args(how.split_whitespace())
        .arg("--expect")
        .arg(&expect)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut made: Vec<String> = made["runs"].as_object().unwrap().keys().cloned().collect();
    let mut committed = samples.to_vec();
    made.sort();
    committed.sort();
    assert_eq!(
        made, committed,
        "the committed samples are the generator's runs"
    );
    for run in samples {
        for sub in [format!("var/trainer/runs/{run}"), String::new()] {
            let (mut ours, theirs) = if sub.is_empty() {
                let name = format!("config-{run}.json");
                let read = |d: &std::path::Path| {
                    [(
                        name.clone(),
                        std::fs::read(d.join("var/trainer/configs").join(&name)).unwrap(),
                    )]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
                };
                (read(repo), read(tmp.path()))
            } else {
                (files(&repo.join(&sub)), files(&tmp.path().join(&sub)))
            };
            // What the agent writes when the quick start runs in the repository.
            ours.retain(|k, _| !k.starts_with("shipper/") && !theirs_lacks_agent(k, &theirs));
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                theirs.keys().collect::<Vec<_>>(),
                "{run}: the committed files are the generator's"
            );
            for (k, v) in &ours {
                assert!(
                    v == &theirs[k],
                    "{run}/{k} differs from what the generator writes now"
                );
            }
        }
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&expect).unwrap()).unwrap();
    let mut want = Points::new();
    for p in doc["points"].as_array().unwrap() {
        if p["sinks"].as_array().unwrap().iter().any(|s| s == "jsonl") {
            let key = (
                p["run"].as_str().unwrap().to_string(),
                p["metric"].as_str().unwrap().to_string(),
                p["step"].as_i64().unwrap(),
                value_text(&p["value"]),
            );
            *want.entry(key).or_default() += 1;
        }
    }
    want
}

/// An event file directly in a run's tensorboard/ that the generator did
/// not write: the agent's own, from a quick start run in the repository.
fn theirs_lacks_agent(k: &str, theirs: &std::collections::BTreeMap<String, Vec<u8>>) -> bool {
    k.starts_with("tensorboard/events.out.tfevents.")
        && !k["tensorboard/".len()..].contains('/')
        && !theirs.contains_key(k)
}

/// The quick start, command by command as the README writes it (in a
/// copy of the sample runs; `cargo run --release --` is the binary this
/// test was built with; `scripts/test` is what runs this): the samples
/// ship, every point of them once (as scripts/gen-mosaic-runs.py says),
/// `status` reports, a second `run --once` ships nothing twice, and the
/// runs the generators add ship with the next `run --once`.
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
    let samples = sample_runs(repo);
    assert!(samples.len() >= 5, "{samples:?}");
    let sample_points = regenerate_samples(&python, repo, &samples);
    std::fs::create_dir_all(root.join("var/trainer/runs")).unwrap();
    std::fs::create_dir_all(root.join("var/trainer/configs")).unwrap();
    for run in &samples {
        let dest = root.join("var/trainer/runs").join(run);
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(repo.join("var/trainer/runs").join(run))
            .arg(&dest)
            .status()
            .unwrap();
        assert!(ok.success());
        // Not what the agent wrote in the repository, if it ran there.
        let _ = std::fs::remove_dir_all(dest.join("shipper"));
        let name = format!("config-{run}.json");
        std::fs::copy(
            repo.join("var/trainer/configs").join(&name),
            root.join("var/trainer/configs").join(&name),
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.join("scripts")).unwrap();
    for script in ["gen-worker-logs.py", "gen-mosaic-runs.py"] {
        std::fs::copy(
            repo.join("scripts").join(script),
            root.join("scripts").join(script),
        )
        .unwrap();
    }

    let bin = env!("CARGO_BIN_EXE_mosaic-shipper");
    let mut shipped: std::collections::BTreeMap<String, String> = Default::default();
    let mut pending: Vec<String> = Vec::new();
    let mut first = true;
    for cmd in cmds.iter().filter(|c| *c != "scripts/test") {
        let line = cmd
            .replace("cargo run --release --", bin)
            .replace(".venv/bin/python ", &format!("{python} "))
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
        if cmd.contains("gen-worker-logs.py") || cmd.contains("gen-mosaic-runs.py") {
            let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let runs: Vec<String> = match made.get("runs") {
                Some(r) => r.as_object().unwrap().keys().cloned().collect(),
                None => vec![made["run_id"].as_str().unwrap().to_string()],
            };
            assert!(!runs.is_empty(), "`{cmd}` made no run");
            for run in runs {
                assert!(
                    jsonl_lines(root, &run).is_none(),
                    "{run} shipped before `run --once`"
                );
                assert!(!samples.contains(&run), "`{cmd}` made a sample's run id");
                pending.push(run);
            }
        }
        if cmd.ends_with("run --once") {
            if first {
                // Every point of every sample run, once.
                let got = jsonl_points(root, &samples);
                assert!(
                    got == sample_points,
                    "the samples' jsonl differs from the generator's points: {} received, {} expected; missing {:?}; extra {:?}",
                    got.values().sum::<usize>(),
                    sample_points.values().sum::<usize>(),
                    sample_points.keys().filter(|k| !got.contains_key(*k)).take(5).collect::<Vec<_>>(),
                    got.keys().filter(|k| !sample_points.contains_key(*k)).take(5).collect::<Vec<_>>(),
                );
                first = false;
            }
            for run in pending.drain(..) {
                let now =
                    jsonl_lines(root, &run).unwrap_or_else(|| panic!("`{cmd}` did not ship {run}"));
                assert!(now.lines().count() > 0, "{run}");
                shipped.insert(run, now);
            }
            for (run, before) in shipped.clone() {
                let now = jsonl_lines(root, &run).unwrap();
                assert_eq!(now, before, "`{cmd}` shipped {run}'s rows again");
            }
            for run in &samples {
                let now = jsonl_lines(root, run).unwrap_or_else(|| panic!("{run} not shipped"));
                if let Some(before) = shipped.get(run) {
                    assert_eq!(&now, before, "`{cmd}` shipped {run}'s rows again");
                }
                shipped.insert(run.clone(), now);
            }
        }
    }
    assert!(
        pending.is_empty(),
        "runs made but never shipped: {pending:?}"
    );
    assert!(
        shipped.len() > samples.len() + 5,
        "the quick start adds runs with both generators: {cmds:?}"
    );
}
