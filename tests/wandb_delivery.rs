//! Delivery details of the W&B sink against the stand-in: a 4xx other
//! than 408/409/429 is not retried within an attempt and fails with the
//! run, URL and status (never the key) while rows stay in the journal;
//! gzip is used when the server announces FILESTREAM_GZIP.

mod support;

use std::time::Duration;

use support::harness::{self, agent, assert_history, gen_logs, wait_child, write_config, KEY};
use support::standin::StandIn;

#[test]
fn a_refused_request_fails_clearly_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAD00000000000000000001";
    let expected = gen_logs(dir, run, 60, 21);
    let config = write_config(dir, &standin.base_url(), "");

    standin.set_sticky_file_stream_status(Some(403));
    let mut child = harness::spawn(&mut agent(dir, &config, &["--once"]));
    let status = wait_child(&mut child, Duration::from_secs(120));
    let logs = harness::stderr_logs(dir);
    assert!(
        !status.success(),
        "the agent reported success although W&B refused every request"
    );
    let wandb_run = harness::wandb_id(run);
    assert!(
        logs.contains("HTTP 403") && logs.contains(&wandb_run) && logs.contains("file_stream"),
        "the error must name the run, the request and the status: {logs}"
    );
    assert!(!logs.contains(KEY));
    // 403 is final for a request: one request per attempt, no in-attempt retry.
    let refused = standin
        .requests()
        .iter()
        .filter(|r| r.is_file_stream())
        .count();
    assert_eq!(
        refused, 5,
        "--once makes 5 attempts, each sending the request once"
    );

    // The rows stayed in the journal: once W&B accepts, they all arrive.
    standin.set_sticky_file_stream_status(None);
    let mut child = harness::spawn(&mut agent(dir, &config, &["--once"]));
    assert!(
        wait_child(&mut child, Duration::from_secs(60)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    assert_history(&standin.runs()[&wandb_run], &expected);
}

#[test]
fn file_stream_is_gzipped_when_the_server_accepts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    standin.set_features(&["FILESTREAM_GZIP"]);
    let run = "01JDAZ00000000000000000001";
    let expected = gen_logs(dir, run, 60, 22);
    let config = write_config(dir, &standin.base_url(), "");
    let mut child = harness::spawn(&mut agent(dir, &config, &["--once"]));
    assert!(
        wait_child(&mut child, Duration::from_secs(60)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    let fs: Vec<_> = standin
        .requests()
        .into_iter()
        .filter(|r| r.is_file_stream())
        .collect();
    assert!(
        !fs.is_empty() && fs.iter().all(|r| r.gzipped),
        "file_stream bodies were not gzipped"
    );
    assert!(standin
        .requests()
        .iter()
        .filter(|r| r.path == "/graphql")
        .all(|r| !r.gzipped));
    assert_history(&standin.runs()[&harness::wandb_id(run)], &expected);

    // Without the feature, plain JSON (as the SDK's default).
    let plain = StandIn::start();
    let tmp2 = tempfile::tempdir().unwrap();
    let run2 = "01JDAZ00000000000000000002";
    gen_logs(tmp2.path(), run2, 30, 23);
    let config = write_config(tmp2.path(), &plain.base_url(), "");
    let mut child = harness::spawn(&mut agent(tmp2.path(), &config, &["--once"]));
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());
    assert!(plain.requests().iter().all(|r| !r.gzipped));
}

#[test]
fn a_wandb_outage_does_not_hold_up_other_sinks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAO00000000000000000001";
    let expected = gen_logs(dir, run, 150, 24);
    let config = write_config(dir, &standin.base_url(), "");
    // The jsonl sink stands in for TensorBoard (not in this branch).
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[sinks.jsonl]\nenabled = false",
        &format!(
            "[sinks.jsonl]\nenabled = true\npath = \"{}/out/{{run_id}}.jsonl\"",
            dir.display()
        ),
    );
    std::fs::write(&config, text).unwrap();

    standin.set_sticky_file_stream_status(Some(503));
    let mut child = harness::spawn(&mut agent(dir, &config, &[]));
    let jsonl = dir.join(format!("out/{run}.jsonl"));
    harness::wait_for(
        dir,
        Duration::from_secs(60),
        "the jsonl sink to deliver every row",
        || std::fs::read_to_string(&jsonl).is_ok_and(|t| t.lines().count() == expected.len()),
    );
    let wandb_run = harness::wandb_id(run);
    assert!(standin
        .runs()
        .get(&wandb_run)
        .map_or(true, |r| r.history.is_empty()));
    harness::wait_for(dir, Duration::from_secs(60), "W&B retries", || {
        standin
            .requests()
            .iter()
            .filter(|r| r.is_file_stream())
            .count()
            >= 3
    });
    assert!(standin
        .runs()
        .get(&wandb_run)
        .map_or(true, |r| r.history.is_empty()));

    // W&B comes back: the rows it missed arrive by themselves.
    standin.set_sticky_file_stream_status(None);
    harness::wait_for(dir, Duration::from_secs(60), "W&B to catch up", || {
        standin
            .runs()
            .get(&wandb_run)
            .is_some_and(|r| r.history.len() == expected.len())
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_child(&mut child, Duration::from_secs(60)).success());
    assert_history(&standin.runs()[&wandb_run], &expected);
}

#[test]
fn shutdown_is_not_held_up_by_an_unreachable_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAS00000000000000000009";
    gen_logs(dir, run, 30, 25);
    let config = write_config(dir, &standin.base_url(), "give_up_secs = 600\n");
    standin.set_sticky_file_stream_status(Some(503));
    let mut child = harness::spawn(&mut agent(dir, &config, &[]));
    harness::wait_for(
        dir,
        Duration::from_secs(60),
        "a refused file_stream request",
        || standin.requests().iter().any(|r| r.is_file_stream()),
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // The agent's shutdown deadline is 5 s; a generous bound, not a timing claim.
    let status = wait_child(&mut child, Duration::from_secs(45));
    assert!(status.success(), "{}", harness::stderr_logs(dir));
}

#[test]
fn the_key_comes_from_netrc_as_wandb_login_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAK00000000000000000001";
    let expected = gen_logs(dir, run, 30, 26);
    let config = write_config(dir, &standin.base_url(), "enabled = \"auto\"\n");
    // `wandb login` writes: machine <host:port> / login user / password <key>.
    let netrc_key = "n3trcn3trcn3trcn3trcn3trcn3trcn3trcn3trc";
    std::fs::write(
        dir.join(".netrc"),
        format!(
            "machine {}\n  login user\n  password {netrc_key}\n",
            standin.addr
        ),
    )
    .unwrap();
    let mut child = harness::spawn(
        agent(dir, &config, &["--once"])
            .env_remove("WANDB_API_KEY")
            .env_remove("NETRC"),
    );
    assert!(
        wait_child(&mut child, Duration::from_secs(60)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    assert_history(&standin.runs()[&harness::wandb_id(run)], &expected);
    let want = format!("api:{netrc_key}");
    for r in standin.requests().iter().filter(|r| r.method == "POST") {
        let auth = r.headers.get("authorization").expect("auth header");
        assert!(auth.starts_with("Basic "), "{auth}");
        let decoded = decode_base64(&auth["Basic ".len()..]);
        assert_eq!(decoded, want);
    }
    assert!(!harness::stderr_logs(dir).contains(netrc_key));
}

/// A daemon has no `~/.netrc`: the key comes from the systemd credential
/// `wandb-api-key`, set up with the README's two commands (here with a
/// test directory for `/etc/credstore`, and systemd's copy of it handed
/// over as `$CREDENTIALS_DIRECTORY`). It wins over `WANDB_API_KEY` (the
/// unit's environment-file fallback), and reaches no log line and no
/// `check-config` output.
#[test]
fn the_key_comes_from_a_systemd_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAK00000000000000000002";
    let expected = gen_logs(dir, run, 30, 27);
    let config = write_config(dir, &standin.base_url(), "enabled = \"auto\"\n");
    let cred_key = "cr3dcr3dcr3dcr3dcr3dcr3dcr3dcr3dcr3dcr3d";
    let credstore = dir.join("credstore");
    let readme = std::fs::read_to_string(harness::repo().join("README.md")).unwrap();
    let setup: Vec<&str> = readme
        .lines()
        .filter(|l| {
            l.contains("/etc/credstore")
                && (l.starts_with("sudo ") || l.starts_with("systemd-ask-password "))
        })
        .collect();
    assert_eq!(
        setup.len(),
        2,
        "the README's two set-up commands: {setup:?}"
    );
    for line in setup {
        // The command as written, minus sudo, for the test's credstore;
        // the key arrives on stdin as from the prompt.
        let cmd = line
            .split(" #")
            .next()
            .unwrap()
            .replace("systemd-ask-password -n \"W&B API key:\" | ", "")
            .replace("sudo ", "")
            .replace("/etc/credstore", &credstore.display().to_string());
        let mut child = std::process::Command::new("sh")
            .args(["-c", &cmd])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(cred_key.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "{cmd}");
    }
    use std::os::unix::fs::PermissionsExt;
    let file = credstore.join("wandb-api-key");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key file is the owner's only");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), cred_key);

    let with_creds = |c: &mut std::process::Command| {
        c.env("CREDENTIALS_DIRECTORY", &credstore)
            .env("WANDB_API_KEY", "the-fallback-is-not-used");
    };
    let mut cmd = agent(dir, &config, &["--once"]);
    with_creds(&mut cmd);
    let mut child = harness::spawn(&mut cmd);
    assert!(
        wait_child(&mut child, Duration::from_secs(60)).success(),
        "{}",
        harness::stderr_logs(dir)
    );
    assert_history(&standin.runs()[&harness::wandb_id(run)], &expected);
    let want = format!("api:{cred_key}");
    let posts: Vec<_> = standin
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(!posts.is_empty());
    for r in posts {
        let auth = r.headers.get("authorization").expect("auth header");
        assert_eq!(decode_base64(&auth["Basic ".len()..]), want);
    }
    let logs = harness::stderr_logs(dir);
    assert!(!logs.contains(cred_key));
    assert!(
        logs.contains("W&B sink ready") && logs.contains("systemd credential wandb-api-key"),
        "{logs}"
    );

    let mut cmd = harness::shipper(dir, "check-config", &config, &[]);
    with_creds(&mut cmd);
    let out = cmd.stdout(std::process::Stdio::piped()).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("systemd credential wandb-api-key") && !shown.contains(cred_key),
        "{shown}"
    );
}

fn decode_base64(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | T.iter().position(|&t| t == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).unwrap()
}
