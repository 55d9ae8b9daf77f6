//! The agent's own signals: blocked from the first instruction of `main`,
//! taken one at a time by a thread of their own.
//!
//! Why blocking (and `sigtimedwait`) rather than handlers:
//!
//! - `main` blocks [`taken`] before it parses its arguments, before any
//!   thread, runtime, log file or journal exists. Threads inherit the
//!   mask, so a signal that arrives at any moment stays pending until the
//!   thread meant for it takes it: none is lost and none can kill the
//!   agent with its default action in a window before handlers exist (a
//!   SIGTERM in the first milliseconds of a daemon drains, a SIGALRM for
//!   a container's init is forwarded).
//! - A blocked signal is never discarded, not even one whose disposition
//!   is "ignore" or, for PID 1, the default: no dummy handlers are needed.
//! - What the signal means is decided in plain code on that thread
//!   (forward it, stop, reopen the logs), which keeps working when the
//!   async side is busy; the hard stop of a drain ([`watchdog`]) is armed
//!   from there too.
//!
//! The set is tini's: every signal but the synchronous faults (SIGFPE,
//! SIGILL, SIGSEGV, SIGBUS, SIGABRT, SIGTRAP, SIGSYS: sent by the kernel to
//! the faulting thread, where blocking them would hide a crash) and
//! SIGTTIN/SIGTTOU, which init mode ignores instead. SIGKILL and SIGSTOP
//! cannot be blocked. Commands other than `run` give the mask back
//! ([`Startup::release`]) and behave as any program does.

pub mod daemon;
pub mod watchdog;

pub use watchdog::Watchdog;

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

/// Signals never blocked: faults the kernel sends to the thread that
/// caused them, and the two terminal signals init mode ignores.
const NOT_TAKEN: [libc::c_int; 9] = [
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// A signal set, built and tested without `unsafe` at the call sites.
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl SigSet {
    pub fn empty() -> SigSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            SigSet(set.assume_init())
        }
    }

    /// Every signal (glibc leaves out the two it uses internally).
    pub fn full() -> SigSet {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises the set.
        unsafe {
            libc::sigfillset(set.as_mut_ptr());
            SigSet(set.assume_init())
        }
    }

    pub fn with(mut self, sig: libc::c_int) -> SigSet {
        // SAFETY: the set is initialised; an invalid number is refused
        // with EINVAL and changes nothing.
        unsafe { libc::sigaddset(&mut self.0, sig) };
        self
    }

    pub fn without(mut self, sig: libc::c_int) -> SigSet {
        // SAFETY: as in `with`.
        unsafe { libc::sigdelset(&mut self.0, sig) };
        self
    }

    pub fn contains(&self, sig: libc::c_int) -> bool {
        // SAFETY: the set is initialised.
        unsafe { libc::sigismember(&self.0, sig) == 1 }
    }

    pub fn raw(&self) -> &libc::sigset_t {
        &self.0
    }
}

/// The set the agent takes: see the module documentation.
pub fn taken() -> SigSet {
    NOT_TAKEN
        .iter()
        .fold(SigSet::full(), |s, &sig| s.without(sig))
}

/// The calling thread's signal mask as it was before `main` blocked
/// [`taken`]; proof that the block is in place.
pub struct Startup {
    before: SigSet,
}

impl Startup {
    /// Blocks [`taken`] in the calling thread. Call it first in `main`,
    /// while no other thread exists.
    pub fn block() -> io::Result<Startup> {
        let mut before = SigSet::empty();
        // SAFETY: both sets are initialised.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, taken().raw(), &mut before.0) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(Startup { before })
    }

    /// Back to the mask the process started with: for the commands that
    /// are not the agent (`status`, `sync`, ...), which Ctrl-C and SIGPIPE
    /// end as usual. A signal that came meanwhile is delivered now.
    pub fn release(self) {
        set_mask(libc::SIG_SETMASK, &self.before);
    }

    /// Unblocks `sigs` again (the daemon leaves job control alone).
    pub fn unblock(&self, sigs: &[libc::c_int]) {
        let set = sigs.iter().fold(SigSet::empty(), |s, &sig| s.with(sig));
        set_mask(libc::SIG_UNBLOCK, &set);
    }
}

fn set_mask(how: libc::c_int, set: &SigSet) {
    // SAFETY: the set is initialised; the old mask is not wanted.
    unsafe { libc::pthread_sigmask(how, set.raw(), std::ptr::null_mut()) };
}

/// Takes one pending signal of `set` (which must be blocked), waiting at
/// most `timeout`. `None` when none came (or the wait was interrupted).
pub fn take(set: &SigSet, timeout: Duration) -> Option<libc::c_int> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and the timespec are valid; a null siginfo is allowed.
    let sig = unsafe { libc::sigtimedwait(set.raw(), std::ptr::null_mut(), &ts) };
    if sig > 0 {
        return Some(sig);
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
        // EINVAL only, for a bad timeout: not worth more than a pause.
        tracing::error!(error = %err, "sigtimedwait failed");
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A signal number that prints as its name (`SIGTERM`, `SIGRTMIN+3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SigName(pub libc::c_int);

impl std::fmt::Display for SigName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0;
        let name = match n {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGQUIT => "SIGQUIT",
            libc::SIGILL => "SIGILL",
            libc::SIGTRAP => "SIGTRAP",
            libc::SIGABRT => "SIGABRT",
            libc::SIGBUS => "SIGBUS",
            libc::SIGFPE => "SIGFPE",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGSEGV => "SIGSEGV",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGPIPE => "SIGPIPE",
            libc::SIGALRM => "SIGALRM",
            libc::SIGTERM => "SIGTERM",
            libc::SIGSTKFLT => "SIGSTKFLT",
            libc::SIGCHLD => "SIGCHLD",
            libc::SIGCONT => "SIGCONT",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGTSTP => "SIGTSTP",
            libc::SIGTTIN => "SIGTTIN",
            libc::SIGTTOU => "SIGTTOU",
            libc::SIGURG => "SIGURG",
            libc::SIGXCPU => "SIGXCPU",
            libc::SIGXFSZ => "SIGXFSZ",
            libc::SIGVTALRM => "SIGVTALRM",
            libc::SIGPROF => "SIGPROF",
            libc::SIGWINCH => "SIGWINCH",
            libc::SIGIO => "SIGIO",
            libc::SIGPWR => "SIGPWR",
            libc::SIGSYS => "SIGSYS",
            n if n >= libc::SIGRTMIN() && n <= libc::SIGRTMAX() => {
                return match n - libc::SIGRTMIN() {
                    0 => f.write_str("SIGRTMIN"),
                    k => write!(f, "SIGRTMIN+{k}"),
                };
            }
            n => return write!(f, "signal {n}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_taken_set_is_tinis() {
        let set = taken();
        for sig in [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
            libc::SIGALRM,
            libc::SIGTERM,
            libc::SIGSTKFLT,
            libc::SIGCHLD,
            libc::SIGCONT,
            libc::SIGTSTP,
            libc::SIGURG,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGWINCH,
            libc::SIGIO,
            libc::SIGPWR,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert!(set.contains(sig), "{} is taken", SigName(sig));
        }
        for sig in NOT_TAKEN {
            assert!(!set.contains(sig), "{} is not taken", SigName(sig));
        }
    }

    #[test]
    fn names() {
        assert_eq!(SigName(libc::SIGTERM).to_string(), "SIGTERM");
        assert_eq!(SigName(libc::SIGPWR).to_string(), "SIGPWR");
        assert_eq!(SigName(libc::SIGRTMIN()).to_string(), "SIGRTMIN");
        assert_eq!(SigName(libc::SIGRTMIN() + 2).to_string(), "SIGRTMIN+2");
        assert_eq!(SigName(0).to_string(), "signal 0");
    }
}
