//! Init mode's signal thread: forwards, reaps, and bounds the drain.
//!
//! Every signal the agent takes ([`crate::signals::taken`], the set tini
//! forwards: all but SIGKILL and SIGSTOP, which cannot be caught, the
//! synchronous faults and SIGTTIN/SIGTTOU) is blocked from the start of
//! `main` and taken here with `sigtimedwait`. SIGCHLD means "reap"; every
//! other one is forwarded to CMD while it runs: SIGTERM, SIGINT, SIGHUP,
//! SIGQUIT, SIGUSR1/2, SIGALRM, SIGPWR, SIGXCPU, SIGXFSZ, SIGVTALRM,
//! SIGPROF, SIGIO, SIGURG, SIGSTKFLT, SIGPIPE, SIGWINCH, the real-time
//! signals, and job control as tini does it (SIGTSTP stops CMD, not the
//! agent; SIGCONT continues both).
//!
//! Why one dedicated thread (see also [`crate::signals`]):
//!
//! - As PID 1 the kernel discards signals whose disposition is the
//!   default; a blocked signal is never discarded, so no dummy handlers
//!   are needed.
//! - Forwarding and reaping are plain syscalls made synchronously on this
//!   thread: they keep working even if the async side is stuck, and the
//!   reaper is the only caller of `waitpid`, so nothing races with it.
//! - It sees CMD's exit the moment it happens, so the hard bound of the
//!   drain ([`crate::signals::watchdog`]) is armed from here.
//!
//! This is the design of tini (sigtimedwait in its main loop).

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::child::Spawned;
use super::console::Resizer;
use super::reap::{self, ChildExit};
use super::SignalTarget;
pub use crate::signals::SigName;
use crate::signals::{self as agent_signals, watchdog, SigSet, Watchdog};

/// How often the thread wakes without a signal to reap anyway: a cheap
/// guard against any SIGCHLD that was coalesced or consumed elsewhere.
const REAP_EVERY: Duration = Duration::from_secs(1);

/// What the supervisor thread tells the async side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A signal reached the agent (already forwarded if CMD was still
    /// running).
    Signal(libc::c_int),
    /// CMD terminated (sent exactly once), and when it was reaped: the
    /// drain's deadline counts from there.
    ChildExited(ChildExit, Instant),
}

/// The signals that end the drain when they come twice (see [`super`]).
pub fn is_stop(sig: libc::c_int) -> bool {
    sig == libc::SIGTERM || sig == libc::SIGINT
}

/// Proof that the init signals are blocked in the calling thread (and so
/// in every thread created after it); the set to wait on.
#[derive(Clone, Copy)]
pub struct Blocked {
    set: SigSet,
}

impl Blocked {
    /// Blocks every signal the agent takes ([`crate::signals::taken`]: all
    /// but the synchronous faults, as tini), which `main` has done already,
    /// and ignores SIGTTIN and SIGTTOU (so that the agent, outside the
    /// terminal's foreground group once CMD has it, is never stopped for
    /// touching the terminal).
    ///
    /// Must run before any thread is started: threads inherit the mask of
    /// their creator, and a thread without the block would have the
    /// signals delivered to it, with their default action.
    pub fn install() -> io::Result<Blocked> {
        let set = agent_signals::taken();
        // SAFETY: the set is initialised; the old mask is not wanted; the
        // dispositions set are plain constants.
        unsafe {
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, set.raw(), std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            libc::signal(libc::SIGTTIN, libc::SIG_IGN);
            libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        }
        Ok(Blocked { set })
    }
}

/// The hard bound of init mode's drain, for the supervisor to arm.
#[derive(Clone)]
pub struct Bound {
    pub dog: Watchdog,
    /// `init.drain_deadline_secs`, counted from CMD's exit.
    pub drain_deadline: Duration,
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
    bound: Bound,
    events: UnboundedSender<Event>,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("init-supervisor".into())
        .spawn(move || supervise(blocked, child, target, resizer, bound, events))
}

fn supervise(
    blocked: Blocked,
    child: Spawned,
    target: SignalTarget,
    resizer: Option<Resizer>,
    bound: Bound,
    events: UnboundedSender<Event>,
) {
    let mut child_running = true;
    // CMD's exit code once it has exited, and the stop signals so far.
    let mut exit_code = None;
    let mut stops = 0u32;
    loop {
        let sig = agent_signals::take(&blocked.set, REAP_EVERY);
        if let Some(sig) = sig.filter(|&s| s != libc::SIGCHLD) {
            if is_stop(sig) {
                stops += 1;
                // The async side's rule (see `second_stop`): a stop signal
                // during the drain that is not the agent's first ends it.
                // Should closing then hang, this ends the process.
                if let (Some(code), false, true) = (exit_code, child_running, stops >= 2) {
                    bound.dog.arm(
                        Instant::now() + agent_signals::daemon::ABORT_WAIT,
                        code,
                        format!(
                            "closing after a second stop signal ({}) did not finish",
                            SigName(sig)
                        ),
                    );
                }
            }
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
        }
        // Reap on every wake-up, not only on SIGCHLD: cheap, and it makes
        // a lost SIGCHLD cost at most REAP_EVERY of zombie lifetime.
        for (pid, exit) in reap::reap_terminated() {
            if pid == child.pid && child_running {
                child_running = false;
                let now = Instant::now();
                let code = u8::try_from(exit.code()).unwrap_or(255);
                exit_code = Some(code);
                bound.dog.arm(
                    now + bound.drain_deadline + watchdog::MARGIN,
                    code,
                    format!(
                        "the drain after CMD's exit has taken longer than its bound (init.drain_deadline_secs = {} s, then {} s to close)",
                        bound.drain_deadline.as_secs(),
                        watchdog::MARGIN.as_secs()
                    ),
                );
                tracing::info!(pid, "CMD {exit}");
                child.give_back_terminal();
                if target == SignalTarget::Group {
                    terminate_rest_of_group(child.pid);
                }
                let _ = events.send(Event::ChildExited(exit, now));
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
