//! Reaping: collecting the exit status of every child that lands on us.
//!
//! In init mode the agent reaps with `waitpid(-1, WNOHANG)`: it is the
//! parent of CMD and, as PID 1 or as a child subreaper, of every process
//! orphaned below it. A zombie nobody waits for keeps its PID (and its
//! process-table slot) forever, which is exactly what an init must prevent.
//!
//! Consequence for the rest of the agent: in init mode no other code in
//! this process may wait for children of its own (`std::process::Child::wait`,
//! `tokio::process`): the reaper would take their statuses first and those
//! waits would fail with `ECHILD`. Nothing in the agent spawns processes
//! today; a sink that needs to (e.g. a helper for W&B) must be handed its
//! child's status by the reaper instead.

use std::io;

/// How a child ended: the two cases `waitpid` reports for a terminated
/// process. The agent exits with [`ChildExit::code`] of CMD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl ChildExit {
    /// The shell's convention: the exit code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            ChildExit::Exited(code) => code,
            ChildExit::Signaled(sig) => 128 + sig,
        }
    }

    fn from_wait_status(status: libc::c_int) -> Option<ChildExit> {
        if libc::WIFEXITED(status) {
            Some(ChildExit::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(ChildExit::Signaled(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildExit::Exited(code) => write!(f, "exited with code {code}"),
            ChildExit::Signaled(sig) => {
                write!(f, "was killed by {}", crate::signals::SigName(*sig))
            }
        }
    }
}

/// Makes orphaned descendants re-parent to this process instead of to the
/// system's init, so that the agent can reap them when it is not PID 1
/// (e.g. under a shell, systemd, or a container runtime's own init).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Collects every child that has terminated, without blocking.
///
/// The loop ends when no terminated child is left (`0`) or there is no
/// child at all (`ECHILD`); each iteration removes one zombie, so it is
/// bounded by the number of zombies.
pub fn reap_terminated() -> Vec<(libc::pid_t, ChildExit)> {
    let mut reaped = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid, writable c_int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            if let Some(exit) = ChildExit::from_wait_status(status) {
                reaped.push((pid, exit));
            }
            continue;
        }
        if pid == 0 {
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => break,
            _ => {
                tracing::error!(error = %err, "waitpid failed");
                break;
            }
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(ChildExit::Exited(0).code(), 0);
        assert_eq!(ChildExit::Exited(3).code(), 3);
        assert_eq!(ChildExit::Signaled(libc::SIGTERM).code(), 143);
        assert_eq!(ChildExit::Signaled(libc::SIGKILL).code(), 137);
    }

    #[test]
    fn wait_statuses_decode() {
        // Encodings as the kernel builds them: code << 8, or the signal.
        assert_eq!(
            ChildExit::from_wait_status(3 << 8),
            Some(ChildExit::Exited(3))
        );
        assert_eq!(
            ChildExit::from_wait_status(libc::SIGTERM),
            Some(ChildExit::Signaled(libc::SIGTERM))
        );
        // Stopped (0x7f in the low byte): not a termination.
        assert_eq!(
            ChildExit::from_wait_status((libc::SIGSTOP << 8) | 0x7f),
            None
        );
    }
}
