//! Model-based test of the tailer, in the manner of Vector's file-source
//! model test: random sequences of writes (also partial lines), rename
//! rotation, copytruncate (with the agent looking at every stage of it:
//! the copy just created and empty, partly written, complete, then the
//! truncate), restores from a backup (`cp -p`, then `mv` over the file),
//! deletion of old rotations and agent restarts are applied both to real
//! files and to a simple model that says which lines must come out, which
//! may be lost, and in what order.
//!
//! The model's rules, which are those of every file shipper:
//! - every complete line comes out at most once, and in order within the
//!   file it was written to; lines over `max_line_bytes` never come out;
//! - every line comes out, except lines written into the current file
//!   between a copytruncate's copy and its truncate (they are in neither
//!   file), and lines of a file deleted before the agent read them and
//!   while it held no handle on it (a file created and deleted between two
//!   looks, or deleted while the agent was stopped).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use mosaic_shipper::config::TailConfig;
use mosaic_shipper::config::{SourceConfig, SourceKind};
use mosaic_shipper::journal::FileState;
use mosaic_shipper::source::Tailer;
use proptest::prelude::*;

/// The one source of the model: `runs/*/logs/*.log` under `root`.
fn log_sources(root: &Path) -> Vec<SourceConfig> {
    vec![SourceConfig {
        name: "logs".into(),
        kind: SourceKind::Lines,
        paths: vec![format!("{}/runs/*/logs/*.log", root.display())],
        exclude: Vec::new(),
        run_id_from_path: None,
        console: Vec::new(),
    }]
}

#[derive(Debug, Clone)]
enum Op {
    /// Append `n` complete lines of the given lengths; with `partial`, also
    /// the first half of one more line (completed by the next write).
    Write {
        lens: Vec<usize>,
        partial: bool,
        crlf: bool,
    },
    /// RotatingFileHandler: x.log.N -> x.log.N+1, x.log -> x.log.1, new x.log.
    Rotate,
    /// logrotate copytruncate, as logrotate does it: x.log.N -> x.log.N+1,
    /// x.log.1 created empty, x.log's bytes copied into it (in two writes,
    /// the first of `cut` bytes), `window` lines written to x.log, x.log
    /// truncated. `looks` has a bit per stage at which the agent looks
    /// (targeted looks, as events ask for, with `targeted`): the copy
    /// empty (1), partly written (2), complete (4), after the window
    /// lines (8), right after the truncate (16).
    CopyTruncate {
        window: usize,
        cut: usize,
        looks: u8,
        targeted: bool,
    },
    /// A file restored from a backup: `cp -p` of x.log (or of x.log.N,
    /// `n` modulo the files there are) to outside the logs, then `mv` of
    /// the copy over it: the same bytes under a new inode.
    Restore { n: usize },
    /// Delete the oldest rotated file.
    DeleteOldest,
    /// The agent looks: scans and reads everything it can.
    Look,
    /// The agent looks where a file-system event says something changed
    /// (a targeted scan of the logs directory), then reads.
    LookAt,
    /// The agent is killed (uncommitted state lost); the next look starts it.
    Kill,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(prop_oneof![20 => 1usize..150, 1 => 4000usize..9000], 1..5), any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(lens, partial, crlf)| Op::Write { lens, partial, crlf }),
        2 => Just(Op::Rotate),
        2 => (0usize..3, prop_oneof![1usize..300, 300usize..5000], 0u8..32, any::<bool>())
            .prop_map(|(window, cut, looks, targeted)| Op::CopyTruncate { window, cut, looks, targeted }),
        1 => (0usize..4).prop_map(|n| Op::Restore { n }),
        1 => Just(Op::DeleteOldest),
        3 => Just(Op::Look),
        2 => Just(Op::LookAt),
        1 => Just(Op::Kill),
    ]
}

/// A physical file the model knows of (an inode), oldest first.
#[derive(Debug)]
struct ModelFile {
    /// Model identity, for the per-file order check.
    id: usize,
    /// Line ids written to it, in order.
    lines: Vec<u64>,
    /// Whether the running agent has looked since it was created (and so
    /// holds a handle on it).
    held: bool,
}

struct Harness {
    dir: tempfile::TempDir,
    config: TailConfig,
    tailer: Option<Tailer>,
    /// Checkpoints as the journal would hold them.
    committed: BTreeMap<u64, FileState>,
    /// The current x.log, then x.log.1, x.log.2, ... (index = rotation number).
    files: Vec<ModelFile>,
    next_file: usize,
    next_line: u64,
    /// A partial line written to x.log, completed by the next write.
    partial: Option<(u64, String)>,
    /// Line id -> model file it was written to.
    origin: HashMap<u64, usize>,
    may_lose: BTreeSet<u64>,
    /// Lines longer than `max_line_bytes`: skipped, never delivered.
    too_long: BTreeSet<u64>,
    /// Deleted while held: must come out if the agent looks before it dies.
    deleted_held: Vec<u64>,
    out: Vec<u64>,
    /// Groups read so far: each look reads up to 1 + groups % 4 batches
    /// before committing them, as the ingest gathers them for one commit.
    groups: usize,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("runs/R/logs")).unwrap();
        let config = TailConfig {
            sources: None,
            follow_rotated: true,
            max_line_bytes: 4096,
            poll_interval_ms: 1000,
            rescan_interval_ms: 60_000,
            // Small batches, so that reads stop mid-file and resume.
            read_batch_bytes: 4096,
        };
        let mut h = Harness {
            dir,
            config,
            tailer: None,
            committed: BTreeMap::new(),
            files: Vec::new(),
            next_file: 0,
            next_line: 0,
            partial: None,
            origin: HashMap::new(),
            may_lose: BTreeSet::new(),
            too_long: BTreeSet::new(),
            deleted_held: Vec::new(),
            out: Vec::new(),
            groups: 0,
        };
        h.create_current();
        h
    }

    fn path(&self, n: usize) -> PathBuf {
        let base = self.dir.path().join("runs/R/logs/x.log");
        if n == 0 {
            base
        } else {
            PathBuf::from(format!("{}.{n}", base.display()))
        }
    }

    fn create_current(&mut self) {
        fs::write(self.path(0), b"").unwrap();
        self.files.insert(
            0,
            ModelFile {
                id: self.next_file,
                lines: Vec::new(),
                held: false,
            },
        );
        self.next_file += 1;
    }

    fn line_text(id: u64, len: usize) -> String {
        // Unique from the first byte on, so fingerprints tell files apart.
        let mut s = format!("L{id:08}|");
        while s.len() < len.max(12) {
            s.push((b'a' + (s.len() % 26) as u8) as char);
        }
        s
    }

    fn append(&self, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(self.path(0)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn write_line(&mut self, len: usize, crlf: bool) {
        let id = self.next_line;
        self.next_line += 1;
        let text = Self::line_text(id, len);
        if text.len() > self.config.max_line_bytes {
            self.too_long.insert(id);
        }
        let end = if crlf { "\r\n" } else { "\n" };
        self.append(format!("{text}{end}").as_bytes());
        self.files[0].lines.push(id);
        self.origin.insert(id, self.files[0].id);
    }

    fn complete_partial(&mut self) {
        if let Some((id, rest)) = self.partial.take() {
            self.append(format!("{rest}\n").as_bytes());
            self.files[0].lines.push(id);
            self.origin.insert(id, self.files[0].id);
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write {
                lens,
                partial,
                crlf,
            } => {
                self.complete_partial();
                for &len in lens {
                    self.write_line(len, *crlf);
                }
                if *partial {
                    let id = self.next_line;
                    self.next_line += 1;
                    let text = Self::line_text(id, 40);
                    let (head, tail) = text.split_at(20);
                    self.append(head.as_bytes());
                    self.partial = Some((id, tail.to_string()));
                }
            }
            Op::Rotate => {
                self.complete_partial();
                for n in (0..self.files.len()).rev() {
                    fs::rename(self.path(n), self.path(n + 1)).unwrap();
                }
                self.create_current();
            }
            Op::CopyTruncate {
                window,
                cut,
                looks,
                targeted,
            } => {
                let look = |h: &mut Harness, stage: u8| {
                    if looks & stage != 0 {
                        h.look_with(*targeted);
                    }
                };
                self.complete_partial();
                for n in (1..self.files.len()).rev() {
                    fs::rename(self.path(n), self.path(n + 1)).unwrap();
                }
                let bytes = fs::read(self.path(0)).unwrap();
                let mut copy_file = fs::File::create(self.path(1)).unwrap();
                let copy = ModelFile {
                    id: self.next_file,
                    lines: self.files[0].lines.clone(),
                    held: false,
                };
                self.next_file += 1;
                for id in &copy.lines {
                    // The copy holds the same lines; either file may deliver
                    // them, so they count under the copy's identity too.
                    self.origin.insert(*id, usize::MAX);
                }
                self.files.insert(1, copy);
                look(self, 1);
                let cut = (*cut).min(bytes.len());
                copy_file.write_all(&bytes[..cut]).unwrap();
                look(self, 2);
                copy_file.write_all(&bytes[cut..]).unwrap();
                drop(copy_file);
                look(self, 4);
                for _ in 0..*window {
                    self.write_line(30, false);
                    let id = *self.files[0].lines.last().unwrap();
                    self.may_lose.insert(id);
                }
                look(self, 8);
                OpenOptions::new()
                    .write(true)
                    .open(self.path(0))
                    .unwrap()
                    .set_len(0)
                    .unwrap();
                // What stays in x.log is nothing; its old lines live in the copy.
                self.files[0].lines.clear();
                look(self, 16);
            }
            Op::Restore { n } => {
                // A partial last line is copied too and completed in the
                // restored file.
                let n = n % self.files.len();
                let backup = self.dir.path().join("backup");
                let status = std::process::Command::new("cp")
                    .arg("-p")
                    .arg(self.path(n))
                    .arg(&backup)
                    .status()
                    .unwrap();
                assert!(status.success(), "cp -p failed");
                fs::rename(&backup, self.path(n)).unwrap();
                // The agent's handle is on the old inode; writes from now on
                // go to the new one, which it has not seen yet.
                self.files[n].held = false;
            }
            Op::DeleteOldest => {
                if self.files.len() < 2 {
                    return;
                }
                let n = self.files.len() - 1;
                fs::remove_file(self.path(n)).unwrap();
                let f = self.files.pop().unwrap();
                let unread: Vec<u64> = f
                    .lines
                    .iter()
                    .copied()
                    .filter(|id| !self.out.contains(id))
                    .collect();
                if f.held && self.tailer.is_some() {
                    self.deleted_held.extend(unread);
                } else {
                    self.may_lose.extend(unread);
                }
            }
            Op::Look => self.look(),
            Op::LookAt => self.look_with(true),
            Op::Kill => {
                self.tailer = None;
                for f in &mut self.files {
                    f.held = false;
                }
                // Deleted files it held are gone with its handles.
                self.may_lose.extend(self.deleted_held.drain(..));
            }
        }
    }

    fn look(&mut self) {
        self.look_with(false)
    }

    /// A look with a full scan, or (`targeted`) a scan of only the logs
    /// directory, as an event there would ask for.
    fn look_with(&mut self, targeted: bool) {
        let logs = self.dir.path().join("runs/R/logs");
        if self.tailer.is_none() {
            let states = self.committed.values().cloned().collect();
            self.tailer = Some(Tailer::new(
                &self.config,
                &log_sources(self.dir.path()),
                states,
            ));
        }
        let tailer = self.tailer.as_mut().unwrap();
        if targeted {
            tailer.scan_paths(&[logs]);
        } else {
            tailer.scan();
        }
        let mut guard = 0;
        loop {
            let mut group = Vec::new();
            while group.len() <= self.groups % 4 {
                let Some(batch) = tailer.read() else { break };
                let forget = batch.forget;
                group.push(batch);
                if forget {
                    break;
                }
            }
            self.groups += 1;
            if group.is_empty() {
                break;
            }
            for batch in group {
                guard += 1;
                assert!(guard < 100_000, "tailer never ran dry");
                for line in &batch.records {
                    let text = batch.text(line);
                    assert!(!text.ends_with('\r'), "CR must be stripped: {text:?}");
                    let id: u64 = text[1..9].parse().unwrap();
                    assert_eq!(text, Harness::line_text(id, text.len()), "line intact");
                    self.out.push(id);
                }
                if batch.forget {
                    self.committed.remove(&batch.state.id);
                } else {
                    self.committed.insert(batch.state.id, batch.state.clone());
                }
                tailer.committed(&batch);
            }
        }
        for f in &mut self.files {
            f.held = true;
        }
        self.deleted_held.clear();
    }

    fn check(&mut self) {
        self.complete_partial();
        self.look();
        self.look();
        let mut seen = BTreeSet::new();
        for id in &self.out {
            assert!(
                seen.insert(*id),
                "line {id} came out twice; out = {:?}",
                self.out
            );
        }
        for id in &self.too_long {
            assert!(
                !seen.contains(id),
                "line {id} is too long and must be skipped"
            );
        }
        for id in 0..self.next_line {
            if !self.may_lose.contains(&id) && !self.too_long.contains(&id) {
                assert!(
                    seen.contains(&id),
                    "line {id} never came out; out = {:?}, may lose {:?}",
                    self.out,
                    self.may_lose
                );
            }
        }
        // Order: lines written to one file come out in the order written.
        let mut last: HashMap<usize, u64> = HashMap::new();
        for id in &self.out {
            let file = self.origin[id];
            if file == usize::MAX {
                continue; // copied lines: written once, may come from either file
            }
            if let Some(prev) = last.insert(file, *id) {
                assert!(prev < *id, "file {file}: line {id} came after {prev}");
            }
        }
    }
}

fn run_ops(ops: &[Op]) {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op);
    }
    h.check();
}

/// Rotations only, mostly copytruncate and restores, with writes and
/// looks in between: the races of copytruncate (the agent looking while
/// the copy is empty, partly written, complete, before and after the
/// truncate) and restores from backup, from a fixed seed so that every
/// run tries the same cases (PROPTEST_RNG_SEED picks another).
fn rotation_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (prop::collection::vec(prop_oneof![10 => 1usize..150, 1 => 150usize..600], 1..6), any::<bool>())
            .prop_map(|(lens, partial)| Op::Write { lens, partial, crlf: false }),
        4 => (0usize..3, prop_oneof![1usize..300, 300usize..5000], 0u8..32, any::<bool>())
            .prop_map(|(window, cut, looks, targeted)| Op::CopyTruncate { window, cut, looks, targeted }),
        2 => (0usize..3).prop_map(|n| Op::Restore { n }),
        1 => Just(Op::Rotate),
        2 => Just(Op::Look),
        1 => Just(Op::LookAt),
        1 => Just(Op::Kill),
    ]
}

fn fixed_seed() -> proptest::test_runner::RngSeed {
    match std::env::var("PROPTEST_RNG_SEED") {
        Ok(_) => ProptestConfig::default().rng_seed,
        Err(_) => proptest::test_runner::RngSeed::Fixed(0x6c6f_6772_6f74_6174),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        max_shrink_iters: 4000,
        rng_seed: fixed_seed(),
        // The fixed seed replays the same cases; no file of failures to keep.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn rotations_and_restores_lose_only_the_copytruncate_window_and_repeat_nothing(
        ops in prop::collection::vec(rotation_op(), 1..30)
    ) {
        run_ops(&ops);
    }
}

proptest! {
    // PROPTEST_CASES=20000 for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(300),
        max_shrink_iters: 4000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_line_once_and_in_order(ops in prop::collection::vec(op(), 1..40)) {
        run_ops(&ops);
    }
}

#[test]
fn rotation_while_stopped_is_finished_from_the_saved_offset() {
    let w = |lens: Vec<usize>| Op::Write {
        lens,
        partial: false,
        crlf: false,
    };
    run_ops(&[
        w(vec![20, 30]),
        Op::Look,
        w(vec![40]),
        Op::Kill,
        w(vec![50]),
        Op::Rotate,
        w(vec![60]),
        Op::Rotate,
        Op::Look,
    ]);
}

#[test]
fn copytruncate_reads_the_copy_from_where_the_original_was_left() {
    let w = |lens: Vec<usize>| Op::Write {
        lens,
        partial: true,
        crlf: false,
    };
    run_ops(&[
        w(vec![300, 30]),
        Op::Look,
        w(vec![40, 41]),
        Op::CopyTruncate {
            window: 1,
            cut: 0,
            looks: 0,
            targeted: false,
        },
        w(vec![50]),
        Op::Look,
        w(vec![51]),
        Op::CopyTruncate {
            window: 0,
            cut: 0,
            looks: 8,
            targeted: false,
        },
        Op::Kill,
        w(vec![52]),
    ]);
}

#[test]
fn fresh_start_reads_rotated_files_oldest_first() {
    let mut h = Harness::new();
    for _ in 0..3 {
        h.apply(&Op::Write {
            lens: vec![20, 20],
            partial: false,
            crlf: false,
        });
        h.apply(&Op::Rotate);
    }
    h.apply(&Op::Look);
    let sorted = {
        let mut v = h.out.clone();
        v.sort();
        v
    };
    assert_eq!(h.out, sorted, "oldest rotation first");
    assert_eq!(h.out.len(), 6);
    let _ = Path::new("");
}

/// A rotated file missed by one scan (its rename raced with the directory
/// listing) and found by the next is still read before the newer files of
/// its family: reading order is the family's age order, not the order in
/// which files were discovered.
#[test]
fn an_older_rotation_found_late_is_read_first() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("runs/R/logs");
    fs::create_dir_all(&logs).unwrap();
    let config = TailConfig {
        sources: None,
        follow_rotated: true,
        max_line_bytes: 4096,
        poll_interval_ms: 1000,
        rescan_interval_ms: 60_000,
        read_batch_bytes: 4096,
    };
    fs::write(logs.join("x.log"), b"newer\n").unwrap();
    let mut tailer = Tailer::new(&config, &log_sources(dir.path()), Vec::new());
    tailer.scan();
    fs::write(logs.join("x.log.1"), b"older\n").unwrap();
    tailer.scan();
    let mut texts = Vec::new();
    for _ in 0..4 {
        let Some(batch) = tailer.read() else { break };
        texts.extend(batch.records.iter().map(|l| batch.text(l).to_string()));
        tailer.committed(&batch);
    }
    assert_eq!(texts, ["older", "newer"]);
}

fn write(lens: Vec<usize>) -> Op {
    Op::Write {
        lens,
        partial: false,
        crlf: false,
    }
}

/// The agent looks at one stage of a copytruncate (the copy empty, partly
/// written, complete, after the window lines, after the truncate), with a
/// full scan and with a targeted one, having read x.log before: whatever
/// it sees, the copied lines come out once.
#[test]
fn copytruncate_seen_at_any_stage_repeats_nothing() {
    for stage in 0..5 {
        for targeted in [false, true] {
            for (window, cut) in [(0, 1), (2, 100), (1, 300), (0, 5000)] {
                run_ops(&[
                    write(vec![100, 120, 130]),
                    Op::Look,
                    write(vec![90]),
                    Op::CopyTruncate {
                        window,
                        cut,
                        looks: 1 << stage,
                        targeted,
                    },
                    write(vec![50]),
                    Op::Look,
                ]);
            }
        }
    }
}

/// Two rotations in a row, the agent looking while each copy is empty.
#[test]
fn copytruncate_with_the_copy_empty_twice_repeats_nothing() {
    let ct = Op::CopyTruncate {
        window: 1,
        cut: 10,
        looks: 1,
        targeted: false,
    };
    run_ops(&[
        write(vec![40, 40]),
        Op::Look,
        ct.clone(),
        write(vec![40, 40]),
        ct,
        Op::Kill,
        write(vec![40]),
    ]);
}

/// The same bytes under a new inode are not read again: the current file
/// and a rotated one, with the agent running, stopped, or having read
/// only part of the file.
#[test]
fn a_file_restored_from_a_backup_is_not_read_again() {
    for n in [0, 1] {
        for kill in [false, true] {
            let mut ops = vec![
                write(vec![300, 40]),
                Op::Rotate,
                write(vec![60, 70]),
                Op::Look,
                write(vec![80]),
            ];
            if kill {
                ops.push(Op::Kill);
            }
            ops.extend([Op::Restore { n }, write(vec![90]), Op::Look]);
            run_ops(&ops);
        }
    }
}

/// A genuinely new file at the same path, with a different beginning, is
/// read whole, also when it is as long as the old one.
#[test]
fn a_new_file_in_place_of_a_followed_one_is_read_whole() {
    let mut h = Harness::new();
    h.apply(&write(vec![50, 50]));
    h.apply(&Op::Look);
    let path = h.path(0);
    let other = h.dir.path().join("other");
    // Other lines, as long as the old ones.
    fs::write(
        &other,
        format!(
            "{}\n{}\n",
            Harness::line_text(900, 50),
            Harness::line_text(901, 50)
        ),
    )
    .unwrap();
    fs::rename(&other, &path).unwrap();
    h.look();
    assert_eq!(h.out, [0, 1, 900, 901]);
}

/// A restored file whose path another followed file (a copy deleted but
/// not yet forgotten) was last seen at: it is still known for what it is.
#[test]
fn a_restored_rotation_is_known_where_a_deleted_copy_was() {
    run_ops(&[
        write(vec![1]),
        Op::CopyTruncate {
            window: 0,
            cut: 1,
            looks: 17,
            targeted: false,
        },
        Op::DeleteOldest,
        write(vec![1]),
        Op::Rotate,
        Op::Look,
        Op::Restore { n: 1 },
        Op::LookAt,
    ]);
}

/// A stale checkpoint at x.log (its file renamed away and deleted while
/// the agent was stopped: it is never found again) must not hide the
/// checkpoint of the file that was restored at x.log, when the agent first
/// looks once the restored file has been copied too (copytruncate): the
/// restored file goes on from its checkpoint, and the copy is its copy.
/// The rename of x.log.1 makes the scan re-sort its files while the old
/// x.log is known to be deleted, so the path's lookup prefers the stale
/// checkpoint. (Found by the model test when the stale checkpoint's inode
/// happened not to be reused by a later file; pinned here with an inode no
/// regular file has.)
#[test]
fn a_stale_checkpoint_at_the_path_does_not_hide_a_restored_file() {
    use std::os::unix::fs::MetadataExt;
    let mut h = Harness::new();
    let dev = fs::metadata(h.path(0)).unwrap().dev();
    h.committed.insert(
        1000,
        FileState {
            id: 1000,
            path: h.path(0).display().to_string(),
            dev,
            // ext4's bad-blocks inode: never a file in a directory.
            ino: 1,
            ..FileState::default()
        },
    );
    for op in [
        write(vec![30]),
        Op::Rotate,
        Op::Look,
        write(vec![50, 60]),
        Op::Restore { n: 0 },
        Op::CopyTruncate {
            window: 0,
            cut: 10,
            looks: 4,
            targeted: true,
        },
        write(vec![80]),
    ] {
        h.apply(&op);
    }
    h.check();
}

/// A fresh start while logrotate's copy holds one byte: the older
/// rotation begins with that byte too (every line of this log does), and
/// must not be taken for the copy's copy and left unread; it is deleted
/// before the next look.
#[test]
fn an_older_rotation_is_read_while_a_copy_holds_one_byte() {
    let w = || Op::Write {
        lens: vec![1],
        partial: false,
        crlf: false,
    };
    run_ops(&[
        w(),
        Op::Rotate,
        w(),
        Op::CopyTruncate {
            window: 0,
            cut: 1,
            looks: 2,
            targeted: false,
        },
        Op::DeleteOldest,
        w(),
    ]);
}
