//! Init mode's handling of CMD's output, end to end with the real binary:
//! the agent's stdout/stderr carry exactly what the worker wrote, the
//! copies hold it and are shipped before the agent exits, a terminal gives
//! CMD a pty of its own, and a fast writer loses nothing.
//!
//! The worker is Python: its lifecycle lines are written with `json.dumps`
//! the way MOSAIC's `gym_gui/core/worker/telemetry.py` writes them (keys
//! sorted, compact), its metrics as CleanRL prints and logs them, and every
//! write goes straight to the file descriptor (`os.write`) and into an
//! `expected.*` file, so the test compares against what really was written.
//! Every wait is bounded.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{python, Tree, BIN};

const RUN: &str = "01KKAQ6XP04TFF59TDWH9EDD1R";

/// Writes lifecycle JSON, CleanRL text metrics, a progress bar, a metrics
/// record the default rule ships, binary bytes and unfinished last lines;
/// exits with argv[3]. argv[1]: run id for the JSON lines ("" for none),
/// argv[2]: where to record what was written.
const WORKER: &str = r#"
import json, os, sys, time
run_id, out_dir, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
sent = {1: open(os.path.join(out_dir, "expected.stdout"), "wb"),
        2: open(os.path.join(out_dir, "expected.stderr"), "wb")}
def w(fd, data):
    os.write(fd, data)
    sent[fd].write(data)
    sent[fd].flush()
def event(name, payload):
    d = {"event": name, "payload": payload, "timestamp": time.time()}
    if run_id:
        d["run_id"] = run_id
    return (json.dumps(d, sort_keys=True, separators=(",", ":")) + "\n").encode()
w(1, b"booting the worker\n")
w(2, b"a warning before the run id\n")
w(1, event("run_started", {"algo": "ppo", "env_id": "CartPole-v1", "seed": 1}))
w(2, b"2026-03-10 01:54:05 | INFO     | __main__ | global_step=44, episodic_return=11.000, length=11\n")
for i in range(1, 6):
    w(1, ("global_step=%d, episodic_return=[%d.]\n" % (i * 19, i + 19)).encode())
w(1, b"SPS: 2224\n")
w(2, b"\r 10%|#         |")
w(2, b"\r100%|##########|\n")
w(1, (json.dumps({"event": "metrics", "global_step": 7, "episodic_return": 1.5}) + "\n").encode())
w(2, bytes(range(256)))
w(1, event("run_completed", {"status": "ok"}))
w(1, b"an unfinished stdout line")
w(2, b"an unfinished stderr line")
sys.exit(code)
"#;

/// The tree with init mode's paths inside it, W&B off, and polling slower
/// than any test (what is shipped comes from the final read at CMD's exit).
fn tree(edits: &[(&str, &str)]) -> Tree {
    let t = Tree::new();
    let mut all = vec![
        ("enabled = \"auto\"", "enabled = false"),
        ("poll_interval_ms = 1000", "poll_interval_ms = 60000"),
    ];
    all.extend_from_slice(edits);
    t.write_config_with(&all);
    t
}

fn script(t: &Tree, name: &str, body: &str) -> PathBuf {
    let p = t.root().join(name);
    fs::write(&p, body).unwrap();
    p
}

/// `mosaic-shipper run --config C [--log-level L] -- CMD...` in the tree.
fn agent<S: AsRef<OsStr>>(t: &Tree, log_level: Option<&str>, cmd: &[S]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("run").arg("--config").arg(t.config_path());
    if let Some(l) = log_level {
        c.args(["--log-level", l]);
    }
    c.arg("--").args(cmd).current_dir(t.root());
    for k in ["RUST_LOG", "MOSAIC_SHIPPER_CONFIG", "MOSAIC_RUN_ID"] {
        c.env_remove(k);
    }
    c.stdin(Stdio::null());
    c
}

/// Waits (bounded) for a child; kills it and fails past the limit.
fn wait(mut child: Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        sleep(Duration::from_millis(20));
    }
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn with_newline(mut b: Vec<u8>) -> Vec<u8> {
    b.push(b'\n');
    b
}

fn run_logs(t: &Tree, run: &str) -> PathBuf {
    t.root().join("var/trainer/runs").join(run).join("logs")
}

/// Runs WORKER under the agent, stdout and stderr to files; returns the
/// exit code.
fn run_worker(
    t: &Tree,
    log_level: Option<&str>,
    run_id: &str,
    code: i32,
    env: &[(&str, &str)],
) -> i32 {
    let worker = script(t, "worker.py", WORKER);
    let mut c = agent(
        t,
        log_level,
        &[
            python().into_os_string(),
            worker.into_os_string(),
            run_id.into(),
            t.root().as_os_str().to_owned(),
            code.to_string().into(),
        ],
    );
    c.envs(env.iter().copied())
        .stdout(fs::File::create(t.root().join("agent.stdout")).unwrap())
        .stderr(fs::File::create(t.root().join("agent.stderr")).unwrap());
    let status = wait(c.spawn().unwrap(), Duration::from_secs(120), "the agent");
    status.code().expect("the agent exited, not killed")
}

// ------------------------------------------------------------ through pipes

/// Pipes: stdout and stderr are passed through byte for byte (with the
/// agent's own logs off, its stderr is exactly CMD's), the copies hold the
/// same bytes in the run named by the first JSON line (unfinished last
/// lines ended with a newline), and the metrics record in the copy is
/// shipped by the final read, before the agent exits with CMD's code.
#[test]
fn output_passes_through_unchanged_and_the_copies_are_shipped() {
    let t = tree(&[]);
    let code = run_worker(&t, Some("off"), RUN, 3, &[]);
    assert_eq!(code, 3);
    let want_out = read(&t.root().join("expected.stdout"));
    let want_err = read(&t.root().join("expected.stderr"));
    assert!(
        want_err.contains(&0) && want_err.contains(&0xff),
        "binary bytes written"
    );
    assert!(
        read(&t.root().join("agent.stdout")) == want_out,
        "agent stdout = CMD stdout"
    );
    assert!(
        read(&t.root().join("agent.stderr")) == want_err,
        "agent stderr = CMD stderr"
    );

    let logs = run_logs(&t, RUN);
    assert!(read(&logs.join("init.stdout.log")) == with_newline(want_out));
    assert!(read(&logs.join("init.stderr.log")) == with_newline(want_err));
    // The worker's JSON metrics record and its CleanRL text lines (both
    // formats, and `SPS:` at the latest step), in the order printed.
    let rows = t.delivered(RUN);
    let got: Vec<(i64, String)> = rows
        .iter()
        .map(|r| (r["step"].as_i64().unwrap(), r["values"].to_string()))
        .collect();
    assert_eq!(rows.len(), 8, "{got:?}");
    let json = rows
        .iter()
        .find(|r| r["step"] == 7)
        .expect("the JSON record");
    assert_eq!(json["values"]["charts/episodic_return"], 1.5);
    let sps = rows
        .iter()
        .find(|r| r["values"].get("charts/SPS").is_some())
        .unwrap();
    assert_eq!(
        (sps["step"].as_i64(), sps["values"]["charts/SPS"].as_f64()),
        (Some(95), Some(2224.0))
    );
    assert!(rows
        .iter()
        .any(|r| r["step"] == 44 && r["values"]["charts/episodic_length"] == 11.0));
}

/// No run id anywhere: the copies go to the fallback directory in the
/// store, which the agent follows (its offsets are at the files' ends).
#[test]
fn without_a_run_id_the_copies_go_to_the_followed_fallback() {
    let t = tree(&[]);
    assert_eq!(run_worker(&t, None, "", 0, &[]), 0);
    assert!(!t.root().join("var/trainer/runs").exists());
    let dirs: Vec<PathBuf> = fs::read_dir(t.store().join("console"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let out = dirs[0].join("stdout.log");
    let err = dirs[0].join("stderr.log");
    assert!(read(&out) == with_newline(read(&t.root().join("expected.stdout"))));
    assert!(read(&err) == with_newline(read(&t.root().join("expected.stderr"))));
    let status = t.status_json();
    for p in [&out, &err] {
        let f = status["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| Path::new(f["path"].as_str().unwrap()) == p.as_path())
            .unwrap_or_else(|| panic!("{} not followed: {status}", p.display()));
        assert_eq!(f["offset"], fs::metadata(p).unwrap().len());
    }
}

/// $MOSAIC_RUN_ID names the run before CMD prints anything, and wins over
/// the run id in CMD's JSON lines and over `init.run_id`.
#[test]
fn mosaic_run_id_names_the_copies() {
    let t = tree(&[(
        "run_id_wait_secs = 60",
        "run_id_wait_secs = 60\nrun_id = \"FROMCONFIG\"",
    )]);
    let code = run_worker(&t, None, RUN, 0, &[("MOSAIC_RUN_ID", "FROMENV")]);
    assert_eq!(
        code,
        0,
        "{}",
        String::from_utf8_lossy(&read(&t.root().join("agent.stderr")))
    );
    let logs = run_logs(&t, "FROMENV");
    assert!(
        read(&logs.join("init.stdout.log"))
            == with_newline(read(&t.root().join("expected.stdout")))
    );
    assert!(!run_logs(&t, RUN).exists());
    assert!(!run_logs(&t, "FROMCONFIG").exists());
}

/// A copy that cannot be created is reported once per stream with its
/// path; the pass-through and the exit code are unaffected.
#[test]
fn an_uncreatable_copy_is_logged_once_and_output_still_passes() {
    let t = tree(&[]);
    fs::create_dir_all(t.root().join("var/trainer")).unwrap();
    // `runs` is a file: no run directory can be created below it.
    fs::write(t.root().join("var/trainer/runs"), "").unwrap();
    let code = run_worker(&t, Some("warn"), RUN, 4, &[]);
    assert_eq!(code, 4);
    assert!(read(&t.root().join("agent.stdout")) == read(&t.root().join("expected.stdout")));
    let stderr = read(&t.root().join("agent.stderr"));
    let text = String::from_utf8_lossy(&stderr);
    let want = run_logs(&t, RUN).join("init.stdout.log");
    assert_eq!(
        text.matches("cannot create the copy of CMD's stdout")
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains(&want.display().to_string()), "{text}");
    assert_eq!(
        text.matches("cannot create the copy of CMD's stderr")
            .count(),
        1
    );
    // CMD's stderr still passed through, among the agent's warnings.
    let err = read(&t.root().join("expected.stderr"));
    let first = b"2026-03-10 01:54:05 | INFO     | __main__ | global_step=44";
    assert!(err.windows(first.len()).any(|w| w == first));
    assert!(stderr.windows(first.len()).any(|w| w == first), "{text}");
}

/// Fast output into a slow reader: the agent's stdout is a pipe the test
/// starts reading only after a pause, so CMD is held up by back-pressure;
/// every byte arrives, in order, and the copy holds them all.
#[test]
fn fifty_megabytes_arrive_whole_through_back_pressure() {
    let t = tree(&[]);
    let writer = script(
        &t,
        "big.py",
        r#"
import os
block = b"".join(b"%07d %s\n" % (i, b"x" * 56) for i in range(16384))
for _ in range(50):
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
"#,
    );
    let mut c = agent(
        &t,
        Some("warn"),
        &[python().as_os_str(), writer.as_os_str()],
    );
    c.env("MOSAIC_RUN_ID", "BIG")
        .stdout(Stdio::piped())
        .stderr(fs::File::create(t.root().join("agent.stderr")).unwrap());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        sleep(Duration::from_millis(500));
        let mut all = Vec::new();
        out.read_to_end(&mut all).unwrap();
        all
    });
    let status = wait(child, Duration::from_secs(300), "the agent");
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&read(&t.root().join("agent.stderr")))
    );
    let got = reader.join().unwrap();
    let mut block = Vec::new();
    for i in 0..16384 {
        block.extend_from_slice(format!("{i:07} {}\n", "x".repeat(56)).as_bytes());
    }
    let want = block.repeat(50);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "bytes differ");
    let copy = run_logs(&t, "BIG").join("init.stdout.log");
    assert_eq!(fs::metadata(&copy).unwrap().len(), want.len() as u64);
    assert!(read(&copy) == want);
}

// ------------------------------------------------------------ with a terminal

/// Records what CMD sees of its terminal, prints a plain and a coloured
/// line, exits 6.
const TTY_WORKER: &str = r#"
import os, sys
fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
with open(os.path.join(sys.argv[1], "seen"), "w") as f:
    f.write("%s %s %s %d %s\n" % (os.isatty(0), os.isatty(1), os.isatty(2), os.getpid(), fields[3]))
print("hello from the pty")
print("\x1b[32mgreen\x1b[0m", file=sys.stderr)
sys.exit(6)
"#;

/// Under `script` (the agent's stdout, stderr and stdin are a terminal):
/// CMD's streams are a terminal too, CMD leads its own session, its output
/// reaches the outer terminal, the copy is the pty's one stream, and the
/// exit code is CMD's.
#[test]
fn under_a_terminal_cmd_gets_a_pty_and_its_output_reaches_the_terminal() {
    let t = tree(&[]);
    let worker = script(&t, "tty.py", TTY_WORKER);
    let inner = format!(
        "MOSAIC_RUN_ID=TTY {BIN} run --config {} -- {} {} {}",
        t.config_path().display(),
        python().display(),
        worker.display(),
        t.root().display()
    );
    // script's stdin stays open and silent: at its end script would type
    // an end-of-file character into the terminal, which CMD would then get.
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("MOSAIC_SHIPPER_CONFIG")
        .stdin(Stdio::piped())
        .stdout(fs::File::create(t.root().join("script.out")).unwrap())
        .stderr(fs::File::create(t.root().join("script.err")).unwrap())
        .spawn()
        .expect("`script` (util-linux) runs");
    let _keep_open = child.stdin.take();
    let status = wait(child, Duration::from_secs(60), "script");
    let shown = String::from_utf8_lossy(&read(&t.root().join("script.out"))).replace('\r', "");
    assert_eq!(status.code(), Some(6), "{shown}");
    let seen = String::from_utf8(read(&t.root().join("seen"))).unwrap();
    let f: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(&f[..3], ["True", "True", "True"], "isatty 0/1/2: {seen}");
    assert_eq!(f[3], f[4], "CMD leads its own session: {seen}");
    assert!(shown.contains("hello from the pty\n"), "{shown}");
    assert!(shown.contains("\x1b[32mgreen\x1b[0m\n"), "{shown}");
    let copy = read(&run_logs(&t, "TTY").join("init.console.log"));
    assert!(
        copy == b"hello from the pty\r\n\x1b[32mgreen\x1b[0m\r\n",
        "{:?}",
        String::from_utf8_lossy(&copy)
    );
}

/// Waits for CMD's window size, reads one line from its terminal, waits
/// for a SIGWINCH with the new size; records each.
const PTY_WORKER: &str = r#"
import fcntl, os, signal, struct, sys, termios, time
out = sys.argv[1]
def size():
    r, c, _, _ = struct.unpack("HHHH", fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8))
    return "%d %d" % (r, c)
def record(name, text):
    with open(os.path.join(out, name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name))
winch = []
signal.signal(signal.SIGWINCH, lambda *a: winch.append(size()))
record("size", size())
record("input", sys.stdin.readline())
for _ in range(400):
    if winch:
        break
    time.sleep(0.05)
record("winch", winch[-1] if winch else "none")
"#;

fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut m, mut s) = (-1, -1);
    let size = libc::winsize {
        ws_row: 33,
        ws_col: 77,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out-pointers; null name and termios are allowed.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(r, 0, "openpty");
    // SAFETY: openpty returned two descriptors we own.
    unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
}

fn lflag(fd: &OwnedFd) -> libc::tcflag_t {
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the struct on success (asserted).
    unsafe {
        assert_eq!(libc::tcgetattr(fd.as_raw_fd(), t.as_mut_ptr()), 0);
        t.assume_init().c_lflag
    }
}

/// The agent in a terminal the test owns: CMD's pty starts with the
/// terminal's window size and follows a resize (SIGWINCH), keys typed reach
/// CMD (raw mode), and the terminal's modes are back when the agent exits.
#[test]
fn window_size_input_and_terminal_modes() {
    let t = tree(&[]);
    let worker = script(&t, "pty.py", PTY_WORKER);
    let (master, slave) = openpty();
    let before = lflag(&slave);
    assert!(before & libc::ICANON != 0 && before & libc::ECHO != 0);
    let mut c = agent(
        &t,
        None,
        &[
            python().as_os_str(),
            worker.as_os_str(),
            t.root().as_os_str(),
        ],
    );
    c.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(|| {
            // The test's pty becomes the agent's controlling terminal and
            // the agent its foreground group, as in an interactive shell.
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let child = c.spawn().unwrap();
    // The command holds copies of the slave: only the test's own is kept.
    drop(c);
    // The terminal must be read, or the agent blocks writing to it.
    let mut reader = fs::File::from(master.try_clone().unwrap());
    let shown = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // Ends with EIO once the agent (the last holder of the slave
        // besides the test) is gone and the test's slave is closed.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let file = |name: &str| t.root().join(name);
    wait_until(Duration::from_secs(30), "CMD's window size", || {
        file("size").exists()
    });
    assert_eq!(fs::read_to_string(file("size")).unwrap(), "33 77");
    wait_until(Duration::from_secs(30), "the agent's raw mode", || {
        lflag(&slave) & (libc::ICANON | libc::ECHO) == 0
    });
    let mut keys = fs::File::from(master.try_clone().unwrap());
    keys.write_all(b"typed line\r").unwrap();
    wait_until(Duration::from_secs(30), "CMD to read the line", || {
        file("input").exists()
    });
    assert_eq!(fs::read_to_string(file("input")).unwrap(), "typed line\n");
    let bigger = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize.
    assert_eq!(
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &bigger) },
        0
    );
    wait_until(Duration::from_secs(30), "CMD's SIGWINCH", || {
        file("winch").exists()
    });
    assert_eq!(fs::read_to_string(file("winch")).unwrap(), "40 100");
    let status = wait(child, Duration::from_secs(60), "the agent");
    assert_eq!(status.code(), Some(0));
    let after = lflag(&slave);
    assert_eq!(after, before, "terminal modes restored");
    drop(slave);
    drop(keys);
    drop(master);
    let shown = shown.join().unwrap();
    // Typed once, echoed once (by CMD's terminal, not also by ours). The
    // agent's own log lines may quote it (the console copy's "no rows"
    // note names its latest line): they are not the terminal's echo.
    let text = String::from_utf8_lossy(&shown);
    let echoed = text
        .lines()
        .filter(|l| !l.contains("mosaic_shipper"))
        .map(|l| l.matches("typed line").count())
        .sum::<usize>();
    assert_eq!(echoed, 1, "{text}");
}
