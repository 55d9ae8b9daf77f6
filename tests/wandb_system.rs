//! System metrics and `sync` parity, against the real wandb SDK (0.31.0).
//!
//! The SDK's side is recorded by scripts/record-wandb-sdk
//! (`sdk_system_recording_is_current`): tests/py/sdk_system.py lives long
//! enough for the SDK's system monitor to sample, online against the
//! stand-in and offline; what it sent (`wandb-events.jsonl` lines,
//! `output.log`, run files), the records of its offline directory and what
//! real `wandb sync` sends for that directory go, with times and device
//! names masked, into tests/fixtures/wandb-sdk-system.json, and the offline
//! directory itself into tests/fixtures/wandb-sdk-offline/.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use support::harness;
use support::sdk::{self, SYSTEM_FIXTURE};
use support::standin::{parse_extended_json, Recorded, StandIn};

/// The offline directory the SDK wrote for that recording.
const OFFLINE_FIXTURE: &str = "tests/fixtures/wandb-sdk-offline";
/// How long the SDK's run lives: three samples at the SDK's 15 s interval
/// (one at the start, then every interval).
const LIVE_SECS: &str = "32";

/// A metric key with what varies between machines masked: the block
/// device of `disk.<dev>.in/out` (not the mount paths: `disk./.usageGB`
/// names the path the SDK watches).
fn mask_key(k: &str) -> String {
    if let Some(rest) = k.strip_prefix("system.disk.").or(k.strip_prefix("disk.")) {
        let prefix = &k[..k.len() - rest.len()];
        for suffix in [".in", ".out"] {
            if let Some(dev) = rest.strip_suffix(suffix) {
                if !dev.starts_with('/') {
                    return format!("{prefix}<device>{suffix}");
                }
            }
        }
    }
    k.to_string()
}

/// Every `files.<name>` chunk of the file_stream requests, in order:
/// (offset, lines).
fn stream_chunks(reqs: &[Recorded], name: &str) -> Vec<(u64, Vec<String>)> {
    reqs.iter()
        .filter(|r| r.is_file_stream())
        .filter_map(|r| {
            let v = r.json();
            let f = v.get("files")?.get(name)?.clone();
            let lines = f["content"]
                .as_array()?
                .iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect();
            Some((f["offset"].as_u64()?, lines))
        })
        .collect()
}

/// The lines of a streamed file by offset (later chunks overwrite).
fn stream_lines(reqs: &[Recorded], name: &str) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    for (offset, lines) in stream_chunks(reqs, name) {
        for (i, l) in lines.into_iter().enumerate() {
            out.insert(offset + i as u64, l);
        }
    }
    out
}

/// What a `wandb-events.jsonl` stream shows: the keys of each line
/// (masked), each value's JSON kind, and the seconds between samples.
fn events_shape(lines: &BTreeMap<u64, String>) -> Value {
    let parsed: Vec<Value> = lines.values().map(|l| parse_extended_json(l)).collect();
    let keys: Vec<Vec<String>> = parsed
        .iter()
        .map(|v| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().map(|k| mask_key(k)).collect();
            k.sort();
            k.dedup();
            k
        })
        .collect();
    let mut kinds = BTreeMap::new();
    for v in &parsed {
        for (k, x) in v.as_object().unwrap() {
            let kind = match x {
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                _ => "other",
            };
            kinds.insert(mask_key(k), kind);
        }
    }
    let times: Vec<f64> = parsed
        .iter()
        .filter_map(|v| v["_timestamp"].as_f64())
        .collect();
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).round() as i64)
        .collect();
    json!({
        "offsets": lines.keys().collect::<Vec<_>>(),
        "line_keys": keys,
        "kinds": kinds,
        "seconds_between_samples": gaps,
        "first_runtime_under_5s": parsed.first().and_then(|v| v["_runtime"].as_f64()).map(|r| r < 5.0),
    })
}

/// An `output.log` line with its time masked: `[ERROR ]<time> <text>`.
fn mask_console(line: &str) -> String {
    let (prefix, rest) = match line.strip_prefix("ERROR ") {
        Some(r) => ("ERROR ", r),
        None => ("", line),
    };
    match rest.split_once(' ') {
        Some((t, text)) if t.len() >= 19 && t.as_bytes()[4] == b'-' && t.contains('T') => {
            format!("{prefix}<time> {text}")
        }
        _ => line.to_string(),
    }
}

fn graphql(reqs: &[Recorded], op: &str) -> Vec<Value> {
    reqs.iter()
        .filter(|r| r.path == "/graphql" && r.operation().as_deref() == Some(op))
        .map(|r| r.json())
        .collect()
}

/// The files a client uploaded (CreateRunFiles names) and the `uploaded`
/// lists of its file_stream requests.
fn files_shape(reqs: &[Recorded]) -> Value {
    let asked: BTreeSet<String> = graphql(reqs, "CreateRunFiles")
        .iter()
        .flat_map(|b| {
            b["variables"]["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    let uploaded: BTreeSet<String> = reqs
        .iter()
        .filter(|r| r.is_file_stream())
        .flat_map(|r| r.json()["uploaded"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    json!({"created": asked, "uploaded": uploaded})
}

/// The last config UpsertBucket sent, parsed.
fn last_config(reqs: &[Recorded]) -> Value {
    graphql(reqs, "UpsertBucket")
        .iter()
        .rev()
        .find_map(|b| b["variables"]["config"].as_str().map(str::to_string))
        .map(|c| serde_json::from_str(&c).unwrap())
        .unwrap_or(Value::Null)
}

fn sorted_keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// What one client sent for the run: events, console, files, config keys.
fn requests_shape(reqs: &[Recorded]) -> Value {
    let console: Vec<String> = stream_lines(reqs, "output.log")
        .values()
        .map(|l| mask_console(l))
        .collect();
    let config = last_config(reqs);
    let streamed: BTreeSet<String> = reqs
        .iter()
        .filter(|r| r.is_file_stream())
        .flat_map(|r| sorted_keys(&r.json()["files"]))
        .collect();
    json!({
        "file_stream_files": streamed,
        "events": events_shape(&stream_lines(reqs, "wandb-events.jsonl")),
        "console": console,
        "files": files_shape(reqs),
        "config_keys": sorted_keys(&config),
        "config_wandb_keys": sorted_keys(&config["_wandb"]["value"]),
    })
}

/// Every record of a `.wandb` log, whole, as W&B's reader decodes it
/// (tests/py/wandb_records_dump.py): (type, record).
fn dump_records(file: &Path) -> Vec<(String, Value)> {
    sdk::datastore_run("tests/py/wandb_records_dump.py", file)
        .into_iter()
        .map(|v| {
            (
                v["type"].as_str().unwrap_or("").to_string(),
                v["record"].clone(),
            )
        })
        .collect()
}

/// Stats records in a log being written (0 while W&B's reader cannot
/// read it to its end yet).
fn stats_records_so_far(run_dir: &Path) -> usize {
    let Some(file) = std::fs::read_dir(run_dir).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "wandb"))
    }) else {
        return 0;
    };
    let out = std::process::Command::new(sdk::datastore_python())
        .arg(harness::repo().join("tests/py/wandb_records_dump.py"))
        .arg(file)
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("{\"type\": \"stats\""))
            .count(),
        _ => 0,
    }
}

/// The stats records of a log: each one's item keys (masked) and kinds
/// of value text, and the seconds between their timestamps.
fn stats_shape(records: &[(String, Value)]) -> Value {
    let stats: Vec<&Value> = records
        .iter()
        .filter(|(t, _)| t == "stats")
        .map(|(_, r)| r)
        .collect();
    let keys: Vec<Vec<String>> = stats
        .iter()
        .map(|r| {
            let mut k: Vec<String> = r["item"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|i| mask_key(i["key"].as_str().unwrap_or("")))
                .collect();
            k.sort();
            k.dedup();
            k
        })
        .collect();
    let times: Vec<f64> = stats
        .iter()
        .filter_map(|r| r["timestamp"].as_str())
        .map(|t| {
            let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .unwrap();
            t.unix_timestamp_nanos() as f64 / 1e9
        })
        .collect();
    let gaps: Vec<i64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).round() as i64)
        .collect();
    let stats_type: BTreeSet<String> = stats
        .iter()
        .map(|r| {
            r["stats_type"]
                .as_str()
                .unwrap_or("SYSTEM (default)")
                .to_string()
        })
        .collect();
    json!({"item_keys": keys, "seconds_between_samples": gaps, "stats_type": stats_type})
}

/// The console records of a log: (stream, text) in order.
fn console_records(records: &[(String, Value)]) -> Vec<Value> {
    records
        .iter()
        .filter(|(t, _)| t == "output_raw" || t == "output")
        .map(|(t, r)| {
            json!({
                "type": t,
                "stream": r["output_type"].as_str().unwrap_or("STDERR (default)"),
                "line": r["line"],
            })
        })
        .collect()
}

/// What an SDK offline directory holds: record types, stats records,
/// console records, files.
fn offline_shape(run_dir: &Path) -> Value {
    let records = dump_records(&sdk::log_in(run_dir));
    let types: BTreeSet<String> = records.iter().map(|(t, _)| t.clone()).collect();
    let mut files: Vec<String> = std::fs::read_dir(run_dir.join("files"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    json!({
        "record_types": types,
        "stats": stats_shape(&records),
        "console": console_records(&records),
        "files": files,
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The SDK script with its defaults for stats, console and metadata
/// (the other SDK tests turn them off).
fn sdk_system_command(
    dir: &Path,
    name: &str,
    run: &str,
    standin: Option<&StandIn>,
) -> (std::process::Command, PathBuf) {
    let script = harness::repo().join("tests/py/sdk_system.py");
    let (mut c, wdir) = sdk::script_command(dir, name, &script, &[run, "R", LIVE_SECS], standin);
    for k in [
        "WANDB_CONSOLE",
        "WANDB_X_DISABLE_STATS",
        "WANDB_X_DISABLE_META",
        "WANDB_X_SAVE_REQUIREMENTS",
    ] {
        c.env_remove(k);
    }
    (c, wdir)
}

/// Runs the SDK online and offline at once, and `wandb sync` of the
/// offline directory; returns the recording and the offline directory.
fn record_sdk_system(dir: &Path) -> (Value, PathBuf) {
    let run = RUN;
    let online = StandIn::start();
    let (mut on, _) = sdk_system_command(dir, "online", run, Some(&online));
    let (mut off, off_dir) = sdk_system_command(dir, "offline", run, None);
    let mut on = harness::spawn(&mut on);
    let mut off = harness::spawn(&mut off);
    for (who, child) in [("online", &mut on), ("offline", &mut off)] {
        let status = harness::wait_child(child, std::time::Duration::from_secs(240));
        assert!(
            status.success(),
            "the SDK script ({who}) failed: {status:?}"
        );
    }
    let run_dir = sdk::offline_dir(&off_dir);
    // A copy for wandb sync: it marks what it synced.
    let synced_dir = dir.join("synced").join(run_dir.file_name().unwrap());
    copy_dir(&run_dir, &synced_dir);
    let synced = StandIn::start();
    sdk::wandb_sync(dir, &synced_dir, &synced);
    let rec = json!({
        "made_by": "scripts/record-wandb-sdk (tests/wandb_system.rs, record_sdk_system; SDK script tests/py/sdk_system.py)",
        "wandb": sdk::SDK_VERSION,
        "online": requests_shape(&online.requests()),
        "offline": offline_shape(&run_dir),
        "wandb_sync": requests_shape(&synced.requests()),
    });
    (rec, run_dir)
}

/// The SDK-written offline directory committed with the recording.
fn offline_fixture() -> PathBuf {
    let root = harness::repo().join(OFFLINE_FIXTURE);
    std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "cannot read {}: {e} (scripts/record-wandb-sdk makes it)",
                root.display()
            )
        })
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("offline-run-")
        })
        .unwrap_or_else(|| panic!("no offline-run-* in {}", root.display()))
}

/// The committed recording is what the SDK sends today; with
/// `MOSAIC_RECORD_FIXTURES=1` (scripts/record-wandb-sdk) it and the
/// offline directory are rewritten.
#[test]
#[ignore = "re-records the real SDK (about 45 s): scripts/record-wandb-sdk runs it"]
fn sdk_system_recording_is_current() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let (got, run_dir) = record_sdk_system(tmp.path());
    let got = sdk::stamp(&got, SYSTEM_FIXTURE);
    if std::env::var_os("MOSAIC_RECORD_FIXTURES").is_some_and(|v| v == "1") {
        let path = harness::repo().join(SYSTEM_FIXTURE);
        let mut text = serde_json::to_string_pretty(&got).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        let root = harness::repo().join(OFFLINE_FIXTURE);
        let _ = std::fs::remove_dir_all(&root);
        let to = root.join(run_dir.file_name().unwrap());
        // The run's log and files; not the SDK's debug logs.
        std::fs::create_dir_all(&to).unwrap();
        let log = sdk::log_in(&run_dir);
        std::fs::copy(&log, to.join(log.file_name().unwrap())).unwrap();
        copy_dir(&run_dir.join("files"), &to.join("files"));
        eprintln!("wrote {} and {}", path.display(), to.display());
        return;
    }
    assert_eq!(
        got,
        sdk::fixture(SYSTEM_FIXTURE),
        "the SDK no longer sends what {SYSTEM_FIXTURE} recorded: run scripts/record-wandb-sdk and review the change"
    );
    // The committed directory is one the SDK writes so.
    assert_eq!(offline_shape(&offline_fixture()), got["offline"]);
}

/// `mosaic-shipper sync <run_dir>` to `standin`; must succeed.
fn shipper_sync(dir: &Path, standin: &StandIn, args: &[&str]) -> String {
    let config = harness::write_config(dir, &standin.base_url(), "");
    let mut c = harness::shipper(dir, "sync", &config, args);
    let err_path = dir.join("sync-stderr.log");
    c.stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = harness::spawn(&mut c);
    let status = harness::wait_child(&mut child.0, std::time::Duration::from_secs(180));
    let text = std::fs::read_to_string(&err_path).unwrap();
    assert!(status.success(), "mosaic-shipper sync failed:\n{text}");
    text
}

/// For a look at both sides while developing: MOSAIC_DUMP_REQUESTS=DIR.
fn dump(name: &str, reqs: &[Recorded]) {
    let Some(dir) = std::env::var_os("MOSAIC_DUMP_REQUESTS") else {
        return;
    };
    let text: String = reqs
        .iter()
        .map(|r| {
            format!(
                "{} {}\n{}\n\n",
                r.method,
                r.path,
                String::from_utf8_lossy(&r.body)
            )
        })
        .collect();
    std::fs::write(Path::new(&dir).join(name), text).unwrap();
}

/// `mosaic-shipper sync` of a directory the SDK wrote sends what real
/// `wandb sync` sends for it: history, summary, config with the SDK's own
/// `_wandb`, system metrics (`wandb-events.jsonl`), console output
/// (`output.log`) and files (`wandb-metadata.json`, `requirements.txt`).
#[test]
fn sync_of_an_sdk_directory_sends_what_wandb_sync_sends() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fixture = offline_fixture();
    let name = fixture.file_name().unwrap();
    let (theirs_dir, ours_dir) = (dir.join("theirs").join(name), dir.join("ours").join(name));
    copy_dir(&fixture, &theirs_dir);
    copy_dir(&fixture, &ours_dir);
    let theirs = StandIn::start();
    sdk::wandb_sync(dir, &theirs_dir, &theirs);
    let ours = StandIn::start();
    shipper_sync(dir, &ours, &[ours_dir.to_str().unwrap()]);
    let (t, o) = (theirs.requests(), ours.requests());
    dump("theirs.txt", &t);
    dump("ours.txt", &o);
    assert_eq!(requests_shape(&o), requests_shape(&t));

    // System metrics: the same lines at the same offsets, value for value
    // (times to the microsecond: core takes durations in nanoseconds).
    let (te, oe) = (
        stream_lines(&t, "wandb-events.jsonl"),
        stream_lines(&o, "wandb-events.jsonl"),
    );
    assert_eq!(te.len(), 3, "the recording holds three samples");
    assert_eq!(te.keys().collect::<Vec<_>>(), oe.keys().collect::<Vec<_>>());
    for (off, line) in &te {
        same_values(
            &parse_extended_json(line),
            &parse_extended_json(&oe[off]),
            1e-6,
            &format!("events line {off}"),
        );
    }
    // History and summary, value for value.
    let (th, oh) = (&theirs.runs()[RUN], &ours.runs()[RUN]);
    assert_eq!(th.history.len(), 32);
    assert_eq!(
        th.history.keys().collect::<Vec<_>>(),
        oh.history.keys().collect::<Vec<_>>()
    );
    for (off, line) in &th.history {
        same_values(
            &parse_extended_json(line),
            &parse_extended_json(&oh.history[off]),
            0.0,
            &format!("history line {off}"),
        );
    }
    same_values(
        &parse_extended_json(th.summary.as_deref().unwrap()),
        &parse_extended_json(oh.summary.as_deref().unwrap()),
        0.0,
        "summary",
    );
    assert_eq!((th.exit_code, oh.exit_code), (Some(0), Some(0)));
    // Console: the same text, in order; ours carries the time each line
    // was printed (wandb sync stamps them with the time it uploads).
    let oc: Vec<String> = stream_lines(&o, "output.log").into_values().collect();
    assert!(
        oc[0].starts_with(&console_time_of_first_output(&fixture)),
        "{oc:?}"
    );
    // Config, `_wandb` included, but what describes `wandb sync` itself:
    // core's version (`t.12`) and its own feature flag `sync2` (76).
    let mut tc = last_config(&t);
    let oc = last_config(&o);
    let tt = tc["_wandb"]["value"]["t"].as_object_mut().unwrap();
    assert_eq!(tt.remove("12"), Some(json!("0.31.0")), "core's version");
    let features = tt["3"].as_array_mut().unwrap();
    assert!(features.contains(&json!(76)), "sync2");
    features.retain(|f| *f != json!(76));
    // `_wandb.e` is keyed by a writer id: `wandb sync` makes a new one
    // for itself each time, the agent keeps the SDK's (each value names it
    // as `writerId` anyway); the values are the same.
    let values = |c: &mut Value| -> Vec<Value> {
        let e = c["_wandb"]["value"]
            .as_object_mut()
            .unwrap()
            .remove("e")
            .expect("_wandb.e");
        e.as_object().unwrap().values().cloned().collect()
    };
    let mut oc = oc;
    assert_eq!(values(&mut oc), values(&mut tc), "_wandb.e");
    assert_eq!(oc, tc, "config");
    // Files: the same bodies (config.yaml aside: YAML there, its JSON
    // subset here, compared above as the config).
    for name in [
        "wandb-metadata.json",
        "requirements.txt",
        "output.log",
        "wandb-summary.json",
    ] {
        let body = |reqs: &[Recorded]| {
            reqs.iter()
                // The stand-in hands out `/upload/<run>/<file>`.
                .find(|r| {
                    r.method == "PUT"
                        && r.path.starts_with("/upload/")
                        && r.path.ends_with(&format!("/{name}"))
                })
                .map(|r| r.body.clone())
                .unwrap_or_else(|| panic!("{name} not uploaded"))
        };
        let (tb, ob) = (body(&t), body(&o));
        if name.ends_with(".json") {
            let parse = |b: &[u8]| parse_extended_json(&String::from_utf8_lossy(b));
            same_values(&parse(&tb), &parse(&ob), 0.0, name);
        } else {
            assert_eq!(
                String::from_utf8_lossy(&ob),
                String::from_utf8_lossy(&tb),
                "{name}"
            );
        }
    }
}

/// The run id of the recording.
const RUN: &str = "01jdas000000000000000system";

/// `a` and `b` hold the same keys and values, numbers within `tol`.
fn same_values(a: &Value, b: &Value, tol: f64, what: &str) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{what}: keys"
            );
            for (k, v) in x {
                same_values(v, &y[k], tol, &format!("{what}.{k}"));
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= tol * x.abs().max(1.0),
                "{what}: {x} vs {y}"
            );
        }
        _ => assert_eq!(a, b, "{what}"),
    }
}

/// `<UTC time>` of the first console record of the fixture's log, as an
/// `output.log` line starts with it.
fn console_time_of_first_output(run_dir: &Path) -> String {
    let records = dump_records(&sdk::log_in(run_dir));
    let first = records
        .iter()
        .find(|(t, _)| t == "output_raw")
        .expect("a console record");
    let t = first.1["timestamp"].as_str().unwrap();
    // 2026-12-02T05:09:28.895491Z -> 2026-12-02T05:09:28.895491
    let t = t.trim_end_matches('Z');
    let (base, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{base}.{:0<6}", &frac[..frac.len().min(6)])
}

/// A stand-in `nvidia-smi` in `dir/bin`: for the agent's `--query-gpu`
/// query it prints what the real one prints (`csv,noheader,nounits`: one
/// line per GPU, `, ` between values, `[N/A]` / `[Not Supported]` for
/// readings a board lacks), and for the Overview's device query each
/// GPU's name, MiB, UUID and bus id; no compute processes; anything else
/// fails.
fn fake_nvidia_smi(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("nvidia-smi");
    let query = "index,uuid,utilization.gpu,utilization.memory,memory.total,memory.used,temperature.gpu,power.draw,enforced.power.limit,clocks.sm,clocks.mem,clocks.gr,fan.speed,utilization.encoder,ecc.errors.corrected.volatile.total,ecc.errors.uncorrected.volatile.total,pcie.link.gen.current,pcie.link.width.current,pcie.link.gen.max,pcie.link.width.max";
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = \"--query-gpu={query}\" ] && [ \"$2\" = \"--format=csv,noheader,nounits\" ]; then\n  printf '0, GPU-5f1d2c3e-aaaa, 87, 41, 16384, 6144, 66, 182.35, 250.00, 1755, 6250, 1755, 45, 0, 0, 0, 3, 16, 3, 16\\n1, GPU-5f1d2c3e-bbbb, 0, 0, 8192, 0, 35, [N/A], [N/A], 300, 405, 300, [Not Supported], 0, [N/A], [N/A], 1, 16, 3, 16\\n'\n  exit 0\nfi\nif [ \"$1\" = \"--query-gpu=name,memory.total,uuid,pci.bus_id\" ] && [ \"$2\" = \"--format=csv,noheader,nounits\" ]; then\n  printf 'NVIDIA A100-SXM4-40GB, 40960, GPU-5f1d2c3e-aaaa, 00000000:07:00.0\\nTesla T4, 15360, GPU-5f1d2c3e-bbbb, 00000000:0A:00.0\\n'\n  exit 0\nfi\nif [ \"$1\" = \"--query-compute-apps=pid,gpu_uuid\" ]; then exit 0; fi\nif [ \"$*\" = \"-q -d COMPUTE\" ]; then\n  printf '\\n==============NVSMI LOG==============\\n\\nTimestamp                                 : Wed Dec  2 05:09:28 2026\\nDriver Version                            : 535.104.05\\nCUDA Version                              : 12.2\\n\\nAttached GPUs                             : 2\\nGPU 00000000:07:00.0\\n    Compute Mode                          : Default\\n\\nGPU 00000000:0A:00.0\\n    Compute Mode                          : Default\\n\\n'\n  exit 0\nfi\necho \"unexpected arguments: $*\" >&2\nexit 2\n"
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A worker (sh) that keeps its run's log open and writes a metrics line
/// a second for `secs` seconds, or until a file `go` exists in its
/// working directory.
fn worker_script(run: &str, secs: u32) -> String {
    format!(
        "mkdir -p var/trainer/runs/{run}/logs && exec 3>>var/trainer/runs/{run}/logs/worker.log && i=0; while [ $i -lt {secs} ] && [ ! -e go ]; do echo \"{{\\\"event\\\": \\\"metrics\\\", \\\"run_id\\\": \\\"{run}\\\", \\\"global_step\\\": $i, \\\"episodic_return\\\": $i.5}}\" >&3; i=$((i+1)); sleep 1; done"
    )
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// The SDK's `wandb-events.jsonl` keys, masked, of its first sample
/// (no `cpu` yet) and of the later ones.
fn sdk_event_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let f = sdk::fixture(SYSTEM_FIXTURE);
    let lines = f["online"]["events"]["line_keys"]
        .as_array()
        .unwrap()
        .clone();
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    };
    (set(&lines[0]), set(lines.last().unwrap()))
}

/// Init mode, online: the worker's tree is sampled at the interval, and
/// each sample reaches W&B as a `wandb-events.jsonl` line with exactly
/// the keys the SDK sends, plus the GPUs `nvidia-smi` reports under the
/// SDK's `system.gpu.<i>.*` names.
#[test]
fn init_mode_streams_system_metrics_as_the_sdk_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JDAS0000000000000SYSINIT";
    fake_nvidia_smi(dir);
    let standin = StandIn::start();
    let config = harness::write_config(dir, &standin.base_url(), "");
    append(&config, "\n[system_metrics]\ninterval_secs = 1.0\n");
    let mut c = harness::agent(dir, &config, &["--", "sh", "-c", &worker_script(run, 120)]);
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.env("PATH", path);
    let mut child = harness::spawn(&mut c);
    let id = harness::wandb_id(run);
    // The worker lives until three samples are on the stand-in (at most
    // two minutes), then ends.
    harness::wait_for(
        dir,
        std::time::Duration::from_secs(100),
        "three samples",
        || {
            stream_lines(
                &standin
                    .requests()
                    .into_iter()
                    .filter(|r| r.path.contains(&id))
                    .collect::<Vec<_>>(),
                "wandb-events.jsonl",
            )
            .len()
                >= 3
        },
    );
    std::fs::write(dir.join("go"), b"").unwrap();
    let status = harness::wait_child(&mut child.0, std::time::Duration::from_secs(120));
    assert!(status.success(), "{}", harness::stderr_logs(dir));
    let reqs = standin.requests();
    let lines: BTreeMap<u64, String> = reqs
        .iter()
        .filter(|r| r.is_file_stream() && r.path.contains(&id))
        .filter_map(|r| {
            let v = r.json();
            let f = v.get("files")?.get("wandb-events.jsonl")?.clone();
            let off = f["offset"].as_u64()?;
            Some(
                f["content"]
                    .as_array()?
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (off + i as u64, l.as_str().unwrap().to_string()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    assert!(
        lines.len() >= 3,
        "samples: {lines:?}\n{}",
        harness::stderr_logs(dir)
    );
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        (0..lines.len() as u64).collect::<Vec<_>>(),
        "offsets"
    );
    let (sdk_first, sdk_later) = sdk_event_keys();
    for (off, line) in &lines {
        let v = parse_extended_json(line);
        assert_eq!(v["_wandb"], true);
        let keys: BTreeSet<String> = v.as_object().unwrap().keys().map(|k| mask_key(k)).collect();
        let (gpu, host): (BTreeSet<String>, BTreeSet<String>) =
            keys.into_iter().partition(|k| k.starts_with("system.gpu."));
        let want = if *off == 0 { &sdk_first } else { &sdk_later };
        assert_eq!(&host, want, "line {off}: {line}");
        // GPU 0 has every reading, GPU 1 lacks power, fan and ECC.
        for k in [
            "gpu",
            "memory",
            "memoryAllocated",
            "memoryAllocatedBytes",
            "temp",
            "powerWatts",
            "enforcedPowerLimitWatts",
            "powerPercent",
            "smClock",
            "memoryClock",
            "graphicsClock",
            "fanSpeed",
            "encoderUtilization",
            "correctedMemoryErrors",
            "uncorrectedMemoryErrors",
            "pcieLinkGen",
            "pcieLinkWidth",
            "maxPcieLinkGen",
            "maxPcieLinkWidth",
        ] {
            assert!(
                gpu.contains(&format!("system.gpu.0.{k}")),
                "line {off}: no gpu.0.{k}: {line}\n{}",
                harness::stderr_logs(dir)
            );
        }
        assert!(gpu.contains("system.gpu.1.temp"));
        assert!(!gpu.contains("system.gpu.1.powerWatts"));
        assert_eq!(v["system.gpu.0.memoryAllocated"], json!(37.5));
        assert_eq!(v["system.gpu.0.powerWatts"], json!(182.35));
        assert!(v["system.proc.memory.rssMB"].as_f64().unwrap() > 0.0);
        assert!(v["system.proc.cpu.threads"].as_f64().unwrap() >= 1.0);
    }
    // The Overview lists the GPUs as the SDK's metadata does (`gpu` is
    // the first one's name; protojson writes uint64 bytes as strings).
    let metadata: Value =
        serde_json::from_slice(&standin.runs()[&id].files["wandb-metadata.json"]).unwrap();
    assert_eq!(metadata["gpu"], "NVIDIA A100-SXM4-40GB", "{metadata}");
    assert_eq!(metadata["gpu_count"], 2);
    assert_eq!(metadata["cudaVersion"], "12.2", "{metadata}");
    // Every key is a JSON name of the SDK's own messages (0.31.0's
    // EnvironmentRecord and GpuNvidiaInfo, as protojson writes them).
    let (env_names, gpu_names) = sdk_environment_json_names();
    for k in metadata.as_object().unwrap().keys() {
        assert!(
            env_names.contains(k),
            "{k} is not an EnvironmentRecord JSON name"
        );
    }
    for g in metadata["gpu_nvidia"].as_array().unwrap() {
        for k in g.as_object().unwrap().keys() {
            assert!(
                gpu_names.contains(k),
                "{k} is not a GpuNvidiaInfo JSON name"
            );
        }
    }
    assert_eq!(
        metadata["gpu_nvidia"],
        json!([
            {"name": "NVIDIA A100-SXM4-40GB", "memoryTotal": (40960u64 << 20).to_string(), "uuid": "GPU-5f1d2c3e-aaaa", "pciBusId": "00000000:07:00.0"},
            {"name": "Tesla T4", "memoryTotal": (15360u64 << 20).to_string(), "uuid": "GPU-5f1d2c3e-bbbb", "pciBusId": "00000000:0A:00.0"},
        ])
    );
    // The worker's rows arrived as well, and the run completed with 0.
    let got = &standin.runs()[&id];
    assert!(got.history.len() >= 3);
    assert_eq!(got.exit_code, Some(0));
}

/// The JSON names (protojson's, as core writes `wandb-metadata.json`)
/// of the installed SDK's `EnvironmentRecord` and `GpuNvidiaInfo` fields.
fn sdk_environment_json_names() -> (BTreeSet<String>, BTreeSet<String>) {
    let out = std::process::Command::new(sdk::python())
        .args([
            "-c",
            "import json; from wandb.proto import wandb_internal_pb2 as p; \
             names = lambda m: [f.json_name for f in m.DESCRIPTOR.fields]; \
             print(json.dumps([names(p.EnvironmentRecord), names(p.GpuNvidiaInfo)]))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    (
        v[0].iter().cloned().collect(),
        v[1].iter().cloned().collect(),
    )
}

/// The daemon with `enabled = true`, offline: a worker found by the file
/// it holds open gets stats records W&B's own reader decodes, and real
/// `wandb sync` uploads them as the run's `wandb-events.jsonl`.
#[test]
fn daemon_offline_samples_are_stats_records_wandb_sync_uploads() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JDAS00000000000000SYSOFF";
    let standin = StandIn::start();
    let extra = format!(
        "mode = \"offline\"\noffline_dir = \"{}\"",
        dir.join("wandb").display()
    );
    let config = harness::write_config(dir, &standin.base_url(), &extra);
    append(
        &config,
        "\n[system_metrics]\nenabled = true\ninterval_secs = 1.0\nnvidia_smi = \"/nonexistent/nvidia-smi\"\n",
    );
    // The worker lives until the agent has written three samples (at most
    // two minutes).
    let mut worker = std::process::Command::new("sh");
    worker
        .args(["-c", &worker_script(run, 120)])
        .current_dir(dir);
    let mut worker = harness::spawn(&mut worker);
    let mut agent = harness::spawn(&mut harness::agent(dir, &config, &[]));
    let offline_run = || {
        std::fs::read_dir(dir.join("wandb"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("offline-run-"))
    };
    harness::wait_for(
        dir,
        std::time::Duration::from_secs(100),
        "three stats records",
        || offline_run().is_some_and(|d| stats_records_so_far(&d) >= 3),
    );
    worker.0.kill().unwrap();
    worker.0.wait().unwrap();
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    assert!(harness::wait_child(&mut agent.0, std::time::Duration::from_secs(60)).success());
    // One run, one directory: a sample taken as the worker ended does not
    // start another.
    let dirs: Vec<_> = std::fs::read_dir(dir.join("wandb"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains("offline-run-"))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}\n{}", harness::stderr_logs(dir));
    let run_dir = offline_run().unwrap();
    let records = dump_records(&sdk::log_in(&run_dir));
    let stats = stats_shape(&records);
    let keys = stats["item_keys"].as_array().unwrap();
    assert!(
        keys.len() >= 3,
        "stats records: {stats}\n{}",
        harness::stderr_logs(dir)
    );
    let sdk = sdk::fixture(SYSTEM_FIXTURE);
    let sdk_keys = sdk["offline"]["stats"]["item_keys"].as_array().unwrap();
    assert_eq!(keys[0], sdk_keys[0], "first sample: the SDK's keys");
    assert_eq!(keys[1], sdk_keys[1], "later samples: the SDK's keys");
    // wandb sync uploads them.
    sdk::wandb_sync(dir, &run_dir, &standin);
    let events = stream_lines(&standin.requests(), "wandb-events.jsonl");
    assert_eq!(events.len(), keys.len());
    let first = parse_extended_json(&events[&1]);
    assert!(
        first["system.proc.memory.rssMB"].as_f64().unwrap() > 0.0,
        "{first}"
    );
    assert_eq!(first["_wandb"], true);
}
