//! Carrying rows staged for W&B between machines: `export --to DIR` on an
//! air-gapped machine (A, `sinks.wandb.mode = "stage"`), `import DIR` on a
//! connected one (B). Each machine is its own scratch tree with its own
//! store; the bundles travel through a third directory (the USB stick).

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{gen_logs, key, read_jsonl, Tree};
use sha2::{Digest, Sha256};

const RUN1: &str = "01JF3Q8ZK6T9V0W2X4Y5Z6A7B8";
const RUN2: &str = "01JF3QA2M8N4P6R8S0T2V4W6X8";

/// Tensorboard is off on both machines: these tests are about the journal.
const TB_OFF: (&str, &str) = ("enabled = true\ndir", "enabled = false\ndir");

/// Machine A: jsonl on, W&B rows staged in the journal.
fn staging_machine() -> Tree {
    let t = Tree::new();
    t.write_config_with(&[TB_OFF, ("# mode = \"online\"", "mode = \"stage\"")]);
    t
}

/// Machine B: jsonl on, W&B off.
fn receiving_machine() -> Tree {
    let t = Tree::new();
    t.write_config_with(&[TB_OFF, ("enabled = \"auto\"", "enabled = false")]);
    t
}

/// Runs the binary on `t` with no W&B settings from the test's environment.
fn shipper(t: &Tree, args: &[&str]) -> Output {
    let mut c = t.shipper(args);
    for var in [
        "WANDB_MODE",
        "WANDB_DISABLED",
        "WANDB_API_KEY",
        "WANDB_BASE_URL",
    ] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null()).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// A failure: exit 1, one `mosaic-shipper: ...` message; returns stderr.
fn refused(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.starts_with("mosaic-shipper: "), "{err}");
    err
}

fn run_once(t: &Tree) {
    ok(shipper(t, &["run", "--once"]));
}

fn export(t: &Tree, to: &Path) -> Output {
    shipper(t, &["export", "--to", to.to_str().unwrap()])
}

fn import(t: &Tree, dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["import", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    shipper(t, &args)
}

fn sink<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {status}"))
}

fn append(path: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

fn jsonl_bytes(t: &Tree, run: &str) -> Vec<u8> {
    std::fs::read(
        t.root()
            .join("var/trainer/runs")
            .join(run)
            .join("shipper/rows.jsonl"),
    )
    .unwrap()
}

fn logs(t: &Tree, run: &str, rows: &str, seed: &str, expect: Option<&Path>) {
    let mut args = vec![
        "--rows",
        rows,
        "--max-bytes",
        "40000",
        "--run-id",
        run,
        "--seed",
        seed,
    ];
    let e = expect.map(|e| e.display().to_string());
    if let Some(e) = &e {
        args.extend_from_slice(&["--expect", e]);
    }
    gen_logs(t.root(), &args);
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

fn copy_bundle(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for name in names(from) {
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
    to.to_path_buf()
}

#[test]
fn staged_rows_travel_bit_exactly_and_flow_to_the_receiving_sinks() {
    let (a, b, stick) = (
        staging_machine(),
        receiving_machine(),
        tempfile::tempdir().unwrap(),
    );
    let expect = a.root().join("expect.jsonl");
    logs(&a, RUN1, "3000", "7", Some(&expect));
    // Records about the run, which W&B uses and the jsonl sink skips.
    let events = a.logs(RUN1).join("events.jsonl");
    append(
        &events,
        &format!(r#"{{"event": "config", "run_id": "{RUN1}", "config": {{"lr": 0.00025}}}}"#),
    );
    append(
        &events,
        &format!(r#"{{"event": "run_finished", "run_id": "{RUN1}", "exit_code": 0}}"#),
    );
    run_once(&a);
    let before = a.status_json();
    let total = before["store"]["last_seq"].as_u64().unwrap();
    // One record of the machine facts per run and agent start (W&B's
    // Overview: the host that produced the rows).
    assert_eq!(
        total, 2003,
        "2000 metric rows, 2 run events, the machine facts"
    );
    assert_eq!(sink(&before, "wandb")["pending"], total, "held for W&B");
    assert_eq!(sink(&before, "jsonl")["pending"], 0);

    let bundle = stick.path().join("bundle-1");
    let out = ok(export(&a, &bundle));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("exported 2003 rows"), "{said}");
    assert_eq!(names(&bundle), ["manifest.json", "rows.bin"]);
    assert_eq!(
        names(stick.path()),
        ["bundle-1"],
        "no temporary directory left"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let rows_bin = std::fs::read(bundle.join("rows.bin")).unwrap();
    assert_eq!(manifest["format"], "mosaic-shipper-bundle");
    assert_eq!(manifest["version"], 1);
    assert_eq!(manifest["rows"], 2003);
    assert_eq!(
        manifest["seq"],
        serde_json::json!({"first": 1, "last": 2003})
    );
    assert_eq!(manifest["runs"], serde_json::json!([RUN1]));
    assert_eq!(manifest["files"][0]["bytes"], rows_bin.len());
    let digest: String = Sha256::digest(&rows_bin)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(manifest["files"][0]["sha256"], digest);
    let after = a.status_json();
    assert_eq!(
        sink(&after, "wandb")["pending"],
        0,
        "handed over to the bundle"
    );

    let out = ok(import(&b, &bundle, &[]));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("imported 2003 rows"), "{said}");
    // B has W&B off: import says where the rows go instead.
    assert!(String::from_utf8_lossy(&out.stderr).contains("W&B sink is not enabled"));
    run_once(&b);
    assert_eq!(
        jsonl_bytes(&b, RUN1),
        jsonl_bytes(&a, RUN1),
        "the same rows, byte for byte: steps, wall times and values (NaN, Infinity) bit-exact"
    );
    let want: Vec<_> = read_jsonl(&expect).iter().map(key).collect();
    let got: Vec<_> = b.delivered(RUN1).iter().map(key).collect();
    assert_eq!(got, want, "what the worker logged");
    assert!(want.iter().any(|(_, _, v)| v.values().any(|x| x == "NaN")));
    let s = b.status_json();
    assert_eq!(s["store"]["last_seq"], 2003, "the run events came along");
    assert_eq!(sink(&s, "jsonl")["pending"], 0);
    let imports = s["imports"].as_array().unwrap();
    assert_eq!(imports.len(), 1);
    assert_eq!(imports[0]["bundle_id"], manifest["bundle_id"]);
    assert_eq!(imports[0]["rows"], 2003);
}

#[test]
fn bundles_are_imported_once_and_in_the_order_they_were_exported() {
    let (a, b, stick) = (
        staging_machine(),
        receiving_machine(),
        tempfile::tempdir().unwrap(),
    );
    logs(&a, RUN1, "600", "1", None);
    run_once(&a);
    let b1 = stick.path().join("b1");
    ok(export(&a, &b1));
    logs(&a, RUN2, "600", "2", None);
    run_once(&a);
    let b2 = stick.path().join("b2");
    ok(export(&a, &b2));
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b2.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m2["seq"], serde_json::json!({"first": 402, "last": 802}));

    let err = refused(import(&a, &b1, &[]));
    assert!(err.contains("exported from this store"), "{err}");

    let err = refused(import(&b, &b2, &[]));
    assert!(
        err.contains(&format!("refusing bundle {}", b2.display())),
        "{err}"
    );
    assert!(
        err.contains("rows #1..#401"),
        "names the missing rows: {err}"
    );
    assert!(err.contains("--allow-gap"), "{err}");
    let s = b.status_json();
    assert_eq!(
        (
            s["store"]["last_seq"].as_u64(),
            s["imports"].as_array().unwrap().len()
        ),
        (Some(0), 0)
    );

    ok(import(&b, &b1, &[]));
    let err = refused(import(&b, &b1, &[]));
    assert!(err.contains("already imported"), "{err}");
    let s = b.status_json();
    assert_eq!(
        (
            s["store"]["last_seq"].as_u64(),
            s["imports"].as_array().unwrap().len()
        ),
        (Some(401), 1)
    );

    ok(import(&b, &b2, &[]));
    run_once(&b);
    for run in [RUN1, RUN2] {
        assert_eq!(jsonl_bytes(&b, run), jsonl_bytes(&a, run), "{run}");
    }
    let err = refused(import(&b, &b1, &[]));
    assert!(err.contains("already imported"), "{err}");
}

#[test]
fn a_damaged_bundle_is_refused_and_changes_nothing() {
    let (a, b, stick) = (
        staging_machine(),
        receiving_machine(),
        tempfile::tempdir().unwrap(),
    );
    logs(&a, RUN1, "600", "3", None);
    run_once(&a);
    let pristine = stick.path().join("pristine");
    ok(export(&a, &pristine));
    run_once(&b); // B's store exists, empty

    type Damage = fn(&Path);
    let cases: &[(&str, Damage, &str)] = &[
        (
            "flipped",
            |d| {
                let mut bytes = std::fs::read(d.join("rows.bin")).unwrap();
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
                std::fs::write(d.join("rows.bin"), bytes).unwrap();
            },
            "rows.bin: SHA-256 mismatch",
        ),
        (
            "truncated",
            |d| {
                let bytes = std::fs::read(d.join("rows.bin")).unwrap();
                std::fs::write(d.join("rows.bin"), &bytes[..bytes.len() - 10]).unwrap();
            },
            "(truncated or damaged)",
        ),
        (
            "deleted",
            |d| std::fs::remove_file(d.join("rows.bin")).unwrap(),
            "rows.bin is missing",
        ),
        (
            "extra",
            |d| std::fs::write(d.join("notes.txt"), b"hi").unwrap(),
            "notes.txt is not listed",
        ),
        (
            "no-manifest",
            |d| std::fs::remove_file(d.join("manifest.json")).unwrap(),
            "no manifest.json",
        ),
        (
            "bad-json",
            |d| {
                let mut text = std::fs::read(d.join("manifest.json")).unwrap();
                text.truncate(text.len() / 2);
                std::fs::write(d.join("manifest.json"), text).unwrap();
            },
            "manifest.json: not valid JSON",
        ),
        (
            "rows-edited",
            |d| edit_manifest(d, |m| m["rows"] = (m["rows"].as_u64().unwrap() + 1).into()),
            "rows is 402",
        ),
        (
            "range-edited",
            |d| {
                edit_manifest(d, |m| {
                    m["rows"] = 402.into();
                    m["seq"]["last"] = 402.into();
                })
            },
            "rows.bin holds 401 rows, manifest.json says 402",
        ),
        (
            "runs-edited",
            |d| edit_manifest(d, |m| m["runs"] = serde_json::json!(["someone-else"])),
            "rows.bin holds runs",
        ),
        (
            "digest-edited",
            |d| edit_manifest(d, |m| m["files"][0]["sha256"] = "ab".repeat(32).into()),
            "SHA-256 mismatch",
        ),
        (
            "newer-version",
            |d| edit_manifest(d, |m| m["version"] = 2.into()),
            "bundle version 2",
        ),
    ];
    for (name, damage, why) in cases {
        let dir = copy_bundle(&pristine, &stick.path().join(name));
        damage(&dir);
        let err = refused(import(&b, &dir, &[]));
        assert!(
            err.contains(&format!("refusing bundle {}", dir.display())),
            "{name}: {err}"
        );
        assert!(err.contains(why), "{name}: wanted {why:?} in {err}");
        assert!(err.contains("nothing was imported"), "{name}: {err}");
        let s = b.status_json();
        assert_eq!(s["store"]["last_seq"], 0, "{name}");
        assert_eq!(s["imports"], serde_json::json!([]), "{name}");
    }
    ok(import(&b, &pristine, &[]));
    assert_eq!(
        b.status_json()["store"]["last_seq"],
        401,
        "the undamaged bundle is fine"
    );
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[test]
fn export_needs_the_store_to_itself_and_rows_staged_for_wandb() {
    let stick = tempfile::tempdir().unwrap();
    let a = staging_machine();
    let err = refused(export(&a, &stick.path().join("none")));
    assert!(err.contains("no store at"), "{err}");

    logs(&a, RUN1, "300", "4", None);
    run_once(&a);
    let pending = sink(&a.status_json(), "wandb")["pending"].clone();
    assert_eq!(pending, 201, "200 rows and the machine facts");

    // A running agent holds the store's lock. Its first status snapshot
    // says it has started; waiting for it with `status` would race the
    // agent for the lock.
    let snapshot = a.store().join("status.json");
    std::fs::remove_file(&snapshot).unwrap();
    let agent_log = a.root().join("agent.err");
    let agent = a.spawn_agent(&[], std::fs::File::create(&agent_log).unwrap().into());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !snapshot.exists() {
        assert!(
            Instant::now() < deadline,
            "the agent wrote no status snapshot:\n{}",
            std::fs::read_to_string(&agent_log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let bundle = stick.path().join("b");
    let err = refused(export(&a, &bundle));
    assert!(
        err.contains("lock") && err.contains("stop the agent"),
        "{err}"
    );
    assert!(!bundle.exists());
    assert_eq!(agent.terminate(), Some(0));

    // A directory that is not empty is not overwritten.
    std::fs::create_dir(&bundle).unwrap();
    std::fs::write(bundle.join("keep.txt"), b"mine").unwrap();
    let err = refused(export(&a, &bundle));
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(names(&bundle), ["keep.txt"]);
    assert_eq!(sink(&a.status_json(), "wandb")["pending"], pending);

    // An existing empty directory is fine; then nothing is left to export.
    std::fs::remove_file(bundle.join("keep.txt")).unwrap();
    ok(export(&a, &bundle));
    let again = stick.path().join("again");
    let out = ok(export(&a, &again));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing to export"),
        "{}",
        text(&out)
    );
    assert!(!again.exists(), "no bundle without rows");

    // W&B not staged: nothing is held for it.
    let c = Tree::new();
    c.write_config_with(&[TB_OFF, ("enabled = \"auto\"", "enabled = false")]);
    logs(&c, RUN1, "30", "5", None);
    run_once(&c);
    let err = refused(export(&c, &stick.path().join("c")));
    assert!(err.contains("nothing is staged for W&B"), "{err}");
    assert!(err.contains("sinks.wandb.mode = \"stage\""), "{err}");
}
