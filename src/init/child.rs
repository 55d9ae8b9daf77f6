//! Starting CMD: its own process group (or session, with a pty), the
//! terminal, a clean signal state.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use super::console::ChildStdio;

/// CMD once started: what the supervisor needs to signal it and to give
/// the terminal back when it is gone.
#[derive(Debug, Clone, Copy)]
pub struct Spawned {
    /// CMD's PID, which is also its process group's ID (and its session's,
    /// when it has a pty).
    pub pid: libc::pid_t,
    /// Whether CMD was made the terminal's foreground process group.
    pub took_terminal: bool,
}

/// Starts `command` with the agent's environment and working directory,
/// the standard streams `stdio` gives (the agent's own where it gives
/// none), as the leader of a new process group.
///
/// Its own group lets signals be forwarded to CMD *and* everything it
/// started (what a shell job would get from the terminal) without ever
/// signalling the agent. When the agent's group owns the terminal on stdin
/// (an interactive `docker run -it`, or a shell), CMD is made the foreground
/// group, as tini does: otherwise a CMD that reads the terminal would be
/// stopped by SIGTTIN and Ctrl-C would reach only the agent.
///
/// With `stdio.own_terminal` (CMD's stdout is a pty slave) CMD leads a
/// new session instead, with that pty as its controlling terminal, so its
/// group is the pty's foreground group; the agent's own terminal is left
/// to the agent.
pub fn spawn(command: &[OsString], stdio: ChildStdio) -> io::Result<Spawned> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no command given"))?;
    let own_terminal = stdio.own_terminal;
    let take_terminal = !own_terminal && owns_foreground_terminal();
    let mut cmd = Command::new(program);
    cmd.args(args);
    if !own_terminal {
        // A group leader could not start a session: setsid below does both.
        cmd.process_group(0);
    }
    if let Some(s) = stdio.stdin {
        cmd.stdin(s);
    }
    if let Some(s) = stdio.stdout {
        cmd.stdout(s);
    }
    if let Some(s) = stdio.stderr {
        cmd.stderr(s);
    }
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            // The agent blocks every signal it takes and ignores SIGPIPE,
            // SIGTTIN and SIGTTOU; a mask and ignored dispositions survive
            // exec, so CMD must start from the defaults. (std also clears
            // the mask and SIGPIPE; doing it here does not depend on that.)
            // Dispositions the agent was started with are passed on, as
            // tini does: `nohup mosaic-shipper run -- CMD` still ignores
            // SIGHUP in CMD.
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut());
            if own_terminal {
                // A new session (and process group) whose controlling
                // terminal is the pty on stdout; its foreground group is
                // then CMD's. Without it CMD still runs, terminal-less.
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::ioctl(libc::STDOUT_FILENO, libc::TIOCSCTTY, 0);
            }
            if take_terminal {
                // SIGTTOU is still ignored here, which is what allows a
                // process outside the foreground group to take the terminal.
                // Failure leaves CMD in the background: not worth aborting.
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpid());
            }
            libc::signal(libc::SIGTTIN, libc::SIG_DFL);
            libc::signal(libc::SIGTTOU, libc::SIG_DFL);
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    // Dropping the std `Child` neither waits nor kills: CMD's status is
    // collected by the reaper, which waits for every child. Dropping `cmd`
    // closes the agent's copies of CMD's pipe and pty ends, so that CMD's
    // exit is the end of its output.
    let child = cmd.spawn()?;
    drop(cmd);
    Ok(Spawned {
        pid: child.id() as libc::pid_t,
        took_terminal: take_terminal,
    })
}

impl Spawned {
    /// After CMD exits, takes the terminal back if CMD still had it, so that
    /// Ctrl-C during the drain reaches the agent (and not an empty group).
    pub fn give_back_terminal(&self) {
        if !self.took_terminal {
            return;
        }
        // SAFETY: plain syscalls on the standard input descriptor. SIGTTOU
        // is ignored by the agent, so the call cannot stop it.
        unsafe {
            if libc::tcgetpgrp(libc::STDIN_FILENO) == self.pid {
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
            }
        }
    }
}

/// Whether stdin is a terminal whose foreground group is the agent's own.
/// A backgrounded agent (`mosaic-shipper run -- x &`) must not steal it.
fn owns_foreground_terminal() -> bool {
    // SAFETY: plain syscalls on the standard input descriptor.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    }
}

/// The exit code for a CMD that could not be started, as a shell reports
/// it: 127 when it does not exist, 126 when it cannot be executed.
pub fn spawn_failure_code(err: &io::Error) -> u8 {
    if err.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}
