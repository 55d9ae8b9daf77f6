//! The store's fault suite: a journal that comes back damaged, cut,
//! emptied or deleted, under a stopped or a running agent, and a full disk
//! under a running one. Each time the real binary must stop or refuse with
//! a non-zero exit and a message naming the store, never re-ship what the
//! sinks already have, and `--reset-store` must get it going again.
//!
//! The full-disk test mounts a small tmpfs, which needs root (CI runs as
//! root); without it the test fails, it does not skip.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

use common::{key, read_jsonl, RowKey, Tree};

const RUN: &str = "01JSTOREDAMAGE0000000000R1";

/// A tree whose store has delivered the rows of one run's log; returns the
/// tree and the rows the jsonl sink holds (as the log's expected rows).
fn shipped(edits: &[(&str, &str)], records: usize) -> (Tree, Vec<RowKey>) {
    let t = Tree::new();
    t.write_config_with(edits);
    let expected = write_logs(&t, RUN, records);
    let out = run_once(&t, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        delivered(&t, RUN),
        expected,
        "the first run delivers every row once"
    );
    (t, expected)
}

/// Worker logs for `run` (Python's logging, scripts/gen-worker-logs.py);
/// returns the rows they must give.
fn write_logs(t: &Tree, run: &str, records: usize) -> Vec<RowKey> {
    let expect = t.root().join(format!("expect-{run}.jsonl"));
    common::gen_logs(
        t.root(),
        &[
            "--rows",
            &records.to_string(),
            "--run-id",
            run,
            "--max-bytes",
            "0",
            "--expect",
            expect.to_str().unwrap(),
        ],
    );
    read_jsonl(&expect).iter().map(key).collect()
}

fn delivered(t: &Tree, run: &str) -> Vec<RowKey> {
    t.delivered(run).iter().map(key).collect()
}

/// `run --once` (bounded: a hung agent fails the test).
fn run_once(t: &Tree, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--once"];
    args.extend_from_slice(extra);
    bounded(t, &args)
}

/// Runs the agent's command `args` to its end, for at most two minutes.
fn bounded(t: &Tree, args: &[&str]) -> Output {
    let log = t.root().join("command.stderr");
    let mut child = t
        .shipper(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{}` did not end in 2 minutes:\n{}",
                args.join(" "),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: Vec::new(),
        stderr: std::fs::read(&log).unwrap_or_default(),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A refusal: non-zero, one message naming the store and the way out.
fn assert_refused(t: &Tree, out: &Output, case: &str) {
    let text = stderr(out);
    assert!(
        !out.status.success(),
        "{case}: the agent started on the damaged store:\n{text}"
    );
    let store = t.store().display().to_string();
    assert!(
        text.contains(&store),
        "{case}: the message does not name {store}:\n{text}"
    );
    assert!(
        text.contains("--reset-store"),
        "{case}: the message does not say the way out:\n{text}"
    );
}

/// `run --once --reset-store` moves the store aside and ships again from
/// the start; a further run ships nothing more.
fn assert_reset_recovers(t: &Tree, expected: &[RowKey], case: &str) {
    let before = asides(t).len();
    let out = run_once(t, &["--reset-store"]);
    assert!(
        out.status.success(),
        "{case}: --reset-store did not recover:\n{}",
        stderr(&out)
    );
    assert_eq!(
        asides(t).len(),
        before + 1,
        "{case}: the old store is kept aside"
    );
    let after_reset = delivered(t, RUN);
    assert_eq!(
        after_reset.len(),
        2 * expected.len(),
        "{case}: a new store reads the log again from the start (as documented)"
    );
    let out = run_once(t, &[]);
    assert!(out.status.success(), "{case}: {}", stderr(&out));
    assert_eq!(
        delivered(t, RUN),
        after_reset,
        "{case}: the new store is in use"
    );
}

/// The store directories moved aside by `--reset-store`.
fn asides(t: &Tree) -> Vec<PathBuf> {
    std::fs::read_dir(t.root())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("store.broken-")
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn restore(t: &Tree, good: &Path) {
    let store = t.store();
    std::fs::remove_dir_all(&store).unwrap();
    copy_dir(good, &store);
}

fn db(t: &Tree) -> PathBuf {
    t.store().join("journal/db")
}

/// Flips one byte of sled's `db` at 21 offsets spread over the part of the
/// file in use (its first and last byte included). Every variant is either refused or,
/// where the byte is one sled never reads back, runs as before: never a
/// row shipped twice. Most must be refused; the count is printed.
fn flip_bytes_of_db(t: &Tree, expected: &[RowKey], also: impl Fn(&Tree) -> Option<Output>) {
    let good = t.root().join("good-store");
    copy_dir(&t.store(), &good);
    // sled's segments are preallocated: the bytes past the last one it
    // wrote are zeros it never reads.
    let bytes = std::fs::read(db(t)).unwrap();
    let len = bytes.len() as u64;
    let used = bytes.iter().rposition(|&b| b != 0).unwrap() as u64 + 1;
    assert!(used > 100, "a db of {used} bytes in use");
    let mut refused = 0;
    let variants = 21;
    for i in 0..variants {
        restore(t, &good);
        let offset = (used - 1) * i / (variants - 1);
        let mut bytes = std::fs::read(db(t)).unwrap();
        bytes[offset as usize] ^= 0xFF;
        std::fs::write(db(t), &bytes).unwrap();
        let case = format!("byte {offset} of {len} ({used} in use) flipped");
        let mut out = run_once(t, &[]);
        if out.status.success() {
            if let Some(more) = also(t) {
                out = more;
            }
        }
        if out.status.success() {
            eprintln!("{case}: not refused (sled does not read that byte back)");
        } else {
            assert_refused(t, &out, &case);
            refused += 1;
        }
        assert_eq!(delivered(t, RUN), expected, "{case}: rows shipped again");
    }
    eprintln!("{refused} of {variants} flipped bytes refused");
    assert!(
        refused * 4 >= variants * 3,
        "only {refused} of {variants} flipped bytes were noticed"
    );
    restore(t, &good);
    let mut bytes = std::fs::read(db(t)).unwrap();
    bytes[0] ^= 0xFF;
    std::fs::write(db(t), &bytes).unwrap();
    assert_reset_recovers(t, expected, "flipped byte");
}

#[test]
fn flipped_bytes_in_db_are_refused_never_re_shipped() {
    let (t, expected) = shipped(&[], 900);
    flip_bytes_of_db(&t, &expected, |_| None);
}

/// The rows themselves in the store (held for W&B, staged), where a flip
/// is caught by the rows' checksums when they are read (`export`).
#[test]
fn flipped_bytes_under_staged_rows_are_caught_when_the_rows_are_read() {
    let (t, expected) = shipped(
        &[
            ("enabled = \"auto\"", "enabled = true"),
            ("# mode = \"online\"", "mode = \"stage\""),
        ],
        900,
    );
    // The rows are staged for W&B: they stay in the journal.
    let status = t.status_json();
    assert!(
        status.to_string().contains("\"wandb\""),
        "rows are staged for W&B: {status}"
    );
    let bundle = t.root().join("bundle");
    flip_bytes_of_db(&t, &expected, |t| {
        let _ = std::fs::remove_dir_all(&bundle);
        let out = bounded(t, &["export", "--to", bundle.to_str().unwrap()]);
        if out.status.success() {
            // Not refused: then every staged row is in the bundle.
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(bundle.join("manifest.json")).unwrap())
                    .unwrap();
            // And the one row of machine facts (the W&B Overview) the
            // run's rows start with while W&B is on.
            assert_eq!(
                manifest["rows"].as_u64(),
                Some(expected.len() as u64 + 1),
                "export after an accepted flip: {manifest}"
            );
            // (The next variant starts from the good store again.)
            None
        } else {
            Some(out)
        }
    });
}

/// The journal's row segment files (`journal/segments/*.seg`).
fn segment_files(t: &Tree) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(t.store().join("journal/segments"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    out.sort();
    out
}

/// The rows themselves are in segment files beside sled's: every byte of
/// them is covered by a check (the file's header, each block's sequence
/// number, length and checksum), so any flipped byte is refused when the
/// rows are read, and the store from then on; a segment file deleted or
/// cut is refused when the store is opened.
#[test]
fn damaged_or_missing_segment_files_are_refused_never_re_shipped() {
    let (t, expected) = shipped(
        &[
            ("enabled = \"auto\"", "enabled = true"),
            ("# mode = \"online\"", "mode = \"stage\""),
        ],
        900,
    );
    let good = t.root().join("good-store");
    copy_dir(&t.store(), &good);
    let files = segment_files(&t);
    assert!(!files.is_empty(), "the staged rows are in segment files");
    let seg = files[0].file_name().unwrap().to_owned();
    let len = std::fs::metadata(&files[0]).unwrap().len();
    let bundle = t.root().join("bundle");
    let variants = 13;
    for i in 0..variants {
        restore(&t, &good);
        let offset = (len - 1) * i / (variants - 1);
        let path = t.store().join("journal/segments").join(&seg);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let case = format!("byte {offset} of {len} of segment {seg:?} flipped");
        let _ = std::fs::remove_dir_all(&bundle);
        let out = bounded(&t, &["export", "--to", bundle.to_str().unwrap()]);
        assert_refused(&t, &out, &case);
        assert!(
            stderr(&out).contains(&seg.to_string_lossy().to_string()),
            "{case}: the message does not name the segment file:\n{}",
            stderr(&out)
        );
        // Refused from then on, by every command.
        let out = run_once(&t, &[]);
        assert_refused(&t, &out, &format!("run after {case}"));
        assert_eq!(delivered(&t, RUN), expected, "{case}: rows shipped again");
    }
    for (case, damage) in [
        ("segment file deleted", None),
        ("segment file cut by 1 byte", Some(len - 1)),
    ] {
        restore(&t, &good);
        let path = t.store().join("journal/segments").join(&seg);
        match damage {
            None => std::fs::remove_file(&path).unwrap(),
            Some(to) => cut(&path, to),
        }
        let out = run_once(&t, &[]);
        assert_refused(&t, &out, case);
        assert!(
            stderr(&out).contains(&path.display().to_string()),
            "{case}: the message does not name {}:\n{}",
            path.display(),
            stderr(&out)
        );
        assert_eq!(delivered(&t, RUN), expected, "{case}: rows shipped again");
    }
    assert_reset_recovers(&t, &expected, "segment file damaged");
}

#[test]
fn db_or_conf_deleted_or_cut_are_refused_never_re_shipped() {
    let (t, expected) = shipped(&[], 900);
    let good = t.root().join("good-store");
    copy_dir(&t.store(), &good);
    let len = std::fs::metadata(db(&t)).unwrap().len();
    type Damage = Box<dyn Fn(&Tree)>;
    let cases: Vec<(String, Damage)> = vec![
        (
            "db deleted".into(),
            Box::new(|t| std::fs::remove_file(db(t)).unwrap()),
        ),
        (
            "conf deleted".into(),
            Box::new(|t| std::fs::remove_file(t.store().join("journal/conf")).unwrap()),
        ),
        (
            "the journal directory deleted".into(),
            Box::new(|t| std::fs::remove_dir_all(t.store().join("journal")).unwrap()),
        ),
        ("db cut to 0 bytes".into(), Box::new(|t| cut(&db(t), 0))),
        (
            format!("db cut to {} of {len} bytes", len / 2),
            Box::new(move |t| cut(&db(t), len / 2)),
        ),
        (
            format!("db cut by 1 byte to {}", len - 1),
            Box::new(move |t| cut(&db(t), len - 1)),
        ),
        (
            "the marker damaged".into(),
            Box::new(|t| {
                let m = t.store().join("journal.marker");
                let mut b = std::fs::read(&m).unwrap();
                let i = b.iter().position(|&c| c.is_ascii_digit()).unwrap();
                b[i] = if b[i] == b'9' { b'8' } else { b[i] + 1 };
                std::fs::write(&m, b).unwrap();
            }),
        ),
    ];
    for (case, damage) in &cases {
        restore(&t, &good);
        damage(&t);
        let out = run_once(&t, &[]);
        if case.contains("cut by 1 byte") && out.status.success() {
            // sled's last byte may be one it never reads back.
            eprintln!("{case}: not refused");
        } else {
            assert_refused(&t, &out, case);
        }
        assert_eq!(delivered(&t, RUN), expected, "{case}: rows shipped again");
        // `status` tells the same, instead of "the agent has not run yet".
        let status = bounded(&t, &["status"]);
        if !out.status.success() {
            assert_refused(&t, &status, &format!("status, {case}"));
        }
    }
    restore(&t, &good);
    std::fs::remove_file(db(&t)).unwrap();
    assert_reset_recovers(&t, &expected, "db deleted");
}

fn cut(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Waits (bounded) for `child` to exit.
fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: the agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_delivered(t: &Tree, run: &str, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while t.delivered(run).len() < n {
        assert!(Instant::now() < deadline, "{what}: rows were not delivered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_store_deleted_while_running_stops_the_agent_and_the_next_start_refuses() {
    for (case, victim) in [
        ("the whole store", ""),
        ("the journal directory", "journal"),
    ] {
        let t = Tree::new();
        t.write_config_with(&[("poll_interval_ms = 1000", "poll_interval_ms = 100")]);
        let expected = write_logs(&t, RUN, 600);
        let log = t.root().join("agent.stderr");
        let mut agent = t.spawn_agent(&[], std::fs::File::create(&log).unwrap().into());
        wait_delivered(&t, RUN, expected.len(), case);
        std::fs::remove_dir_all(t.store().join(victim)).unwrap();
        let status = wait_exit(&mut agent.0, Duration::from_secs(30), case);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !status.success(),
            "{case} deleted: the agent went on:\n{text}"
        );
        assert!(
            text.contains("was deleted while the agent was running")
                && text.contains(&t.store().display().to_string()),
            "{case} deleted: no message naming the store:\n{text}"
        );
        // The next start refuses what is left, instead of starting afresh.
        let out = run_once(&t, &[]);
        assert_refused(&t, &out, &format!("start after {case} was deleted"));
        assert!(
            stderr(&out).contains("deleted while the agent was running"),
            "{}",
            stderr(&out)
        );
        assert_eq!(delivered(&t, RUN), expected, "{case}: rows shipped again");
        let out = run_once(&t, &["--reset-store"]);
        assert!(out.status.success(), "{case}: {}", stderr(&out));
        assert_eq!(delivered(&t, RUN).len(), 2 * expected.len());
    }
}

/// A small tmpfs mounted over a directory; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        use std::ffi::CString;
        std::fs::create_dir_all(dir).unwrap();
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        assert!(
            uid == 0,
            "the full-disk test mounts a tmpfs and needs root (uid {uid}); run the suite as root \
             (CI does)"
        );
        let target = CString::new(dir.to_str().unwrap()).unwrap();
        let data = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        assert!(
            rc == 0,
            "cannot mount a tmpfs on {} for the full-disk test: {}; the test needs a machine \
             that allows mounting (root, not in a restricted container)",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let target = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: a valid path; MNT_DETACH also lets go of a busy mount.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Fills the file system under `dir` with one file; returns it.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    for _ in 0..100_000 {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    path
}

fn by_key(rows: &[RowKey]) -> BTreeMap<RowKey, usize> {
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r.clone()).or_insert(0) += 1;
    }
    out
}

#[test]
fn a_full_disk_under_the_store_stops_the_agent_and_nothing_is_lost_or_doubled() {
    let t = Tree::new();
    t.write_config_with(&[("poll_interval_ms = 1000", "poll_interval_ms = 100")]);
    let _fs = Tmpfs::mount(&t.store(), "16m");
    let first = write_logs(&t, RUN, 900);
    let log = t.root().join("agent.stderr");
    let mut agent = t.spawn_agent(&[], std::fs::File::create(&log).unwrap().into());
    wait_delivered(&t, RUN, first.len(), "before the disk is full");
    let filler = fill(&t.store());
    // More to journal than the disk can take.
    const SECOND: &str = "01JSTOREDAMAGE0000000000R2";
    let second = write_logs(&t, SECOND, 20_000);
    let status = wait_exit(&mut agent.0, Duration::from_secs(60), "full disk");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "the agent must exit 1 on a full disk:\n{text}"
    );
    assert!(
        text.contains("No space left on device") && text.contains(&t.store().display().to_string()),
        "no message naming the store and the full disk:\n{text}"
    );
    let shipped_before = t.delivered(SECOND).len();
    assert!(
        shipped_before < second.len(),
        "the disk filled too late to test anything ({shipped_before} rows shipped)"
    );
    // Started again on the full disk (systemd's Restart=on-failure): it
    // fails the same way, and does not call the store damaged.
    let out = run_once(&t, &[]);
    let text = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a start on the full disk:\n{text}"
    );
    assert!(
        text.contains("No space left on device") && !text.contains("--reset-store"),
        "a start on the full disk must say so, not call the store damaged:\n{text}"
    );
    // Space freed: the restarted agent goes on where it stopped.
    std::fs::remove_file(filler).unwrap();
    let out = run_once(&t, &[]);
    assert!(
        out.status.success(),
        "after space was freed: {}",
        stderr(&out)
    );
    assert_eq!(delivered(&t, RUN), first, "rows before the full disk");
    let got = delivered(&t, SECOND);
    assert_eq!(
        by_key(&got),
        by_key(&second),
        "{} rows delivered of {} written ({shipped_before} before the disk filled): lost or doubled",
        got.len(),
        second.len()
    );
    assert_eq!(got, second, "in order");
}

/// A byte flipped inside a pending row block (rows staged for W&B) is
/// reported when the store is opened, by `status` (which reads no row)
/// and `run --once` alike, naming the store, the segment file and
/// `--reset-store`.
#[test]
fn a_flipped_byte_in_a_pending_row_block_is_refused_at_open() {
    let (t, expected) = shipped(
        &[
            ("enabled = \"auto\"", "enabled = true"),
            ("# mode = \"online\"", "mode = \"stage\""),
        ],
        900,
    );
    // Rows are held for W&B: every block is pending.
    let status = t.status_json();
    let wandb = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "wandb")
        .cloned()
        .unwrap();
    assert!(wandb["pending"].as_u64().unwrap() > 0, "{wandb}");
    // One byte in the middle of the rows' segment file flipped: the
    // block's own checksum is what tells.
    let files = segment_files(&t);
    let path = files.first().expect("a segment file").clone();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    // `status` reads no row: only the check at open can see it.
    let out = bounded(&t, &["status"]);
    assert!(!out.status.success(), "status took a damaged row block");
    assert_refused(&t, &out, "status, a flipped byte in a pending row block");
    let out = run_once(&t, &[]);
    assert!(!out.status.success(), "run --once took a damaged row block");
    assert_refused(&t, &out, "a flipped byte in a pending row block");
    let seg = path.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        stderr(&out).contains(&seg),
        "the message names the segment file: {}",
        stderr(&out)
    );
    assert_reset_recovers(&t, &expected, "flipped row block");
}
