//! CMD's stdout and stderr in init mode: passed through to the agent's own,
//! byte for byte and at once, and copied to files the follower ships.
//!
//! Decisions, and why:
//!
//! - **Pipes, or a pty when the agent's stdout is a terminal.** Through a
//!   pipe CMD would see no terminal: Python would buffer its stdout in
//!   blocks and libraries would drop colours and progress bars. So when
//!   the agent's stdout is a terminal, CMD gets a pseudo-terminal (same
//!   modes and window size) as its controlling terminal, in a session of
//!   its own whose only process group is CMD's: signal forwarding to "the
//!   group" is unchanged, and the pty's Ctrl-C reaches that group. CMD's
//!   stderr joins the pty when the agent's stderr is a terminal too (else
//!   it keeps its own pipe, so `2>file` still separates it), and so does
//!   its stdin when the agent's stdin is a terminal.
//! - **Raw mode** on the agent's terminal while it copies keys to CMD's
//!   pty (only when stdin is a terminal whose foreground is the agent):
//!   see [`pty::enter_raw`] for what changes and how it is undone.
//! - **SIGWINCH** copies the agent's window size to the pty; the kernel
//!   then signals CMD's terminal foreground group itself (see
//!   [`pty::Resizer`]).
//! - **The copy** (see [`tee`]) is written after the pass-through and
//!   never blocks or breaks it; it is closed when CMD's output ends, before
//!   the final read of the logs, so that read sees all of it.
//! - **`init.console = ""`** turns all of this off: CMD inherits the
//!   agent's streams, as before.

mod pty;
mod pump;
mod tee;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

pub use pty::{restore_terminal, Resizer};
pub use tee::{valid_run_id, Stream, TeeSettings, HOLD_BYTES};

use pump::Dest;
use tee::Tee;

/// The environment variable that names the run (MOSAIC's trainer sets it
/// for the processes it starts); wins over `init.run_id`.
pub const RUN_ID_ENV: &str = "MOSAIC_RUN_ID";

/// How long, after CMD exits, its output may take to reach its end (a
/// process CMD left behind may still hold the pipe) before the copies are
/// closed anyway and the logs read.
pub const EOF_WAIT: Duration = Duration::from_secs(2);

/// CMD's standard streams as [`super::child::spawn`] sets them up.
#[derive(Default)]
pub struct ChildStdio {
    pub stdin: Option<Stdio>,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
    /// CMD's stdout is a pty slave that must become its controlling
    /// terminal (in a new session) instead of a new process group.
    pub own_terminal: bool,
}

/// The copy settings for this run from `[init]`, the environment and the
/// store path; `None` when `init.console` is empty (copy and pass-through
/// off).
pub fn settings(init: &super::InitConfig, store: &Path) -> Option<TeeSettings> {
    if init.console.is_empty() {
        return None;
    }
    let env = std::env::var(RUN_ID_ENV).ok().filter(|v| !v.is_empty());
    let run_id = match env {
        Some(id) if valid_run_id(&id) => Some(id),
        Some(id) => {
            tracing::warn!(value = %id, "{RUN_ID_ENV} cannot name a directory (1-128 of A-Z a-z 0-9 . _ -); ignored for the console copy");
            init.run_id.clone()
        }
        None => init.run_id.clone(),
    };
    Some(TeeSettings {
        template: init.console.clone(),
        run_id,
        fallback_root: store.join("console"),
        wait: Duration::from_secs(init.run_id_wait_secs),
    })
}

/// The glob that follows the fallback copies of a store.
pub fn fallback_glob(store: &Path) -> String {
    let root = glob::Pattern::escape(&store.join("console").to_string_lossy());
    format!("{root}/*/*.log")
}

/// CMD's streams opened, CMD not yet started: the pass-through threads
/// already run (they end at once if CMD never starts).
pub struct Prepared {
    tee: Arc<Tee>,
    done: mpsc::Receiver<Stream>,
    pumps: usize,
    /// The pty master, kept for the stdin copier and the resizer.
    master: Option<OwnedFd>,
    copy_stdin: bool,
}

/// Opens CMD's pipes or pty and starts passing them through. On failure
/// (no pty, no pipes, no threads) CMD inherits the agent's streams, as
/// without a console.
pub fn prepare(settings: TeeSettings) -> io::Result<(ChildStdio, Prepared)> {
    let pty_out = pty::is_terminal(libc::STDOUT_FILENO);
    if pty_out {
        match prepare_pty(settings.clone()) {
            Ok(p) => return Ok(p),
            Err(e) => {
                tracing::warn!(error = %e, "cannot give CMD a pseudo-terminal; its output goes through pipes")
            }
        }
    }
    prepare_pipes(settings)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded; both are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn prepare_pipes(settings: TeeSettings) -> io::Result<(ChildStdio, Prepared)> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let tee = Arc::new(Tee::new(
        settings,
        &[Stream::Stdout, Stream::Stderr],
        Some(Stream::Stdout),
    ));
    let (tx, done) = mpsc::channel();
    pump::spawn(out_r, Dest::Stdout, Stream::Stdout, tee.clone(), tx.clone())?;
    pump::spawn(err_r, Dest::Stderr, Stream::Stderr, tee.clone(), tx)?;
    let child = ChildStdio {
        stdin: None,
        stdout: Some(Stdio::from(out_w)),
        stderr: Some(Stdio::from(err_w)),
        own_terminal: false,
    };
    Ok((
        child,
        Prepared {
            tee,
            done,
            pumps: 2,
            master: None,
            copy_stdin: false,
        },
    ))
}

fn prepare_pty(settings: TeeSettings) -> io::Result<(ChildStdio, Prepared)> {
    let pty = pty::open(libc::STDOUT_FILENO)?;
    let err_pipe = if pty::is_terminal(libc::STDERR_FILENO) {
        None
    } else {
        Some(pipe()?)
    };
    let stdin_tty = pty::is_terminal(libc::STDIN_FILENO);
    let streams: &[Stream] = if err_pipe.is_some() {
        &[Stream::Console, Stream::Stderr]
    } else {
        &[Stream::Console]
    };
    let tee = Arc::new(Tee::new(settings, streams, Some(Stream::Console)));
    let (tx, done) = mpsc::channel();
    let mut pumps = 1;
    let reader = pty.master.try_clone()?;
    let keep = pty.master;
    let (stderr, err_r) = match err_pipe {
        Some((r, w)) => (Stdio::from(w), Some(r)),
        None => (Stdio::from(pty.slave.try_clone()?), None),
    };
    let stdin = if stdin_tty {
        Some(Stdio::from(pty.slave.try_clone()?))
    } else {
        None
    };
    pump::spawn(
        reader,
        Dest::Stdout,
        Stream::Console,
        tee.clone(),
        tx.clone(),
    )?;
    if let Some(r) = err_r {
        pump::spawn(r, Dest::Stderr, Stream::Stderr, tee.clone(), tx)?;
        pumps += 1;
    }
    let child = ChildStdio {
        stdin,
        stdout: Some(Stdio::from(pty.slave)),
        stderr: Some(stderr),
        own_terminal: true,
    };
    Ok((
        child,
        Prepared {
            tee,
            done,
            pumps,
            master: Some(keep),
            copy_stdin: stdin_tty && pty::in_foreground(libc::STDIN_FILENO),
        },
    ))
}

/// CMD's streams while it runs.
pub struct Console {
    tee: Arc<Tee>,
    done: mpsc::Receiver<Stream>,
    pumps: usize,
    stop_stdin: Arc<AtomicBool>,
    _master: Option<OwnedFd>,
}

impl Prepared {
    /// CMD has started: starts copying keys to its pty (raw mode) and the
    /// timer that stops waiting for a run id. Returns the resizer for
    /// SIGWINCH when CMD has a pty.
    pub fn start(self) -> (Console, Option<Resizer>) {
        let stop_stdin = Arc::new(AtomicBool::new(false));
        let mut resizer = None;
        if let Some(master) = &self.master {
            resizer = master
                .try_clone()
                .ok()
                .map(|m| Resizer::new(m, libc::STDOUT_FILENO));
            if self.copy_stdin {
                self.start_stdin(master, &stop_stdin);
            }
        }
        if self.tee.waiting() {
            let (tee, wait) = (self.tee.clone(), self.tee.wait());
            let timer = std::thread::Builder::new()
                .name("init-run-id-wait".into())
                .spawn(move || {
                    std::thread::sleep(wait);
                    tee.tick();
                });
            if let Err(e) = timer {
                tracing::debug!(error = %e, "no run-id timer; the copy waits for 1 MiB or CMD's exit");
            }
        }
        let console = Console {
            tee: self.tee,
            done: self.done,
            pumps: self.pumps,
            stop_stdin,
            _master: self.master,
        };
        (console, resizer)
    }

    fn start_stdin(&self, master: &OwnedFd, stop: &Arc<AtomicBool>) {
        let master = match master.try_clone() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pass the terminal's input to CMD");
                return;
            }
        };
        if let Err(e) = pty::enter_raw(libc::STDIN_FILENO) {
            tracing::warn!(error = %e, "cannot put the terminal in raw mode; CMD gets no input from it");
            return;
        }
        if let Err(e) = pump::spawn_stdin(master, stop.clone()) {
            restore_terminal();
            tracing::warn!(error = %e, "cannot pass the terminal's input to CMD");
        }
    }
}

impl Console {
    /// CMD has exited: gives the terminal its modes back, waits (up to
    /// `wait`) for CMD's output to reach its end, and closes the copies.
    /// Returns the time spent. The pass-through threads go on with
    /// whatever a leftover process still writes until the agent exits.
    pub fn finish(self, wait: Duration) -> Duration {
        let started = Instant::now();
        self.stop_stdin.store(true, Ordering::Relaxed);
        restore_terminal();
        let until = started + wait;
        let mut ended = 0;
        while ended < self.pumps {
            let left = until.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok(_) => ended += 1,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    tracing::warn!(
                        waited_secs = wait.as_secs_f64(),
                        "CMD's output is still open (a process it left holds it); closing the copies now"
                    );
                    break;
                }
            }
        }
        self.tee.close();
        tracing::debug!(files = ?self.tee.paths(), "the copies of CMD's output are closed");
        started.elapsed()
    }
}
