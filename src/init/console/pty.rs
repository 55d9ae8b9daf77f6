//! The pseudo-terminal CMD gets when the agent's stdout is a terminal, and
//! the agent's own terminal in raw mode while CMD reads through it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, Once};

/// A new pseudo-terminal pair: the agent keeps the master, CMD gets the
/// slave as its controlling terminal.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal with the modes and window size of the terminal
/// on `like` (the agent's stdout), so CMD sees the terminal it would have
/// seen without the agent: same line discipline settings, same size.
pub fn open(like: RawFd) -> io::Result<Pty> {
    let termios = get_termios(like).ok();
    let size = window_size(like);
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: the out-pointers are valid c_ints; the termios and winsize
    // pointers are either null or point to initialised values that live
    // across the call; a null name buffer is allowed.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            termios
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::termios),
            size.as_ref()
                .map_or(std::ptr::null(), |w| w as *const libc::winsize),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openpty succeeded, so both are open descriptors we own.
    let pty = unsafe {
        Pty {
            master: OwnedFd::from_raw_fd(master),
            slave: OwnedFd::from_raw_fd(slave),
        }
    };
    // openpty does not set close-on-exec: without it CMD would inherit
    // the master (and a second slave), and the master would never see the
    // hang-up that tells the agent CMD's output has ended.
    set_cloexec(pty.master.as_raw_fd())?;
    set_cloexec(pty.slave.as_raw_fd())?;
    Ok(pty)
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty has no memory arguments.
    unsafe { libc::isatty(fd) == 1 }
}

/// Whether the agent's process group is the foreground group of the
/// terminal on `fd`: only then may it read that terminal and change its
/// modes (a backgrounded `mosaic-shipper run -- x &` must do neither).
pub fn in_foreground(fd: RawFd) -> bool {
    // SAFETY: plain syscalls without memory arguments.
    unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() }
}

pub fn window_size(fd: RawFd) -> Option<libc::winsize> {
    let mut w = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into `w`, which is valid.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) };
    (r == 0).then_some(w)
}

fn get_termios(fd: RawFd) -> io::Result<libc::termios> {
    let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr fills the whole struct on success.
    if unsafe { libc::tcgetattr(fd, t.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: initialised by the successful tcgetattr.
    Ok(unsafe { t.assume_init() })
}

/// Copies the agent's window size to CMD's terminal on SIGWINCH.
pub struct Resizer {
    master: OwnedFd,
    from: RawFd,
}

impl Resizer {
    pub fn new(master: OwnedFd, from: RawFd) -> Resizer {
        Resizer { master, from }
    }

    /// Sets CMD's window size to the agent's. Returns whether it changed:
    /// then the kernel has sent SIGWINCH to the terminal's foreground
    /// group (CMD's), and forwarding the agent's SIGWINCH would repeat it.
    pub fn sync(&self) -> bool {
        let Some(want) = window_size(self.from) else {
            return false;
        };
        let fd = self.master.as_raw_fd();
        if let Some(have) = window_size(fd) {
            if (have.ws_row, have.ws_col, have.ws_xpixel, have.ws_ypixel)
                == (want.ws_row, want.ws_col, want.ws_xpixel, want.ws_ypixel)
            {
                return false;
            }
        }
        // SAFETY: TIOCSWINSZ reads one winsize, which `want` is.
        unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &want) == 0 }
    }
}

/// The agent's terminal modes before raw mode, to put back.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);
static HOOK: Once = Once::new();

/// Puts the terminal on `fd` (the agent's stdin) into raw input mode, so
/// that every key, Ctrl-C included, reaches CMD's terminal unchanged and
/// is echoed and interpreted once, by CMD's terminal (as `script`, `ssh -t`
/// and `docker run -it` do). Output processing is left as it is: the
/// agent's own log lines keep their carriage returns (CMD's `\r\n` gains
/// a `\r` that a terminal does not show).
///
/// The previous modes are put back by [`restore_terminal`], which init
/// mode calls when CMD exits and before the agent exits, and which a panic
/// hook calls too. Only an uncatchable death (SIGKILL) leaves the terminal
/// raw; `stty sane` (or `reset`) repairs it then.
pub fn enter_raw(fd: RawFd) -> io::Result<()> {
    let saved = get_termios(fd)?;
    let mut raw = saved;
    raw.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    raw.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
    raw.c_cflag &= !(libc::CSIZE | libc::PARENB);
    raw.c_cflag |= libc::CS8;
    raw.c_cc[libc::VMIN] = 1;
    raw.c_cc[libc::VTIME] = 0;
    {
        let mut slot = SAVED.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some((fd, saved));
        }
    }
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    // SAFETY: `raw` is an initialised termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
        let err = io::Error::last_os_error();
        SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
        return Err(err);
    }
    Ok(())
}

/// Puts back the modes [`enter_raw`] changed; a no-op if none were (or
/// they were already put back).
pub fn restore_terminal() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((fd, t)) = saved {
        // SAFETY: `t` is the termios read from this descriptor.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_copies_size_and_modes_and_is_close_on_exec() {
        let outer = open(-1).unwrap();
        let size = libc::winsize {
            ws_row: 33,
            ws_col: 77,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize.
        assert_eq!(
            unsafe { libc::ioctl(outer.master.as_raw_fd(), libc::TIOCSWINSZ, &size) },
            0
        );
        let inner = open(outer.slave.as_raw_fd()).unwrap();
        let got = window_size(inner.slave.as_raw_fd()).unwrap();
        assert_eq!((got.ws_row, got.ws_col), (33, 77));
        for fd in [inner.master.as_raw_fd(), inner.slave.as_raw_fd()] {
            // SAFETY: fcntl with integer arguments.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(flags & libc::FD_CLOEXEC != 0);
        }
        assert!(is_terminal(inner.slave.as_raw_fd()));

        // The resizer copies a new outer size once, then reports no change.
        let r = Resizer::new(inner.master.try_clone().unwrap(), outer.slave.as_raw_fd());
        assert!(!r.sync());
        let bigger = libc::winsize { ws_row: 40, ..size };
        // SAFETY: as above.
        unsafe { libc::ioctl(outer.master.as_raw_fd(), libc::TIOCSWINSZ, &bigger) };
        assert!(r.sync());
        assert!(!r.sync());
        assert_eq!(window_size(inner.slave.as_raw_fd()).unwrap().ws_row, 40);
    }

    #[test]
    fn raw_mode_is_undone() {
        let p = open(-1).unwrap();
        let fd = p.slave.as_raw_fd();
        let before = get_termios(fd).unwrap();
        assert!(before.c_lflag & libc::ICANON != 0);
        enter_raw(fd).unwrap();
        let raw = get_termios(fd).unwrap();
        assert_eq!(raw.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
        assert_eq!(raw.c_oflag, before.c_oflag, "output processing kept");
        restore_terminal();
        let after = get_termios(fd).unwrap();
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_iflag, before.c_iflag);
        restore_terminal();
    }
}
