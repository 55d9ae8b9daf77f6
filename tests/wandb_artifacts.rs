//! Checkpoints become versions of W&B model artifacts: the agent's
//! requests against the stand-in match what the real SDK (0.31.0) sends
//! for `run.log_artifact` of the same file (tests/fixtures/
//! wandb-sdk-artifacts.json, scripts/record-wandb-sdk), field by field,
//! manifest digests included; identical content makes no second version;
//! a SIGKILL at any point of an upload leaves exactly the right versions.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::harness::{self, agent, wait_child, wait_for, write_config};
use support::sdk;
use support::standin::StandIn;

/// The SDK recording's run, as a MOSAIC run directory name.
const RUN: &str = "01JDAS000000000000000MODEL";

fn config(dir: &Path, standin: &StandIn) -> PathBuf {
    let path = write_config(dir, &standin.base_url(), "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[artifacts]\nruns_dir = \"{}\"\nsettle_ms = 300\npoll_interval_ms = 100\n",
        dir.join("var/trainer/runs").display()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn checkpoint(dir: &Path) -> PathBuf {
    let p = dir
        .join("var/trainer/runs")
        .join(RUN)
        .join("checkpoints/model.pth");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    p
}

/// Writes a file the way `torch.save` does: in one go, then closed.
fn write(path: &Path, content: &[u8]) {
    std::fs::write(path, content).unwrap();
}

fn creates(standin: &StandIn) -> usize {
    standin
        .requests()
        .iter()
        .filter(|r| r.path == "/graphql" && r.operation().as_deref() == Some("CreateArtifact"))
        .count()
}

/// The fixture's requests and the agent's, with the metadata apart
/// (the SDK script chose its own; the agent's is checked on its own), and
/// without the manifest's length.
fn without_metadata(reqs: &Value) -> (Value, Vec<Value>) {
    let mut reqs = reqs.clone();
    let mut metas = Vec::new();
    for r in reqs.as_array_mut().unwrap() {
        if r.get("manifest").is_some() {
            // Its length follows `local_path`, a path on each machine.
            r.as_object_mut().unwrap().remove("length");
        }
        if r["graphql"] == "CreateArtifact" {
            let m = r["body"]["variables"]["input"]["metadata"].take();
            metas.push(serde_json::from_str(m.as_str().unwrap()).unwrap());
        }
    }
    (reqs, metas)
}

#[test]
fn checkpoints_become_versions_as_the_sdk_logs_them() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let cfg = config(dir, &standin);
    let path = checkpoint(dir);
    let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
    // The SDK script's three checkpoints: A, A again (rewritten), B.
    for (i, content) in [b"checkpoint A\n", b"checkpoint A\n", b"checkpoint B\n"]
        .iter()
        .enumerate()
    {
        write(&path, &content.repeat(1000));
        wait_for(
            dir,
            Duration::from_secs(60),
            "the version to be logged",
            || {
                let done = creates(&standin) > i;
                let store = standin.artifacts();
                done && store.versions.iter().all(|v| v.state == "COMMITTED")
            },
        );
        // A new modification time for the next write.
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());

    let fixture = sdk::artifacts_fixture();
    let (want, _) = without_metadata(&fixture["online"]["requests"]);
    let (got, metas) = without_metadata(&support::artifacts::requests(&standin));
    assert_eq!(
        got, want,
        "the agent's artifact requests differ from the SDK's"
    );
    for m in &metas {
        assert_eq!(m["source_path"], "checkpoints/model.pth");
        assert_eq!(m["size"], 13000);
    }
    // Two versions: v0 (A) and v1 (B, latest), as the SDK left them.
    let versions = support::artifacts::versions(&standin);
    let summary = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| {
                serde_json::json!([
                    v["collection"],
                    v["version"],
                    v["aliases"],
                    v["digest"],
                    v["state"],
                    v["run"],
                    v["files"]
                ])
            })
            .collect()
    };
    assert_eq!(summary(&versions), summary(&fixture["online"]["versions"]));
    assert_eq!(
        standin
            .artifacts()
            .committed("run-01jdas000000000000000model-model.pth")
            .len(),
        2
    );

    // `status` lists the three versions found and what became of them.
    let out = harness::shipper(dir, "status", &cfg, &["--json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(String, String)> = status["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let p = "checkpoints/model.pth".to_string();
    assert_eq!(
        states,
        vec![
            (p.clone(), "uploaded".to_string()),
            (p.clone(), "deduplicated".to_string()),
            (p, "uploaded".to_string())
        ]
    );
}

/// Deterministic bytes that do not compress into nothing.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The `[artifacts]` section of the tests, with files from `threshold`
/// bytes on sent in parts of `part` bytes.
fn config_parts(dir: &Path, standin: &StandIn, threshold: u64, part: u64) -> PathBuf {
    let path = config(dir, standin);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "multipart_threshold_bytes = {threshold}\nmultipart_part_bytes = {part}\n"
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// `len` bytes of [`content`] made quickly (a debug build takes seconds
/// per 100 MB byte by byte): 1 MiB of it, each copy stamped with its
/// index so that no two MiB (and no two parts) are alike.
fn big_content(len: usize, seed: u64) -> Vec<u8> {
    let block = content(1 << 20, seed);
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        let start = out.len();
        out.extend_from_slice(&block[..block.len().min(len - start)]);
        let stamp = i.to_le_bytes();
        let n = stamp.len().min(out.len() - start);
        out[start..start + n].copy_from_slice(&stamp[..n]);
        i += 1;
    }
    out
}

#[test]
fn sigkill_during_uploads_leaves_exactly_the_right_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    // 200 MB at 80 MB/s: each upload of the big file takes about 2.5 s.
    standin.set_upload_rate(Some(80_000_000));
    // The big file goes in parts of 32 MiB (six), as a 2 GiB one would
    // in parts of 100 MiB: kills land between and inside parts.
    let cfg = config_parts(dir, &standin, 100_000_000, 32 << 20);
    let run_dir = dir.join("var/trainer/runs").join(RUN);
    let big = big_content(200_000_000, 7);
    // The same big content twice under one file name (two checkpoint
    // directories: one artifact, one version), and a small other file,
    // sent whole.
    for sub in ["checkpoint_000010", "checkpoint_000020"] {
        let p = run_dir.join("checkpoints").join(sub).join("model.pth");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write(&p, &big);
    }
    write(
        &run_dir.join("checkpoints/optimizer.pt"),
        &content(100_000, 9),
    );
    let big_name = "run-01jdas000000000000000model-model.pth";
    let small_name = "run-01jdas000000000000000model-optimizer.pt";
    let done = |s: &StandIn| {
        let a = s.artifacts();
        a.committed(big_name).len() == 1 && a.committed(small_name).len() == 1 && creates(s) >= 3
    };
    // Kill rounds: mid-upload (after an upload began, at different
    // points of it) and right after other calls.
    let mut kills = 0;
    for round in 0..8u64 {
        if done(&standin) {
            break;
        }
        let (uploads, calls) = (standin.uploads_started(), standin.requests().len());
        let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
        if round % 2 == 0 {
            wait_for(dir, Duration::from_secs(120), "an upload to begin", || {
                standin.uploads_started() > uploads || done(&standin)
            });
            std::thread::sleep(Duration::from_millis(200 + 300 * round));
        } else {
            wait_for(dir, Duration::from_secs(120), "an artifact call", || {
                standin.requests().len() > calls + round as usize || done(&standin)
            });
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = wait_child(&mut child, Duration::from_secs(60));
        kills += 1;
    }
    assert!(
        kills >= 3,
        "too few kills happened before the end ({kills})"
    );
    standin.set_upload_rate(None);
    let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
    wait_for(dir, Duration::from_secs(180), "every version", || {
        done(&standin)
    });
    // Give a wrongly repeated upload or version the chance to show.
    std::thread::sleep(Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());

    let store = standin.artifacts();
    assert!(store.bad_uploads.is_empty(), "{:?}", store.bad_uploads);
    assert!(
        store.refused_commits.is_empty(),
        "{:?}",
        store.refused_commits
    );
    assert!(
        store.refused_completions.is_empty(),
        "{:?}",
        store.refused_completions
    );
    // Exactly one version per content, all committed: no partial version.
    assert_eq!(store.versions.len(), 2, "{:#?}", store.versions);
    assert!(store.versions.iter().all(|v| v.state == "COMMITTED"));
    assert_eq!(
        store.committed(big_name)[0].aliases,
        vec!["latest".to_string()]
    );
    let big_md5 = support::artifacts::md5_b64(&big);
    assert_eq!(store.blobs.get(&big_md5), Some(&200_000_000));
    // The big file was completed once, from one upload of all its parts;
    // uploads cut by a kill were left, never completed.
    let completed: Vec<_> = store.multipart.values().filter(|m| m.completed).collect();
    assert_eq!(completed.len(), 1, "{:#?}", store.multipart);
    assert_eq!(completed[0].md5, big_md5);
    assert_eq!(completed[0].received.len(), 6);
    // At least one upload was cut by a kill (begun, never completed),
    // and every completed upload was a whole part or the small file.
    let finished = standin
        .requests()
        .iter()
        .filter(|r| r.upload.is_some())
        .count();
    eprintln!(
        "kills {kills}, uploads begun {}, completed {finished}, multipart uploads {}",
        standin.uploads_started(),
        store.multipart.len()
    );
    assert!(
        standin.uploads_started() > finished,
        "no kill landed mid-upload"
    );
    for r in standin.requests().iter().filter(|r| r.upload.is_some()) {
        let (_, len) = r.upload.clone().unwrap();
        if r.path.starts_with("/artifact-upload/part/") {
            assert!(
                len == 32 << 20 || len == 200_000_000 - 5 * (32 << 20),
                "{len}"
            );
        } else {
            assert_eq!(len, 100_000, "{}", r.path);
        }
    }
}

/// The SDK recording's checkpoint of 2 GiB and more
/// (tests/py/sdk_artifact_large.py, `make_large`): sparse, a marker line
/// at the start of every `part` bytes.
fn make_large(path: &Path, size: u64, part: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    let mut n = 1u64;
    while (n - 1) * part < size {
        f.seek(SeekFrom::Start((n - 1) * part)).unwrap();
        f.write_all(format!("mosaic part {n}\n").as_bytes())
            .unwrap();
        n += 1;
    }
    f.set_len(size).unwrap();
}

/// The requests of a multipart version with what depends on the file's
/// content and size taken out: digests, MD5s and lengths, the metadata,
/// the list of parts (one entry kept, its MD5s blanked) and each run of
/// part uploads (one kept, its MD5 blanked).
fn multipart_shape(reqs: &Value) -> Value {
    let mut out = Vec::new();
    let mut in_parts = false;
    for r in reqs.as_array().unwrap() {
        let mut r = r.clone();
        let is_part = r["put"]
            .as_str()
            .is_some_and(|p| p.starts_with("/artifact-upload/part/"));
        if is_part {
            if in_parts {
                continue;
            }
            in_parts = true;
            r["put"] = Value::from("/artifact-upload/part/<upload>/<n>");
            for k in ["md5", "length"] {
                r[k] = Value::from("<per part>");
            }
            r["headers"]["content-md5"] = Value::from("<per part>");
            out.push(r);
            continue;
        }
        in_parts = false;
        if r.get("manifest").is_some() {
            r.as_object_mut().unwrap().remove("length");
            for e in r["manifest"]["contents"]
                .as_object_mut()
                .unwrap()
                .values_mut()
            {
                e["digest"] = Value::from("<md5>");
                e["size"] = Value::from("<size>");
            }
        }
        if let Some(put) = r["put"].as_str() {
            if put.starts_with("/artifact-upload/file/") {
                r["put"] = Value::from("/artifact-upload/file/<md5>");
                r["md5"] = Value::from("<md5>");
                r["length"] = Value::from("<size>");
            }
        }
        let vars = &mut r["body"]["variables"];
        if vars["input"].get("digest").is_some() {
            vars["input"]["digest"] = Value::from("<digest>");
            vars["input"]["metadata"] = Value::from("<metadata>");
        }
        if let Some(files) = vars
            .pointer_mut("/input/artifactFiles")
            .and_then(Value::as_array_mut)
        {
            for f in files {
                f["md5"] = Value::from("<md5>");
                if let Some(ps) = f["uploadPartsInput"].as_array_mut() {
                    ps.truncate(1);
                    ps[0]["hexMD5"] = Value::from("<per part>");
                }
            }
        }
        if vars.get("storagePath").is_some() {
            // The server's name for the content (it follows the MD5).
            vars["storagePath"] = Value::from("<storage path>");
        }
        if let Some(ps) = vars.get_mut("completedParts").and_then(Value::as_array_mut) {
            ps.truncate(1);
            ps[0]["hexMD5"] = Value::from("<per part>");
        }
        out.push(r);
    }
    Value::Array(out)
}

/// The MD5 (hex) of bytes.
fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_large_checkpoint_goes_in_parts_as_the_sdk_sends_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    // The recording's 2 GiB and more in parts of 100 MiB, scaled down to
    // 2 MiB and more in parts of 1 MiB: four parts, the last one short.
    let part = 1u64 << 20;
    let size = 3 * part + 7;
    let cfg = config_parts(dir, &standin, 2 << 20, part);
    let run = "01JDAS00000000000000000BIG";
    let path = dir
        .join("var/trainer/runs")
        .join(run)
        .join("checkpoints/big.pth");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    make_large(&path, size, part);
    let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
    let name = "run-01jdas00000000000000000big-big.pth";
    wait_for(dir, Duration::from_secs(60), "the version", || {
        standin.artifacts().committed(name).len() == 1
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());

    let fixture = sdk::artifacts_large_fixture();
    let want = &fixture["multipart"]["requests"];
    let got = support::artifacts::requests(&standin);
    assert_eq!(
        multipart_shape(&got),
        multipart_shape(want),
        "the agent's multipart requests differ from the SDK's"
    );
    // What was taken out of the shape: the parts of this file.
    let bytes = std::fs::read(&path).unwrap();
    let chunks: Vec<&[u8]> = bytes.chunks(part as usize).collect();
    let files = got
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["graphql"] == "CreateArtifactFiles")
        .unwrap()["body"]["variables"]["input"]["artifactFiles"]
        .clone();
    assert_eq!(files[0]["md5"], support::artifacts::md5_b64(&bytes));
    let announced: Vec<Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({"hexMD5": md5_hex(c), "partNumber": i + 1}))
        .collect();
    assert_eq!(
        files[0]["uploadPartsInput"],
        Value::Array(announced.clone())
    );
    let puts: Vec<(Value, Value, Value)> = got
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["put"].as_str().is_some_and(|p| p.contains("/part/")))
        .map(|r| {
            (
                r["length"].clone(),
                r["md5"].clone(),
                r["headers"]["content-md5"].clone(),
            )
        })
        .collect();
    let want_puts: Vec<(Value, Value, Value)> = chunks
        .iter()
        .map(|c| {
            let m = Value::from(support::artifacts::md5_b64(c));
            (Value::from(c.len()), m.clone(), m)
        })
        .collect();
    assert_eq!(puts, want_puts);
    // The ETags handed back are the storage's, quotes and all.
    let complete = got
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["graphql"] == "CompleteMultipartUploadArtifact")
        .unwrap();
    let etags: Vec<Value> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({"hexMD5": format!("\"{}\"", md5_hex(c)), "partNumber": i + 1}))
        .collect();
    assert_eq!(
        complete["body"]["variables"]["completedParts"],
        Value::Array(etags)
    );
    let store = standin.artifacts();
    assert!(store.bad_uploads.is_empty(), "{:?}", store.bad_uploads);
    assert_eq!(
        store.blobs.get(&support::artifacts::md5_b64(&bytes)),
        Some(&size)
    );
}

/// The agent splits the recording's own 2 GiB file as core did: the same
/// part numbers and lengths; and hashes its parts as core did: the same
/// MD5s, for the first two parts and the last (the file is made again,
/// sparse, from the recording's layout; hashing all 2 GiB in a debug
/// build would take a minute of the suite).
#[test]
fn parts_of_a_2_gib_checkpoint_are_the_sdks() {
    use mosaic_shipper::sink::wandb::artifact::multipart;
    let fixture = sdk::artifacts_large_fixture();
    let reqs = fixture["multipart"]["requests"].as_array().unwrap().clone();
    let files = reqs
        .iter()
        .find(|r| r["graphql"] == "CreateArtifactFiles")
        .unwrap()["body"]["variables"]["input"]["artifactFiles"]
        .clone();
    let size = reqs
        .iter()
        .find_map(|r| r["manifest"]["contents"]["big.pth"]["size"].as_u64())
        .unwrap();
    assert!(
        size >= 2 << 30,
        "the recording's file is under 2 GiB: {size}"
    );
    let policy = multipart::PartPolicy::default();
    let parts = policy.parts(size).expect("2 GiB and more go in parts");
    let recorded = files[0]["uploadPartsInput"].as_array().unwrap().clone();
    let numbers: Vec<u64> = recorded
        .iter()
        .map(|p| p["partNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, parts.iter().map(|p| p.number).collect::<Vec<_>>());
    let lengths: Vec<u64> = reqs
        .iter()
        .filter(|r| r["put"].as_str().is_some_and(|p| p.contains("/part/")))
        .map(|r| r["length"].as_u64().unwrap())
        .collect();
    assert_eq!(lengths, parts.iter().map(|p| p.len).collect::<Vec<_>>());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.pth");
    make_large(&path, size, multipart::SDK_PART_SIZE);
    let last = parts.len() - 1;
    let some = [parts[0], parts[1], parts[last]];
    let hexes = multipart::hash_parts(&path, &some).unwrap();
    assert_eq!(
        hexes,
        [0, 1, last]
            .iter()
            .map(|&i| recorded[i]["hexMD5"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    );
    // The Content-MD5 of each part's PUT is its announced MD5, base64.
    let puts: Vec<Value> = reqs
        .iter()
        .filter(|r| r["put"].as_str().is_some_and(|p| p.contains("/part/")))
        .map(|r| r["headers"]["content-md5"].clone())
        .collect();
    let want: Vec<Value> = recorded
        .iter()
        .map(|p| Value::from(multipart::hex_to_b64(p["hexMD5"].as_str().unwrap()).unwrap()))
        .collect();
    assert_eq!(puts, want);
}

/// A version of several files (what `sync` logs for an SDK offline run
/// that logged a directory) is sent as the SDK sends `add_dir` of a
/// checkpoint directory: the same requests, field by field, as recorded
/// (tests/fixtures/wandb-sdk-artifacts-large.json, `directory`), from the
/// same three files (tests/py/sdk_artifact_large.py, `make_directory`).
#[test]
fn a_version_of_several_files_is_sent_as_the_sdk_sends_a_directory() {
    use mosaic_shipper::sink::wandb::artifact::multipart::PartPolicy;
    use mosaic_shipper::sink::wandb::artifact::protocol::Target;
    use mosaic_shipper::sink::wandb::artifact::version::{
        self, Logged, Progress, Resume, Version, VersionFile,
    };
    use mosaic_shipper::sink::wandb::artifact::{manifest, ArtifactError};
    use mosaic_shipper::sink::wandb::auth::ApiKey;
    use mosaic_shipper::sink::wandb::http::{Http, HttpOptions};
    use mosaic_shipper::sink::wandb::proxy::ProxyChoice;

    struct Kept;
    impl Progress for Kept {
        fn created(&mut self, _: &Resume) -> Result<(), ArtifactError> {
            Ok(())
        }
        fn unchanged(&self, _: &VersionFile) -> bool {
            true
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("checkpoint_000010");
    std::fs::create_dir_all(root.join("state")).unwrap();
    write(&root.join("policy.pt"), &b"policy weights\n".repeat(500));
    write(
        &root.join("optimizer.pt"),
        &b"optimizer state\n".repeat(300),
    );
    write(&root.join("state/rng.pkl"), &b"rng state\n".repeat(10));
    let files: Vec<VersionFile> = ["optimizer.pt", "policy.pt", "state/rng.pkl"]
        .iter()
        .map(|name| {
            let path = root.join(name);
            let (md5_b64, size) = manifest::md5_file(&path).unwrap();
            VersionFile {
                name: name.to_string(),
                md5_b64,
                size,
                path,
            }
        })
        .collect();
    let entries: Vec<manifest::Entry> = files
        .iter()
        .map(|f| manifest::Entry {
            name: f.name.clone(),
            md5_b64: f.md5_b64.clone(),
            size: f.size,
            local_path: f.path.display().to_string(),
            birth_artifact_id: None,
        })
        .collect();
    let v = Version {
        collection: "run-01jdas00000000000000000dir-checkpoint_000010".into(),
        type_name: "model".into(),
        aliases: vec!["latest".into()],
        metadata: r#"{"step":10,"source_path":"checkpoints/checkpoint_000010"}"#.into(),
        description: None,
        digest: manifest::artifact_digest(&entries),
        files,
    };
    let standin = StandIn::start();
    let http = Http::new(
        ApiKey::new("k".repeat(40)),
        HttpOptions {
            timeout: Duration::from_secs(30),
            proxy: ProxyChoice {
                url: None,
                reason: "test".into(),
            },
            ca_file: None,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            give_up_after: Duration::from_secs(30),
            username: String::new(),
            email: String::new(),
        },
    )
    .unwrap();
    let t = Target {
        entity: "test-entity",
        project: "mosaic-test",
        run: "01jdas00000000000000000dir",
        display: "01JDAS00000000000000000DIR",
    };
    let logged = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(version::log_version(
            &http,
            &standin.base_url(),
            &t,
            &v,
            None,
            &PartPolicy::default(),
            &mut Kept,
        ))
        .unwrap();
    assert!(matches!(logged, Logged::Committed { .. }), "{logged:?}");
    let fixture = sdk::artifacts_large_fixture();
    let (want, _) = without_metadata(&fixture["directory"]["requests"]);
    let (got, metas) = without_metadata(&support::artifacts::requests(&standin));
    assert_eq!(got, want, "the agent's requests differ from the SDK's");
    let (_, want_metas) = without_metadata(&fixture["directory"]["requests"]);
    assert_eq!(metas, want_metas);
    let versions = support::artifacts::versions(&standin);
    assert_eq!(versions, fixture["directory"]["versions"]);
}

/// GraphQL errors in an HTTP 200 answer to an artifact call are told
/// apart as the run upsert's are: a refusal of this version (the server
/// will say the same again) sets the version aside, `skipped` with an
/// error naming the run and the call, and the next version goes on; an
/// error about every run (the key, the project) is retried until it
/// passes, with no second version. The key the answers echo never reaches
/// the logs or `status`.
#[test]
fn graphql_errors_in_artifact_answers_set_a_version_aside_or_are_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let cfg = config(dir, &standin);
    let run_dir = dir.join("var/trainer/runs").join(RUN);
    std::fs::create_dir_all(run_dir.join("checkpoints")).unwrap();
    // Refused for good: the first version's files.
    standin.artifact_error(
        "CreateArtifactFiles",
        "invalid file name for artifact file: model.pth",
        1,
    );
    let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
    write(&run_dir.join("checkpoints/model.pth"), &content(5000, 1));
    wait_for(
        dir,
        Duration::from_secs(60),
        "the version set aside",
        || in_state(dir, &cfg, "skipped") == 1,
    );
    // About every run, twice: the next version's commit is retried.
    standin.artifact_error("CommitArtifact", "permission denied for this API key", 2);
    write(&run_dir.join("checkpoints/optimizer.pt"), &content(5000, 2));
    let name = "run-01jdas000000000000000model-optimizer.pt";
    wait_for(dir, Duration::from_secs(60), "the next version", || {
        standin.artifacts().committed(name).len() == 1
    });
    assert_eq!(standin.artifact_errors_left(), 0);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());

    let store = standin.artifacts();
    // The refused version was never committed; the other one once.
    assert_eq!(
        store
            .committed("run-01jdas000000000000000model-model.pth")
            .len(),
        0
    );
    assert_eq!(store.committed(name).len(), 1);
    assert_eq!(creates(&standin), 2);
    let out = harness::shipper(dir, "status", &cfg, &["--json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let skipped: Vec<&Value> = v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{v:#}");
    let reason = skipped[0]["reason"].as_str().unwrap();
    for part in [
        "CreateArtifactFiles",
        RUN,
        "invalid file name for artifact file",
    ] {
        assert!(reason.contains(part), "{part} not in: {reason}");
    }
    let logs = harness::stderr_logs(dir);
    assert!(
        logs.contains("CommitArtifact") && logs.contains("permission denied"),
        "the retried error is not logged:\n{logs}"
    );
    let text = format!("{logs}{v}");
    assert!(
        !text.contains(support::harness::KEY),
        "the key reached the logs or status"
    );
    let basic = support::artifacts::b64(format!("api:{}", support::harness::KEY).as_bytes());
    assert!(
        !text.contains(&basic),
        "the Authorization header reached the logs or status"
    );
}

#[test]
fn staged_checkpoints_are_logged_by_sync_and_limits_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let path = write_config(dir, &standin.base_url(), "mode = \"stage\"\n");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[artifacts]\nruns_dir = \"{}\"\nsettle_ms = 300\npoll_interval_ms = 100\nmax_file_bytes = 50000\n",
        dir.join("var/trainer/runs").display()
    ));
    std::fs::write(&path, text).unwrap();
    let cfg = path;
    let run_dir = dir.join("var/trainer/runs").join(RUN);
    std::fs::create_dir_all(run_dir.join("checkpoints")).unwrap();
    write(&run_dir.join("checkpoints/model.pth"), &content(13000, 3));
    write(&run_dir.join("checkpoints/huge.pth"), &content(60000, 4));
    harness::run_once(dir, &cfg);
    // Staged: nothing sent, both recorded (the large one skipped).
    assert!(standin.artifacts().versions.is_empty());
    let status = |dir: &Path| -> Vec<(String, String)> {
        let out = harness::shipper(dir, "status", &cfg, &["--json"])
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut s: Vec<(String, String)> = v["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["path"].as_str().unwrap().to_string(),
                    a["state"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        s.sort();
        s
    };
    let pair = |p: &str, s: &str| (p.to_string(), s.to_string());
    assert_eq!(
        status(dir),
        vec![
            pair("checkpoints/huge.pth", "skipped"),
            pair("checkpoints/model.pth", "pending")
        ]
    );
    // A checkpoint not complete yet (written after the agent's last look)
    // is listed as being written; rewritten, a recorded one is too.
    write(&run_dir.join("checkpoints/late.pth"), &content(1000, 5));
    std::thread::sleep(Duration::from_millis(20));
    write(&run_dir.join("checkpoints/huge.pth"), &content(60001, 4));
    assert_eq!(
        status(dir),
        vec![
            pair("checkpoints/huge.pth", "being written"),
            pair("checkpoints/huge.pth", "skipped"),
            pair("checkpoints/late.pth", "being written"),
            pair("checkpoints/model.pth", "pending")
        ]
    );
    std::fs::remove_file(run_dir.join("checkpoints/late.pth")).unwrap();
    std::fs::remove_file(run_dir.join("checkpoints/huge.pth")).unwrap();
    let mut c = harness::shipper(dir, "sync", &cfg, &[]);
    let mut child = harness::spawn(&mut c);
    assert!(wait_child(&mut child, Duration::from_secs(120)).success());
    let store = standin.artifacts();
    assert_eq!(
        store
            .committed("run-01jdas000000000000000model-model.pth")
            .len(),
        1
    );
    assert_eq!(store.versions.len(), 1, "{:#?}", store.versions);
    assert_eq!(
        status(dir),
        vec![
            pair("checkpoints/huge.pth", "skipped"),
            pair("checkpoints/model.pth", "uploaded")
        ]
    );
    // A second sync logs nothing again.
    let mut child = harness::spawn(&mut harness::shipper(dir, "sync", &cfg, &[]));
    assert!(wait_child(&mut child, Duration::from_secs(120)).success());
    assert_eq!(creates(&standin), 1);
}

/// Counts the versions `status` reports in `state`.
fn in_state(dir: &Path, cfg: &Path, state: &str) -> usize {
    let out = harness::shipper(dir, "status", cfg, &["--json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["artifacts"]
        .as_array()
        .map(|a| a.iter().filter(|a| a["state"] == state).count())
        .unwrap_or(0)
}

#[test]
fn offline_checkpoints_are_logged_by_the_real_wandb_sync() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let path = write_config(dir, &standin.base_url(), "mode = \"offline\"\n");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[artifacts]\nruns_dir = \"{}\"\nsettle_ms = 300\npoll_interval_ms = 100\n",
        dir.join("var/trainer/runs").display()
    ));
    text = text.replace(
        "[sinks.wandb]\n",
        &format!(
            "[sinks.wandb]\noffline_dir = \"{}\"\n",
            dir.join("wandb").display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let cfg = path;
    // The run has rows (its offline log opens with the first).
    harness::gen_logs(dir, RUN, 20, 1);
    let ckpt = checkpoint(dir);
    let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
    for (i, content) in [b"checkpoint A\n", b"checkpoint A\n", b"checkpoint B\n"]
        .iter()
        .enumerate()
    {
        write(&ckpt, &content.repeat(1000));
        wait_for(
            dir,
            Duration::from_secs(60),
            "the version written offline",
            || in_state(dir, &cfg, "written offline") > i,
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());
    // Rewritten after being written offline: the staged copies hold
    // what was written.
    write(&ckpt, b"something else");

    let run_dir = sdk::offline_dir(dir);
    let records: Vec<Value> = sdk::datastore_read(&sdk::log_in(&run_dir))
        .into_iter()
        .filter(|r| r["type"] == "artifact")
        .map(|mut r| {
            support::artifacts::normalize(&mut r);
            r["artifact"].as_object_mut().unwrap().remove("metadata");
            r.as_object_mut().unwrap().remove("num");
            r
        })
        .collect();
    let fixture = sdk::artifacts_fixture();
    let want: Vec<Value> = fixture["offline"]["artifact_records"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(|mut r| {
            r["artifact"].as_object_mut().unwrap().remove("metadata");
            r.as_object_mut().unwrap().remove("num");
            r
        })
        .collect();
    assert_eq!(
        records, want,
        "the offline artifact records differ from the SDK's"
    );

    // The real `wandb sync` makes the same requests and versions as it
    // does of the SDK's own offline run.
    let synced = StandIn::start();
    sdk::wandb_sync(dir, &run_dir, &synced);
    let (want, _) = without_metadata(&fixture["wandb_sync"]["requests"]);
    let (got, _) = without_metadata(&support::artifacts::requests(&synced));
    assert_eq!(got, want, "wandb sync of the agent's offline run differs");
    let versions = support::artifacts::versions(&synced);
    let summary = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| {
                serde_json::json!([
                    v["collection"],
                    v["version"],
                    v["aliases"],
                    v["digest"],
                    v["state"],
                    v["files"]
                ])
            })
            .collect()
    };
    assert_eq!(
        summary(&versions),
        summary(&fixture["wandb_sync"]["versions"])
    );

    // `mosaic-shipper sync` of the same directory logs them too, with the
    // online agent's requests (the run's entity resolved, where `wandb
    // sync` sends the record's empty one) and the same versions.
    let ours = StandIn::start();
    let cfg2 = write_config(dir, &ours.base_url(), "");
    let d = run_dir.to_str().unwrap();
    let mut child = harness::spawn(&mut harness::shipper(
        dir,
        "sync",
        &cfg2,
        &[d, "--include-synced"],
    ));
    assert!(
        wait_child(&mut child, Duration::from_secs(120)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    let (want, _) = without_metadata(&fixture["online"]["requests"]);
    let (got, _) = without_metadata(&support::artifacts::requests(&ours));
    assert_eq!(got, want, "sync of the agent's offline run differs");
    assert_eq!(
        summary(&support::artifacts::versions(&ours)),
        summary(&fixture["wandb_sync"]["versions"])
    );
    // Again: nothing new.
    let mut child = harness::spawn(&mut harness::shipper(
        dir,
        "sync",
        &cfg2,
        &[d, "--include-synced"],
    ));
    assert!(wait_child(&mut child, Duration::from_secs(120)).success());
    assert_eq!(creates(&ours), 3);
}

/// An offline run the real SDK (0.31.0) wrote with `run.log_artifact`
/// (tests/py/sdk_artifact.py, the recording's script) is logged by
/// `mosaic-shipper sync` with the requests the online SDK sends.
#[test]
fn sync_logs_the_artifacts_of_an_sdk_offline_run() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let work = dir.join("offline-files");
    std::fs::create_dir_all(&work).unwrap();
    let script = harness::repo().join("tests/py/sdk_artifact.py");
    let wdir = sdk::run_script(
        dir,
        "offline",
        &script,
        &["01jdas000000000000000model", "R", work.to_str().unwrap()],
        None,
    );
    let run_dir = sdk::offline_dir(&wdir);
    let standin = StandIn::start();
    let cfg = write_config(dir, &standin.base_url(), "");
    let d = run_dir.to_str().unwrap();
    let mut child = harness::spawn(&mut harness::shipper(dir, "sync", &cfg, &[d]));
    assert!(
        wait_child(&mut child, Duration::from_secs(120)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    let fixture = sdk::artifacts_fixture();
    let (want, _) = without_metadata(&fixture["online"]["requests"]);
    let (got, _) = without_metadata(&support::artifacts::requests(&standin));
    assert_eq!(got, want, "sync of the SDK's offline run differs");
    let summary = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| {
                serde_json::json!([
                    v["collection"],
                    v["version"],
                    v["aliases"],
                    v["digest"],
                    v["state"],
                    v["run"],
                    v["files"]
                ])
            })
            .collect()
    };
    assert_eq!(
        summary(&support::artifacts::versions(&standin)),
        summary(&fixture["wandb_sync"]["versions"])
    );
}

/// A staged store's config in `dir` (checkpoints under its own runs dir).
fn staged_config(dir: &Path, standin: &StandIn) -> PathBuf {
    let path = write_config(dir, &standin.base_url(), "mode = \"stage\"\n");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[artifacts]\nruns_dir = \"{}\"\nsettle_ms = 300\npoll_interval_ms = 100\n",
        dir.join("var/trainer/runs").display()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn states(dir: &Path, cfg: &Path) -> Vec<String> {
    let out = harness::shipper(dir, "status", cfg, &["--json"])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["state"].as_str().unwrap().to_string())
        .collect()
}

/// `export` on an air-gapped machine (A) carries the checkpoint files in
/// the bundle, with their SHA-256 in the manifest; `import` on another
/// (B) checks them and `sync` there logs the same versions as the online
/// agent does, though A's files are gone by then. A damaged checkpoint
/// in a bundle is refused.
#[test]
fn bundles_carry_checkpoints_and_sync_logs_them_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let standin = StandIn::start();
    let cfg_a = staged_config(&a, &standin);
    let cfg_b = staged_config(&b, &standin);
    harness::gen_logs(&a, RUN, 20, 1);
    // The SDK script's three checkpoints (A, A, B), each in its own
    // directory (staged, a version is read from its file when exported:
    // one rewritten in place before that is not carried).
    let run_dir = a.join("var/trainer/runs").join(RUN);
    for (i, content) in [b"checkpoint A\n", b"checkpoint A\n", b"checkpoint B\n"]
        .iter()
        .enumerate()
    {
        let p = run_dir.join(format!("checkpoints/checkpoint_00000{i}/model.pth"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write(&p, &content.repeat(1000));
        harness::run_once(&a, &cfg_a);
    }
    assert_eq!(states(&a, &cfg_a), ["pending", "pending", "pending"]);

    let bundle = tmp.path().join("bundle");
    let out = harness::shipper(&a, "export", &cfg_a, &["--to", bundle.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", harness::stderr_logs(&a));
    assert!(said.contains("and 3 checkpoint versions"), "{said}");
    assert_eq!(states(&a, &cfg_a), ["exported", "exported", "exported"]);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap()).unwrap();
    let carried = manifest["artifacts"].as_array().unwrap();
    assert_eq!(carried.len(), 3);
    for c in carried {
        let file = c["file"].as_str().unwrap();
        let bytes = std::fs::read(bundle.join(file)).unwrap();
        let entry = manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == file)
            .unwrap();
        assert_eq!(entry["sha256"], support::artifacts::sha256_hex(&bytes));
        assert_eq!(c["md5_b64"], support::artifacts::md5_b64(&bytes));
        assert!(c["rel_path"].as_str().unwrap().ends_with("/model.pth"));
    }
    // The run directory's checkpoint is gone: B has only the bundle.
    std::fs::remove_dir_all(run_dir.join("checkpoints")).unwrap();

    // A damaged checkpoint (same length, one byte changed) is refused.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(&bundle).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), bad.join(e.file_name())).unwrap();
    }
    let victim = bad.join(carried[1]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let out = harness::shipper(&b, "import", &cfg_b, &[bad.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("SHA-256 mismatch") && err.contains(carried[1]["file"].as_str().unwrap()),
        "{err}"
    );

    let out = harness::shipper(&b, "import", &cfg_b, &[bundle.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}\n{}", harness::stderr_logs(&b));
    assert!(said.contains("3 checkpoint versions were copied"), "{said}");
    assert_eq!(states(&b, &cfg_b), ["pending", "pending", "pending"]);
    let mut child = harness::spawn(&mut harness::shipper(&b, "sync", &cfg_b, &[]));
    assert!(wait_child(&mut child, Duration::from_secs(120)).success());
    assert_eq!(states(&b, &cfg_b), ["uploaded", "deduplicated", "uploaded"]);

    // The versions the online agent leaves (tests/fixtures' SDK run).
    let fixture = sdk::artifacts_fixture();
    let summary = |v: &Value| -> Vec<Value> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|v| {
                serde_json::json!([
                    v["collection"],
                    v["version"],
                    v["aliases"],
                    v["digest"],
                    v["state"],
                    v["run"],
                    v["files"]
                ])
            })
            .collect()
    };
    assert_eq!(
        summary(&support::artifacts::versions(&standin)),
        summary(&fixture["online"]["versions"])
    );
    assert_eq!(creates(&standin), 3);
    // The store's copies are deleted once logged.
    let copies: Vec<_> = walk(&b.join("store/checkpoints"));
    assert!(copies.is_empty(), "{copies:?}");
    // A second sync logs nothing again.
    let mut child = harness::spawn(&mut harness::shipper(&b, "sync", &cfg_b, &[]));
    assert!(wait_child(&mut child, Duration::from_secs(120)).success());
    assert_eq!(creates(&standin), 3);
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// `sync` of an offline run directory killed (SIGKILL) at points of its
/// artifact uploads, then run to the end: exactly one version per content,
/// none partial, every completed upload whole.
#[test]
fn sigkill_during_sync_of_offline_artifacts_leaves_exactly_the_right_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let offline = StandIn::start();
    let path = write_config(dir, &offline.base_url(), "mode = \"offline\"\n");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[artifacts]\nruns_dir = \"{}\"\nsettle_ms = 300\npoll_interval_ms = 100\n",
        dir.join("var/trainer/runs").display()
    ));
    text = text.replace(
        "[sinks.wandb]\n",
        &format!(
            "[sinks.wandb]\noffline_dir = \"{}\"\n",
            dir.join("wandb").display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let cfg = path;
    harness::gen_logs(dir, RUN, 20, 1);
    let run_dir = dir.join("var/trainer/runs").join(RUN);
    let big = content(80_000_000, 11);
    for sub in ["checkpoint_000010", "checkpoint_000020"] {
        let p = run_dir.join("checkpoints").join(sub).join("model.pth");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write(&p, &big);
    }
    write(
        &run_dir.join("checkpoints/optimizer.pt"),
        &content(100_000, 12),
    );
    let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
    wait_for(
        dir,
        Duration::from_secs(120),
        "3 versions written offline",
        || in_state(dir, &cfg, "written offline") == 3,
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());
    assert!(offline.artifacts().versions.is_empty());

    let standin = StandIn::start();
    standin.set_upload_rate(Some(40_000_000));
    let sync_cfg = write_config(dir, &standin.base_url(), "");
    let run_dir = sdk::offline_dir(dir);
    let d = run_dir.to_str().unwrap().to_string();
    let big_name = "run-01jdas000000000000000model-model.pth";
    let small_name = "run-01jdas000000000000000model-optimizer.pt";
    let done = |s: &StandIn| {
        let a = s.artifacts();
        a.committed(big_name).len() == 1 && a.committed(small_name).len() == 1 && creates(s) >= 3
    };
    let mut kills = 0;
    for round in 0..8u64 {
        if done(&standin) {
            break;
        }
        let (uploads, calls) = (standin.uploads_started(), standin.requests().len());
        let mut child = harness::spawn(&mut harness::shipper(
            dir,
            "sync",
            &sync_cfg,
            &[&d, "--include-synced"],
        ));
        if round % 2 == 0 {
            wait_for(dir, Duration::from_secs(120), "an upload to begin", || {
                standin.uploads_started() > uploads || done(&standin)
            });
            std::thread::sleep(Duration::from_millis(200 + 300 * round));
        } else {
            wait_for(dir, Duration::from_secs(120), "an artifact call", || {
                standin.requests().len() > calls + round as usize || done(&standin)
            });
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = wait_child(&mut child, Duration::from_secs(60));
        kills += 1;
    }
    assert!(
        kills >= 3,
        "too few kills happened before the end ({kills})"
    );
    standin.set_upload_rate(None);
    let mut child = harness::spawn(&mut harness::shipper(
        dir,
        "sync",
        &sync_cfg,
        &[&d, "--include-synced"],
    ));
    assert!(
        wait_child(&mut child, Duration::from_secs(180)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    assert!(done(&standin));

    let store = standin.artifacts();
    assert!(store.bad_uploads.is_empty(), "{:?}", store.bad_uploads);
    assert!(
        store.refused_commits.is_empty(),
        "{:?}",
        store.refused_commits
    );
    assert_eq!(store.versions.len(), 2, "{:#?}", store.versions);
    assert!(store.versions.iter().all(|v| v.state == "COMMITTED"));
    let big_md5 = support::artifacts::md5_b64(&big);
    assert_eq!(store.blobs.get(&big_md5), Some(&80_000_000));
    let completed = standin
        .requests()
        .iter()
        .filter(|r| r.upload.is_some())
        .count();
    eprintln!(
        "kills {kills}, uploads begun {}, completed {completed}",
        standin.uploads_started()
    );
    assert!(
        standin.uploads_started() > completed,
        "no kill landed mid-upload"
    );
}

/// A checkpoint that completes after the run's offline log ended (its exit
/// record written) goes to a follow-up offline run directory of the same
/// run, closed with the same exit; the real `wandb sync` of both logs
/// the version, and the run keeps its history, summary and exit code.
#[test]
fn a_checkpoint_completed_after_the_offline_exit_reaches_wandb_sync() {
    sdk::python();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let unused = StandIn::start();
    let path = write_config(dir, &unused.base_url(), "mode = \"offline\"\n");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[artifacts]\nruns_dir = \"{}\"\nsettle_ms = 300\npoll_interval_ms = 100\n",
        dir.join("var/trainer/runs").display()
    ));
    text = text.replace(
        "[sinks.wandb]\n",
        &format!(
            "[sinks.wandb]\noffline_dir = \"{}\"\n",
            dir.join("wandb").display()
        ),
    );
    std::fs::write(&path, text).unwrap();
    let cfg = path;
    let expected = harness::gen_logs(dir, RUN, 20, 1);
    harness::run_once(dir, &cfg);
    // First the run ends (its exit record is written) ...
    harness::lifecycle(dir, RUN, "run_completed", None);
    harness::run_once(dir, &cfg);
    // ... then its final checkpoint completes.
    write(&checkpoint(dir), &b"checkpoint A\n".repeat(1000));
    let mut child = harness::spawn(&mut agent(dir, &cfg, &[]));
    wait_for(
        dir,
        Duration::from_secs(60),
        "the version written offline",
        || in_state(dir, &cfg, "written offline") == 1,
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());

    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("wandb"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "a follow-up directory: {dirs:?}");
    let follow_up: Vec<Value> = sdk::datastore_read(&sdk::log_in(&dirs[1]));
    let kinds: Vec<&str> = follow_up
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    assert!(
        kinds.contains(&"artifact") && kinds.contains(&"exit"),
        "{kinds:?}"
    );

    let synced = StandIn::start();
    for d in &dirs {
        sdk::wandb_sync(dir, d, &synced);
    }
    let store = synced.artifacts();
    let got = store.committed("run-01jdas000000000000000model-model.pth");
    assert_eq!(got.len(), 1, "{:#?}", store.versions);
    assert_eq!(got[0].aliases, vec!["latest".to_string()]);
    assert_eq!(store.versions.len(), 1);
    let runs = synced.runs();
    let run = &runs[&harness::wandb_id(RUN)];
    harness::assert_history(run, &expected);
    assert_eq!(run.exit_code, Some(0));
}
