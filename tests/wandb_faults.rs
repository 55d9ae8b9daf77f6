//! The W&B sink against the local stand-in with injected faults and a
//! SIGKILL of the agent mid-stream: at the end the stand-in's history of
//! every run equals the logged rows exactly (no gap, no duplicate), each
//! run is complete, and the key appears nowhere but in the auth header.

mod support;

use std::time::Duration;

use support::harness::{
    self, agent, assert_history, gen_logs, wait_child, wait_for, write_config, KEY,
};
use support::standin::{Fault, On, StandIn};

fn basic_auth() -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("api:{KEY}").into_bytes();
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    format!("Basic {out}")
}

#[test]
fn faults_and_sigkill_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let runs = ["01JDAF00000000000000000001", "01JDAF00000000000000000002"];
    let expected: Vec<_> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| gen_logs(dir, r, 450, 11 + i as u64))
        .collect();
    // Every fault the issue names, on the requests that carry rows...
    for f in [
        Fault::Status(500),
        Fault::TooMany {
            retry_after_secs: 1,
        },
        Fault::SlowApplied(Duration::from_secs(3)), // past timeout_ms = 1500
        Fault::ResetMidRequest,
        Fault::DropAfterApply,
        Fault::Status(503),
        Fault::Status(502),
    ] {
        standin.inject(On::FileStream, f);
    }
    // ...and on run creation.
    standin.inject(On::Graphql, Fault::Status(500));
    standin.inject(On::Graphql, Fault::ResetMidRequest);
    standin.set_latency(Duration::from_millis(40));
    let config = write_config(dir, &standin.base_url(), "");

    // First agent: killed (SIGKILL) while rows are on their way.
    let mut first = harness::spawn(&mut agent(dir, &config, &[]));
    wait_for(
        dir,
        Duration::from_secs(60),
        "history requests to arrive",
        || {
            standin
                .requests()
                .iter()
                .filter(|r| r.is_file_stream())
                .count()
                >= 6
        },
    );
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before: usize = standin.runs().values().map(|r| r.history.len()).sum();
    let total: usize = expected.iter().map(Vec::len).sum();
    assert!(
        before < total,
        "the agent was killed after it delivered everything; the test proves nothing"
    );

    // Second agent: picks up from the committed cursor and offsets.
    standin.set_latency(Duration::ZERO);
    let seen_before_restart = standin.requests().len();
    let mut second = harness::spawn(&mut agent(dir, &config, &[]));
    wait_for(dir, Duration::from_secs(120), "every row", || {
        let got = standin.runs();
        runs.iter().zip(&expected).all(|(r, e)| {
            got.get(&harness::wandb_id(r))
                .is_some_and(|g| g.history.len() >= e.len())
        })
    });
    // Then the workers report their end.
    for r in &runs {
        harness::lifecycle(dir, r, "run_completed", None);
    }
    wait_for(dir, Duration::from_secs(120), "both completions", || {
        let got = standin.runs();
        runs.iter().all(|r| {
            got.get(&harness::wandb_id(r))
                .is_some_and(|g| g.exit_code.is_some())
        })
    });
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut second, Duration::from_secs(60));
    let stderr = harness::stderr_logs(dir);
    assert!(status.success(), "agent failed: {stderr}");

    assert_eq!(standin.faults_pending(), 0, "not every fault was exercised");
    // The restarted agent announces each run again (UpsertBucket, as the SDK
    // does on resume) and then continues at its committed offsets.
    let upserts: Vec<String> = standin.requests()[seen_before_restart..]
        .iter()
        .filter(|r| r.operation().as_deref() == Some("UpsertBucket"))
        .filter_map(|r| r.json()["variables"]["name"].as_str().map(str::to_string))
        .collect();
    for r in &runs {
        assert!(
            upserts.contains(&harness::wandb_id(r)),
            "run {r} not upserted after the restart"
        );
    }
    let got = standin.runs();
    for (r, e) in runs.iter().zip(&expected) {
        let run = &got[&harness::wandb_id(r)];
        assert_history(run, e);
        assert_eq!(run.exit_code, Some(0), "run {r} not completed");
        assert_eq!(
            (run.entity.as_str(), run.project.as_str()),
            ("test-entity", "mosaic-test")
        );
        eprintln!(
            "run {r}: {} lines, {} line writes (rewrites by offset: {})",
            run.history.len(),
            run.line_writes,
            run.line_writes - run.history.len() as u64
        );
    }
    // Auth on every request, HTTP Basic api:KEY as the SDK does.
    let auth = basic_auth();
    for req in standin.requests() {
        // File uploads (PUT) carry no key, as in W&B core.
        let want = (req.method != "PUT").then_some(&auth);
        assert_eq!(
            req.headers.get("authorization"),
            want,
            "{} {}",
            req.method,
            req.path
        );
    }
    // The key is in no log line and no file the agent wrote.
    assert!(!stderr.contains(KEY));
    for entry in walk(&dir.join("store")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()),
            "the API key was written to {}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
