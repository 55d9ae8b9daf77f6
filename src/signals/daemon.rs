//! What each signal means to the daemon (`run`, and `run --once`).
//!
//! | signal | effect |
//! |---|---|
//! | SIGTERM, SIGINT, SIGQUIT, SIGPWR, SIGXCPU | stop: read no more, deliver until the stop deadline, commit, exit |
//! | the same, again during the stop | stop at once: exit 128+N, rows stay in the journal |
//! | SIGHUP | reopen the agent's log files (after an outside logrotate) |
//! | SIGUSR1 | log a status line and refresh `status.json` |
//! | any other it takes (SIGUSR2, SIGALRM, SIGIO, real-time, ...) | logged and ignored |
//!
//! SIGQUIT stops like SIGTERM rather than dumping core: some images use it
//! as their stop signal, and a core of the agent helps nobody. SIGPWR is
//! how LXC asks a container's init to shut down; SIGXCPU comes before the
//! kernel's SIGKILL at the hard CPU limit. Job control (SIGTSTP, SIGCONT)
//! and the signals ignored by default are left to their usual effect.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::watchdog::{self, Watchdog};
use super::{SigName, SigSet};

/// Signals the daemon does not take: job control and those whose default
/// is to do nothing; SIGPIPE is ignored (a closed stderr must not stop
/// shipping).
pub const LEFT_ALONE: [libc::c_int; 6] = [
    libc::SIGTSTP,
    libc::SIGCONT,
    libc::SIGWINCH,
    libc::SIGURG,
    libc::SIGCHLD,
    libc::SIGPIPE,
];

/// The signals that stop the daemon.
pub const STOPS: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGPWR,
    libc::SIGXCPU,
];

/// After a second stop signal: how long closing (stopping the sinks, the
/// journal's flush) may take before the process exits anyway.
pub const ABORT_WAIT: Duration = Duration::from_secs(2);

/// What a signal other than a stop asks of the running daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGHUP.
    ReopenLogs,
    /// SIGUSR1.
    Status,
    /// Taken so that it cannot kill the agent; nothing to do.
    Ignored(libc::c_int),
}

/// How the daemon's first stop ends when the drain overruns its bound.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The drain's deadline, counted from the stop signal.
    pub deadline: Duration,
    /// The exit code after the first stop signal: 0 for the daemon (a
    /// normal stop), 128+N for `--once` (interrupted).
    pub code_after_stop: fn(libc::c_int) -> u8,
}

/// The stop signals received so far.
#[derive(Debug, Clone, Copy, Default)]
struct StopState {
    count: u32,
    last: libc::c_int,
    first_at: Option<Instant>,
}

/// The async side's view of the stop signals: wait for the first (stop),
/// or for the next (stop at once).
#[derive(Clone)]
pub struct Stops(watch::Receiver<StopState>);

impl Stops {
    /// Resolves at the `n`-th stop signal (counting from 1) with its
    /// number and the time the first one came (the drain's deadline
    /// counts from there); never if the signal thread is gone.
    pub async fn nth(&mut self, n: u32) -> (libc::c_int, Instant) {
        match self.0.wait_for(|s| s.count >= n).await {
            Ok(s) => (s.last, s.first_at.unwrap_or_else(Instant::now)),
            Err(_) => std::future::pending().await,
        }
    }
}

/// The daemon's signals, as the async side receives them.
pub struct Signals {
    pub stops: Stops,
    pub requests: mpsc::UnboundedReceiver<Request>,
}

/// Starts the thread that takes the daemon's signals (every signal of
/// [`super::taken`] but [`LEFT_ALONE`], which the calling thread must not
/// block any more: see [`super::Startup::unblock`]). Stop signals arm
/// `dog` at once: the first with `policy`, a second with [`ABORT_WAIT`].
pub fn spawn(dog: Watchdog, policy: Policy) -> io::Result<Signals> {
    let set = LEFT_ALONE
        .iter()
        .fold(super::taken(), |s, &sig| s.without(sig));
    let (stop_tx, stop_rx) = watch::channel(StopState::default());
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || take_forever(set, stop_tx, req_tx, dog, policy))?;
    Ok(Signals {
        stops: Stops(stop_rx),
        requests: req_rx,
    })
}

fn take_forever(
    set: SigSet,
    stops: watch::Sender<StopState>,
    requests: mpsc::UnboundedSender<Request>,
    dog: Watchdog,
    policy: Policy,
) {
    loop {
        let Some(sig) = super::take(&set, Duration::from_secs(3600)) else {
            continue;
        };
        let now = Instant::now();
        if STOPS.contains(&sig) {
            let mut count = 0;
            stops.send_modify(|s| {
                s.count += 1;
                s.last = sig;
                s.first_at.get_or_insert(now);
                count = s.count;
            });
            if count == 1 {
                dog.arm(
                    now + policy.deadline + watchdog::MARGIN,
                    (policy.code_after_stop)(sig),
                    format!(
                        "the stop on {} has taken longer than its bound ({} s to deliver, {} s to close)",
                        SigName(sig),
                        policy.deadline.as_secs(),
                        watchdog::MARGIN.as_secs()
                    ),
                );
            } else {
                dog.arm(
                    now + ABORT_WAIT,
                    code_of(sig),
                    format!(
                        "closing after a second stop signal ({}) did not finish",
                        SigName(sig)
                    ),
                );
            }
            continue;
        }
        let request = match sig {
            libc::SIGHUP => Request::ReopenLogs,
            libc::SIGUSR1 => Request::Status,
            other => Request::Ignored(other),
        };
        let _ = requests.send(request);
    }
}

/// The shell's convention for "ended by signal N".
pub fn code_of(sig: libc::c_int) -> u8 {
    u8::try_from(128 + sig).unwrap_or(255)
}
