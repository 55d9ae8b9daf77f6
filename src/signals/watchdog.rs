//! The hard bound of a drain: a thread that ends the process when the
//! drain overruns, whatever the async side is doing.
//!
//! The drain's own deadline is kept by the runtime's timers, which only
//! fire when a worker thread gets to them; a sink stuck in synchronous
//! work, a journal flush that takes long, a runtime whose threads are all
//! busy can each hold the process past it (an orchestrator then kills it
//! anyway, at its own time). This thread is armed by the signal thread
//! (or the reaper, in init mode) the moment the stop begins, so the bound
//! holds from the signal, not from whenever the async side notices it.
//!
//! Exiting here is as safe as a SIGKILL, which the journal is built for:
//! rows and offsets are committed together, a sink's cursor moves with its
//! state, and what was not acknowledged is delivered on the next start.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the exit waits for its own log line (written from another
/// thread, so that a lock held by a stuck thread cannot hold the exit).
const LAST_WORDS: Duration = Duration::from_millis(300);

/// The time and code of a forced exit; see the module documentation.
#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<(Mutex<Option<Armed>>, Condvar)>,
}

#[derive(Debug, Clone)]
struct Armed {
    at: Instant,
    code: u8,
    why: String,
}

impl Watchdog {
    /// Starts the (idle) watchdog thread. `before_exit` runs just before a
    /// forced exit (init mode gives the terminal its modes back).
    pub fn start(before_exit: fn()) -> std::io::Result<Watchdog> {
        let dog = Watchdog::inert();
        let watched = dog.clone();
        thread::Builder::new()
            .name("stop-watchdog".into())
            .spawn(move || watched.watch(before_exit))?;
        Ok(dog)
    }

    /// A watchdog whose thread could not start: arming it does nothing.
    pub fn inert() -> Watchdog {
        Watchdog {
            inner: Arc::new((Mutex::new(None), Condvar::new())),
        }
    }

    /// Exit with `code` at `at` unless the process is gone by then. An
    /// earlier time armed before wins; `why` says what overran.
    pub fn arm(&self, at: Instant, code: u8, why: impl Into<String>) {
        let (lock, wake) = &*self.inner;
        let mut armed = lock.lock().unwrap_or_else(|p| p.into_inner());
        if armed.as_ref().map_or(true, |a| at < a.at) {
            *armed = Some(Armed {
                at,
                code,
                why: why.into(),
            });
            wake.notify_all();
        }
    }

    fn watch(&self, before_exit: fn()) {
        let (lock, wake) = &*self.inner;
        let mut armed = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match armed.clone() {
                None => armed = wake.wait(armed).unwrap_or_else(|p| p.into_inner()),
                Some(a) => {
                    let now = Instant::now();
                    if now >= a.at {
                        drop(armed);
                        exit_now(a, before_exit);
                    }
                    armed = wake
                        .wait_timeout(armed, a.at - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

fn exit_now(a: Armed, before_exit: fn()) -> ! {
    let (done, wait) = std::sync::mpsc::channel();
    let code = a.code;
    let _ = thread::Builder::new()
        .name("stop-watchdog-log".into())
        .spawn(move || {
            before_exit();
            tracing::error!(
                exit_code = code,
                "{}: exiting now; every committed row stays in the journal and ships on the next start with this store",
                a.why
            );
            let _ = done.send(());
        });
    let _ = wait.recv_timeout(LAST_WORDS);
    // Let the log file's writer thread take the line.
    thread::sleep(Duration::from_millis(50));
    // SAFETY: _exit ends the process at once; no destructor, atexit
    // handler or lock of another thread is involved.
    unsafe { libc::_exit(code as libc::c_int) }
}

/// The margin of the hard bound over a drain's own deadline: the sinks'
/// grace to finish a flush in progress, then closing (the journal's flush,
/// the last status snapshot).
pub const MARGIN: Duration = Duration::from_secs(4);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earliest_arming_wins() {
        let dog = Watchdog::inert();
        let now = Instant::now();
        dog.arm(now + Duration::from_secs(60), 0, "late");
        dog.arm(now + Duration::from_secs(5), 130, "early");
        dog.arm(now + Duration::from_secs(30), 0, "between");
        let armed = dog.inner.0.lock().unwrap().clone().unwrap();
        assert_eq!((armed.code, armed.why.as_str()), (130, "early"));
    }
}
