//! Signals: blocked everywhere, taken one at a time by one thread.
//!
//! Why a dedicated thread with `sigtimedwait` rather than async handlers
//! (`tokio::signal`):
//!
//! - The signals are blocked in the main thread before any other thread
//!   exists, so every thread inherits the mask and a signal that arrives
//!   at any moment (before the runtime is up, while the pipeline starts, or
//!   while the runtime is busy draining) stays pending until this thread
//!   takes it. Nothing is lost and no default action can kill the agent
//!   (and orphan CMD) in a window before handlers are installed.
//! - As PID 1 the kernel discards signals whose disposition is the
//!   default; a blocked signal is never discarded, so no dummy handlers
//!   are needed.
//! - Forwarding and reaping are plain syscalls made synchronously on this
//!   thread: they keep working even if the async side is stuck, and the
//!   reaper is the only caller of `waitpid`, so nothing races with it.
//!
//! This is the design of tini (sigtimedwait in its main loop).

use std::io;
use std::mem::MaybeUninit;
use std::thread;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::child::Spawned;
use super::console::Resizer;
use super::reap::{self, ChildExit};
use super::SignalTarget;

/// The signals forwarded to CMD, as the issue lists them. SIGKILL and
/// SIGSTOP cannot be caught; SIGCHLD is ours; job-control signals
/// (SIGTSTP, SIGCONT, SIGTTIN, SIGTTOU) come from the terminal driver to
/// CMD's group directly when it is in the foreground.
pub const FORWARDED: [libc::c_int; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// A signal number that prints as its name in the agent's logs.
#[derive(Debug, Clone, Copy)]
pub struct SigName(pub libc::c_int);

impl std::fmt::Display for SigName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            libc::SIGTERM => "SIGTERM",
            libc::SIGINT => "SIGINT",
            libc::SIGHUP => "SIGHUP",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGWINCH => "SIGWINCH",
            libc::SIGKILL => "SIGKILL",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGABRT => "SIGABRT",
            n => return write!(f, "signal {n}"),
        };
        f.write_str(name)
    }
}

/// How often the thread wakes without a signal to reap anyway: a cheap
/// guard against any SIGCHLD that was coalesced or consumed elsewhere.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// What the supervisor thread tells the async side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A forwarded-kind signal reached the agent (already forwarded if
    /// CMD was still running).
    Signal(libc::c_int),
    /// CMD terminated (sent exactly once).
    ChildExited(ChildExit),
}

/// Proof that the init signals are blocked in the calling thread (and so
/// in every thread created after it); the set to wait on.
#[derive(Clone, Copy)]
pub struct Blocked {
    set: libc::sigset_t,
}

impl Blocked {
    /// Blocks [`FORWARDED`] and SIGCHLD, and ignores SIGTTIN and SIGTTOU
    /// (so that the agent, outside the terminal's foreground group once
    /// CMD has it, is never stopped for touching the terminal).
    ///
    /// Must run before any thread is started: threads inherit the mask of
    /// their creator, and a thread without the block would have the
    /// signals delivered to it, with their default action.
    pub fn install() -> io::Result<Blocked> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: the set is initialised by sigemptyset before any other
        // use, and only valid signal numbers are added.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            for sig in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
                libc::sigaddset(set.as_mut_ptr(), *sig);
            }
            let set = set.assume_init();
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            libc::signal(libc::SIGTTIN, libc::SIG_IGN);
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
            Ok(Blocked { set })
        }
    }
}

/// Starts the thread that forwards signals to CMD and reaps every child.
///
/// When CMD terminates, the thread sends [`Event::ChildExited`] once, gives
/// the terminal back and, with `signal_target = "group"`, sends SIGTERM to
/// what is left of CMD's process group (see [`super`] for why). After that
/// it keeps reaping orphans and reporting signals until the process exits.
///
/// With a `resizer` (CMD has a pty), SIGWINCH copies the agent's window
/// size to CMD's terminal, whose driver signals CMD's foreground group
/// when the size changed; only an unchanged size (a SIGWINCH sent by
/// hand) is forwarded as before.
pub fn spawn_supervisor(
    blocked: Blocked,
    child: Spawned,
    target: SignalTarget,
    resizer: Option<Resizer>,
    events: UnboundedSender<Event>,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("init-supervisor".into())
        .spawn(move || supervise(blocked, child, target, resizer, events))
}

fn supervise(
    blocked: Blocked,
    child: Spawned,
    target: SignalTarget,
    resizer: Option<Resizer>,
    events: UnboundedSender<Event>,
) {
    let mut child_running = true;
    let timeout = libc::timespec {
        tv_sec: REAP_EVERY.as_secs() as libc::time_t,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: `blocked.set` is an initialised set; a null siginfo is
        // allowed; `timeout` is a valid timespec.
        let sig = unsafe { libc::sigtimedwait(&blocked.set, std::ptr::null_mut(), &timeout) };
        if sig > 0 && sig != libc::SIGCHLD {
            let resized = sig == libc::SIGWINCH
                && child_running
                && resizer.as_ref().is_some_and(Resizer::sync);
            if resized {
                tracing::debug!("window size copied to CMD's terminal");
            } else if child_running {
                forward(sig, child.pid, target);
            } else {
                tracing::debug!(
                    signal = %SigName(sig),
                    "signal received after CMD exited; not forwarded"
                );
            }
            let _ = events.send(Event::Signal(sig));
        } else if sig < 0 {
            let err = io::Error::last_os_error();
            if !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                tracing::error!(error = %err, "sigtimedwait failed");
                thread::sleep(Duration::from_millis(100));
            }
        }
        // Reap on every wake-up, not only on SIGCHLD: cheap, and it makes
        // a lost SIGCHLD cost at most REAP_EVERY of zombie lifetime.
        for (pid, exit) in reap::reap_terminated() {
            if pid == child.pid && child_running {
                child_running = false;
                tracing::info!(pid, "CMD {exit}");
                child.give_back_terminal();
                if target == SignalTarget::Group {
                    terminate_rest_of_group(child.pid);
                }
                let _ = events.send(Event::ChildExited(exit));
            } else {
                tracing::debug!(pid, "reaped orphaned process that {exit}");
            }
        }
    }
}

/// Sends `sig` to CMD's group (or CMD alone).
fn forward(sig: libc::c_int, pid: libc::pid_t, target: SignalTarget) {
    let err = match target {
        SignalTarget::Group => match kill(-pid, sig) {
            // No such group: CMD moved itself to another group or session
            // (setsid, setpgid). It is still running, so it still gets it.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => kill(pid, sig).err(),
            other => other.err(),
        },
        SignalTarget::Child => kill(pid, sig).err(),
    };
    match err {
        None => {
            tracing::info!(signal = %SigName(sig), pid, to = ?target, "forwarded signal to CMD")
        }
        // CMD is exiting and not yet reaped: nothing to deliver to.
        Some(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            tracing::debug!(signal = %SigName(sig), pid, "CMD is gone; signal not forwarded")
        }
        Some(e) => {
            tracing::error!(signal = %SigName(sig), pid, error = %e, "cannot forward signal to CMD")
        }
    }
}

/// After CMD exits: SIGTERM to the processes left in its group (background
/// jobs, workers it did not stop). Usually there are none (ESRCH).
fn terminate_rest_of_group(pgid: libc::pid_t) {
    match kill(-pgid, libc::SIGTERM) {
        Ok(()) => tracing::info!(
            pgid,
            "CMD exited leaving processes in its group; sent them SIGTERM"
        ),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "cannot signal the rest of CMD's group"),
    }
}

fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory arguments.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
