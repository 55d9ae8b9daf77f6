//! Threads that move CMD's bytes: from its pipe or pty to the agent's own
//! stdout/stderr (and the copy), and from the agent's stdin to its pty.
//!
//! Plain blocking reads and writes on threads, not async: a write to the
//! agent's stdout that blocks stops the read, so CMD's pipe fills and CMD
//! blocks (back-pressure, nothing dropped), and each chunk is passed on as
//! soon as one `read` returns it (no line buffering: a progress bar's `\r`
//! goes out at once).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;

use super::tee::{Stream, Tee};

/// Size of one read: what a pipe holds by default.
const CHUNK: usize = 64 * 1024;

/// Where a stream is passed through to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    Stderr,
}

/// Starts the thread passing `src` (CMD's side) through to `dest` and
/// into `tee`. It sends `stream` on `done` once `src` reaches its end.
pub fn spawn(
    src: OwnedFd,
    dest: Dest,
    stream: Stream,
    tee: Arc<Tee>,
    done: Sender<Stream>,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(format!("init-{}", stream.name()))
        .spawn(move || {
            pass_through(&src, dest, stream, &tee);
            let _ = done.send(stream);
        })
}

fn pass_through(src: &OwnedFd, dest: Dest, stream: Stream, tee: &Tee) {
    let mut buf = vec![0u8; CHUNK];
    let mut passing = true;
    loop {
        let n = match read(src.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            // A pty master reports EIO once every slave is closed: the end.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                tracing::error!(stream = stream.name(), error = %e, "cannot read CMD's output");
                break;
            }
        };
        let bytes = &buf[..n];
        if passing {
            if let Err(e) = write_to(dest, bytes) {
                // Our stdout is gone (a closed pipe, a hung-up terminal):
                // CMD keeps running and its output keeps reaching the copy.
                tracing::warn!(stream = stream.name(), error = %e, "cannot pass CMD's output through any more; still copying it for shipping");
                passing = false;
            }
        }
        tee.append(stream, bytes);
    }
}

fn write_to(dest: Dest, bytes: &[u8]) -> io::Result<()> {
    match dest {
        Dest::Stdout => write_all(libc::STDOUT_FILENO, bytes),
        Dest::Stderr => {
            // Holding std's stderr lock keeps the agent's own log lines
            // (written through it) from landing inside this chunk.
            let _lock = io::stderr().lock();
            write_all(libc::STDERR_FILENO, bytes)
        }
    }
}

fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                wait_for(fd, libc::POLLIN, -1)?;
            }
            _ => return Err(e),
        }
    }
}

/// Writes all of `bytes`, waiting while `fd` is full; also works when
/// someone made the shared descriptor non-blocking.
pub fn write_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for reads of its length.
        let r = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if r > 0 {
            bytes = &bytes[r as usize..];
            continue;
        }
        let e = if r == 0 {
            io::Error::from(io::ErrorKind::WriteZero)
        } else {
            io::Error::last_os_error()
        };
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => {
                wait_for(fd, libc::POLLOUT, -1)?;
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Polls one descriptor; returns whether it became ready before
/// `timeout_ms` (-1: no timeout).
fn wait_for(fd: RawFd, events: libc::c_short, timeout_ms: libc::c_int) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Starts the thread copying the agent's stdin (a terminal in raw mode)
/// to CMD's pty. It checks `stop` between reads (polling with a short
/// timeout) so that once CMD has exited the agent stops taking the user's
/// keys, which then go to the agent's terminal as usual (Ctrl-C during
/// the drain is a SIGINT to the agent again).
pub fn spawn_stdin(master: OwnedFd, stop: Arc<AtomicBool>) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("init-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                match wait_for(libc::STDIN_FILENO, libc::POLLIN, 100) {
                    Ok(false) => continue,
                    Ok(true) => {}
                    Err(_) => break,
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = match read(libc::STDIN_FILENO, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if write_all(master.as_raw_fd(), &buf[..n]).is_err() {
                    break;
                }
            }
        })
}
