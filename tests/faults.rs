//! The hardening fault suite (issue 13, items 3, 9, 10, 12): a server
//! that echoes secrets, 429 storms, floods of garbage, file modes, and the
//! command line's small promises. Each test drives the real binary.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::harness::{self, gen_logs, shipper, wait_child, wait_for, write_config};
use support::standin::{percent_encode, Fault, On, StandIn};

/// A key with characters that percent-encoding changes.
const KEY: &str = "s3cr3t+k/y=0123456789abcdefghijklmnopqrstuv";
const PROXY_USER: &str = "proxyuser";
const PROXY_PASS: &str = "pr0xyPassw0rd";

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in input.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= c.len() {
                T[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// Every form in which the secrets travel or were echoed.
fn secret_forms() -> Vec<String> {
    let enc = percent_encode(KEY);
    vec![
        KEY.to_string(),
        enc.clone(),
        enc.to_ascii_lowercase(),
        base64(format!("api:{KEY}").as_bytes()),
        PROXY_PASS.to_string(),
        base64(format!("{PROXY_USER}:{PROXY_PASS}").as_bytes()),
    ]
}

fn assert_no_secret(text: &str, place: &str) {
    for s in secret_forms() {
        assert!(!text.contains(&s), "secret {s:?} found in {place}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
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

fn assert_no_secret_in_files(dir: &Path) {
    let files = walk(dir);
    assert!(!files.is_empty(), "nothing under {}", dir.display());
    for f in files {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert_no_secret(&String::from_utf8_lossy(&bytes), &f.display().to_string());
    }
}

/// `mosaic-shipper COMMAND --config CONFIG ARGS` with the test key, its
/// stdout to a file; returns (exit status, stdout, stderr).
fn command_output(
    dir: &Path,
    command: &str,
    config: &Path,
    args: &[&str],
) -> (std::process::ExitStatus, String, String) {
    let out = dir.join(format!("{command}-stdout.txt"));
    let mut c = shipper(dir, command, config, args);
    c.env("WANDB_API_KEY", KEY)
        .stdout(std::fs::File::create(&out).unwrap());
    let before = harness::stderr_logs(dir);
    let status = wait_child(&mut harness::spawn(&mut c), Duration::from_secs(120));
    let stderr = harness::stderr_logs(dir).replacen(&before, "", 1);
    (status, std::fs::read_to_string(out).unwrap(), stderr)
}

fn echo_config(dir: &Path, standin: &StandIn, extra: &str) -> PathBuf {
    let proxy = format!(
        "http://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{}",
        standin.addr.port()
    );
    write_config(
        dir,
        &standin.base_url(),
        &format!("proxy = \"{proxy}\"\ngive_up_secs = 5\n{extra}"),
    )
}

#[test]
fn secrets_echoed_by_server_and_proxy_reach_no_log_file_or_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = "01JDAF0000000000000000ECHO";
    gen_logs(dir, run, 60, 3);
    // The stand-in is the proxy too: it sees Proxy-Authorization and
    // echoes it with everything else.
    let standin = StandIn::start();
    standin.set_echo(true);
    let dead = harness::free_port();
    standin.inject(On::Graphql, Fault::Status(500));
    standin.inject(On::FileStream, Fault::Status(503));
    standin.inject(
        On::FileStream,
        Fault::TooMany {
            retry_after_secs: 0,
        },
    );
    standin.inject(On::FileStream, Fault::Status(403)); // final: a WARN
    standin.inject(
        On::FileStream,
        Fault::Redirect(format!(
            "http://api:{}@127.0.0.1:{dead}/files/x?key={}",
            percent_encode(KEY),
            percent_encode(KEY)
        )),
    );
    let config = echo_config(dir, &standin, "");
    let (status, _, stderr) =
        command_output(dir, "run", &config, &["--once", "--log-level", "trace"]);
    assert!(status.success(), "run --once failed:\n{stderr}");
    assert_eq!(standin.faults_pending(), 0, "not every echo was served");
    // The test proves something: the server did echo the secrets...
    let echoed = standin
        .requests()
        .iter()
        .any(|r| r.headers.contains_key("proxy-authorization"));
    assert!(echoed, "no request went through the proxy with credentials");
    // ...and the agent saw the echo (logged scrubbed at debug level).
    assert!(
        stderr.contains("W&B error answer") && stderr.contains("ECHO POST"),
        "the echoed bodies were not seen:\n{stderr}"
    );
    assert_no_secret(&stderr, "stderr at trace level");
    assert_no_secret_in_files(&dir.join("store"));
    // The final 4xx: one WARN naming run, status and URL, not the body.
    let warn: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("HTTP 403"))
        .collect();
    assert!(!warn.is_empty(), "no WARN for the 403:\n{stderr}");
    for l in warn {
        assert!(
            l.contains(&harness::wandb_id(run))
                && l.contains(&format!("{}/files/", standin.base_url())),
            "{l}"
        );
        assert!(
            !l.contains("ECHO POST"),
            "the body is in the WARN line: {l}"
        );
    }

    // `export` and `sync` of staged rows (separate stores: a failed sync
    // makes a run local to its store), against the same echoing server.
    let tmp2 = tempfile::tempdir().unwrap();
    let dir2 = tmp2.path();
    gen_logs(dir2, "01JDAF000000000000000STAGE", 30, 4);
    let staged = echo_config(dir2, &standin, "mode = \"stage\"\n");
    let (status, _, stderr) = command_output(dir2, "run", &staged, &["--once"]);
    assert!(status.success(), "staging failed:\n{stderr}");
    let bundle = dir2.join("bundle");
    let (status, out, err) = command_output(
        dir2,
        "export",
        &staged,
        &["--to", bundle.to_str().unwrap(), "--log-level", "trace"],
    );
    assert!(status.success(), "export failed:\n{err}");
    assert!(out.contains("exported"), "{out}");
    assert_no_secret(&format!("{out}{err}"), "export output");
    assert_no_secret_in_files(&dir2.join("store"));
    assert_no_secret_in_files(&bundle);

    let tmp3 = tempfile::tempdir().unwrap();
    let dir3 = tmp3.path();
    gen_logs(dir3, "01JDAF0000000000000000SYNC", 30, 4);
    let staged = echo_config(dir3, &standin, "mode = \"stage\"\n");
    let (status, _, stderr) = command_output(dir3, "run", &staged, &["--once"]);
    assert!(status.success(), "staging failed:\n{stderr}");
    standin.set_sticky_file_stream_status(Some(401));
    let (status, out, err) = command_output(dir3, "sync", &staged, &["--log-level", "trace"]);
    assert!(!status.success(), "sync against a 401 succeeded:\n{err}");
    assert!(
        err.contains("HTTP 401") && err.contains("ECHO POST"),
        "{err}"
    );
    assert_no_secret(&format!("{out}{err}"), "sync output");
    assert_no_secret_in_files(&dir3.join("store"));
}

/// Counts the file_stream requests the stand-in gets in `window` after
/// the first, while it answers each with `fault`.
fn requests_in_window(fault: Fault, window: Duration) -> (usize, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_logs(dir, "01JDAF000000000000000FL00R", 20, 5);
    let standin = StandIn::start();
    standin.set_sticky_file_stream_fault(Some(fault));
    // A short backoff: without the floor, requests would follow at once.
    let config = write_config(
        dir,
        &standin.base_url(),
        "retry_initial_ms = 10\nretry_max_ms = 50\n",
    );
    let mut agent = harness::spawn(&mut harness::agent(dir, &config, &[]));
    let count = || {
        standin
            .requests()
            .iter()
            .filter(|r| r.is_file_stream())
            .count()
    };
    wait_for(
        dir,
        Duration::from_secs(60),
        "a file_stream request",
        || count() >= 1,
    );
    let first = count();
    std::thread::sleep(window);
    let n = count() - first;
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    wait_child(&mut agent, Duration::from_secs(30));
    (n, harness::stderr_logs(dir))
}

#[test]
fn retry_after_zero_absent_or_garbage_waits_a_floor_and_warns_once() {
    for value in [Some("0"), None, Some("soon")] {
        let window = Duration::from_secs(4);
        let (n, stderr) = requests_in_window(Fault::TooManyRaw(value.map(str::to_string)), window);
        // A floor of 1 s: at most one request a second (plus jitter);
        // without it, hundreds.
        assert!(
            n <= 6,
            "Retry-After {value:?}: {n} requests in {window:?}\n{stderr}"
        );
        let warns = stderr
            .lines()
            .filter(|l| l.contains("W&B request failed; retrying"))
            .count();
        assert!(
            (1..=2).contains(&warns),
            "Retry-After {value:?}: {warns} retry warnings:\n{stderr}"
        );
        // The repeats held back are counted when the agent stops.
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("more like this") && l.contains("W&B request failed")),
            "no count of the repeats:\n{stderr}"
        );
    }
}

/// A config for the tail-only tests: jsonl on, W&B off.
fn local_config(dir: &Path) -> PathBuf {
    write_config(dir, "http://127.0.0.1:9", "enabled = false\n")
}

fn status_json(dir: &Path, config: &Path) -> serde_json::Value {
    let out = shipper(dir, "status", config, &["--json"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "status failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn random_bytes_give_few_warnings_and_every_line_is_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let logs = dir.join("var/trainer/runs/01JDAF00000000000000N0ISE1/logs");
    std::fs::create_dir_all(&logs).unwrap();
    // 2 MB of xorshift bytes, ending with a newline.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut data: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    data.push(b'\n');
    std::fs::write(logs.join("noise.log"), &data).unwrap();
    let lines: Vec<&[u8]> = data[..data.len() - 1].split(|&b| b == b'\n').collect();
    let invalid_utf8 = lines
        .iter()
        .filter(|l| std::str::from_utf8(l).is_err())
        .count() as u64;
    assert!(invalid_utf8 > 1000, "the input is not bad enough");

    let config = local_config(dir);
    let mut c = harness::agent(dir, &config, &["--once"]);
    let status = wait_child(&mut harness::spawn(&mut c), Duration::from_secs(120));
    let stderr = harness::stderr_logs(dir);
    assert!(status.success(), "{stderr}");
    let warns = stderr.lines().filter(|l| l.contains(" WARN ")).count();
    assert!(warns < 100, "{warns} WARN lines for 2 MB of noise");
    let mut file_warns = 0;
    for f in walk(&dir.join("store/logs")) {
        let text = std::fs::read_to_string(f).unwrap();
        file_warns += text.lines().filter(|l| l.contains(" WARN ")).count();
    }
    assert!(
        (1..100).contains(&file_warns),
        "{file_warns} WARN lines in the log files"
    );
    assert!(stderr.contains("more like this"), "no count of repeats");
    // Every skipped line is still counted.
    let s = status_json(dir, &config);
    assert_eq!(
        s["counters"]["lines"],
        lines.len() as u64,
        "{}",
        s["counters"]
    );
    assert_eq!(
        s["counters"]["invalid_utf8"], invalid_utf8,
        "{}",
        s["counters"]
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn store_journal_logs_and_status_are_private_under_a_permissive_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_logs(dir, "01JDAF000000000000000M0DES", 20, 6);
    let config = local_config(dir);
    let mut c = harness::agent(dir, &config, &["--once"]);
    // SAFETY: umask is async-signal-safe.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        })
    };
    let status = wait_child(&mut harness::spawn(&mut c), Duration::from_secs(120));
    assert!(status.success(), "{}", harness::stderr_logs(dir));
    let store = dir.join("store");
    assert_eq!(mode(&store), 0o700);
    assert_eq!(mode(&store.join("journal")), 0o700);
    assert_eq!(mode(&store.join("logs")), 0o700);
    assert_eq!(mode(&store.join("status.json")), 0o600);
    let mut seen = 0;
    for d in ["journal", "logs"] {
        for f in walk(&store.join(d)) {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
            seen += 1;
        }
    }
    assert!(seen >= 3, "too few files checked");
}

#[test]
fn a_fifo_named_like_a_log_is_skipped_once_and_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_logs(dir, "01JDAF000000000000000F1F0S", 20, 7);
    let fifo = dir.join("var/trainer/runs/01JDAF000000000000000F1F0S/logs/pipe.log");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let config = local_config(dir);
    let mut cmd = harness::agent(dir, &config, &["--once"]);
    let status = wait_child(&mut harness::spawn(&mut cmd), Duration::from_secs(60));
    let stderr = harness::stderr_logs(dir);
    assert!(status.success(), "{stderr}");
    let lines = stderr
        .lines()
        .filter(|l| l.contains("not a regular file") && l.contains("pipe.log"))
        .count();
    assert_eq!(lines, 1, "{stderr}");
    let snap = std::fs::read_to_string(dir.join("store/status.json")).unwrap();
    let snap: serde_json::Value = serde_json::from_str(&snap).unwrap();
    let listed = snap["unreadable"].as_object().unwrap();
    assert!(listed.keys().any(|k| k.ends_with("pipe.log")), "{listed:?}");
}

#[test]
fn a_missing_config_is_exit_2_and_named_once_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let missing = dir.join("no-such.toml");
    let name = missing.display().to_string();
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["sync"],
        &["export", "--to", "b"],
        &["import", "b"],
        &["check-config"],
        &["run", "--once"],
        &["run"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"))
            .args(args)
            .arg("--config")
            .arg(&missing)
            .current_dir(dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.matches(&name).count(), 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert_eq!(err.matches("os error").count(), 1, "{args:?}: {err}");
        assert!(!err.contains('\x1b'), "{args:?}: colour codes in {err:?}");
    }
}

/// The write end of a pipe whose read end is closed.
fn closed_pipe() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: pipe(2) just returned these two open descriptors.
    let (reader, writer) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(reader);
    writer
}

#[test]
fn printing_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_logs(dir, "01JDAF000000000000000P1PES", 20, 8);
    // Rows staged for W&B, so that `export` has something to print.
    let config = write_config(dir, "http://127.0.0.1:9", "mode = \"stage\"\n");
    harness::run_once(dir, &config);
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["check-config"],
        &["export", "--to", "bundle"],
        &["--help"],
    ] {
        // The reader is gone before the first byte is written: EPIPE for
        // sure, whatever the output's size.
        let writer = closed_pipe();
        let mut c = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"));
        c.args(args);
        if args[0] != "--help" {
            c.arg("--config").arg(&config);
        }
        harness::clean_env(&mut c, dir);
        let out = c
            .current_dir(dir)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let quiet = out.status.success() || out.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet, "{args:?}: {:?} {err}", out.status);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn status_as_a_user_who_cannot_read_the_store_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_logs(dir, "01JDAF000000000000000PERMS", 20, 9);
    let config = local_config(dir);
    harness::run_once(dir, &config);
    // Everyone may reach the config; only the agent's user the store.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let root = unsafe { libc::geteuid() } == 0;
    let mut c = Command::new(env!("CARGO_BIN_EXE_mosaic-shipper"));
    c.arg("status")
        .arg("--config")
        .arg(&config)
        .current_dir(dir);
    if root {
        // SAFETY: setgid/setuid are async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    } else {
        std::fs::set_permissions(dir.join("store"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
    }
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "permission denied reading {}",
            dir.join("store").display()
        )),
        "{err}"
    );
    assert!(!err.contains("not run"), "{err}");
    if !root {
        std::fs::set_permissions(dir.join("store"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
    }
}

#[test]
fn a_dead_proxy_is_named_with_its_credentials_masked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_logs(dir, "01JDAF0000000000000DEADPRX", 20, 10);
    let standin = StandIn::start();
    let port = harness::free_port();
    let config = write_config(
        dir,
        &standin.base_url(),
        &format!("proxy = \"http://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{port}\"\n"),
    );
    let mut agent = harness::spawn(&mut harness::agent(dir, &config, &[]));
    let want = format!("cannot connect to proxy http://***@127.0.0.1:{port}");
    let started = Instant::now();
    wait_for(dir, Duration::from_secs(60), "the dead proxy named", || {
        harness::stderr_logs(dir).contains(&want)
    });
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    wait_child(&mut agent, Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(60));
    let stderr = harness::stderr_logs(dir);
    assert!(!stderr.contains(PROXY_PASS), "{stderr}");
    assert!(!stderr.contains('\x1b'), "colour codes in a file");
    assert!(standin.requests().is_empty(), "went around the proxy");
}
