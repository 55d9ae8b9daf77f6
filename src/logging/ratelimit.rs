//! Repeated warnings are logged once per window, with a count.
//!
//! A bad file or a server in trouble makes the same warning for every line
//! or every retry: 10 MB of random bytes gave 38,884 WARN lines, a 429
//! storm 875 a second. This layer lets the first warning or error of a kind
//! through and holds back the repeats of the same kind until its window
//! closes; then one line says how many were held back. Nothing is lost
//! from the data's point of view: the counters in `status` count every
//! skipped line, whatever was logged.
//!
//! "The same kind" is the same call site, the same message and the same
//! values of the fields that say *what* is affected ([`KEY_FIELDS`]: the
//! file, the run, the sink, the URL, ...). Fields that change on every
//! repeat (an offset, a byte count, the parser's error position, the
//! retry delay) are left out of the key on purpose. Info and below pass
//! untouched.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Fields that name what a warning is about; the others vary per repeat.
pub const KEY_FIELDS: &[&str] = &[
    "file", "path", "dir", "sink", "run", "url", "what", "status", "rule",
];

/// The target of the summary lines (never limited themselves).
pub const TARGET: &str = "mosaic_shipper::repeats";

/// Kinds tracked at most; past this, new kinds are not limited (a bound
/// on memory, not a case that happens).
const MAX_KINDS: usize = 4096;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Kind {
    callsite: tracing::callsite::Identifier,
    message: String,
    fields: String,
}

struct Window {
    opened: Instant,
    held: u64,
    level: Level,
    /// The other fields of the last repeat held back (its error, say).
    last: String,
}

/// A summary due: `held` repeats of `kind` in `window`.
struct Due {
    kind: Kind,
    held: u64,
    level: Level,
    last: String,
}

#[derive(Default)]
struct State {
    windows: HashMap<Kind, Window>,
    due: Vec<Due>,
}

/// The layer; clones share their state (one for the subscriber, one for
/// whoever emits the summaries).
#[derive(Clone)]
pub struct RateLimit {
    window: Duration,
    state: Arc<Mutex<State>>,
}

impl RateLimit {
    pub fn new(window: Duration) -> RateLimit {
        RateLimit {
            window,
            state: Arc::default(),
        }
    }

    /// Emits a summary for every kind whose window has closed with repeats
    /// held back (`all`: for every kind with repeats, window closed or not,
    /// as at exit). Summaries are events of their own, so this must run
    /// outside the subscriber's callbacks (tracing drops events made
    /// inside them): from [`RateLimit::spawn_flusher`]'s thread or at exit.
    pub fn flush(&self, all: bool) {
        let due = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let window = self.window;
            let mut due = std::mem::take(&mut st.due);
            st.windows.retain(|kind, w| {
                let closed = now.duration_since(w.opened) >= window;
                if w.held > 0 && (closed || all) {
                    due.push(Due {
                        kind: kind.clone(),
                        held: w.held,
                        level: w.level,
                        last: std::mem::take(&mut w.last),
                    });
                    w.held = 0;
                }
                !closed
            });
            due
        };
        let secs = self.window.as_secs_f64();
        for d in due {
            let mut what = if d.kind.fields.is_empty() {
                d.kind.message.clone()
            } else {
                format!("{} ({})", d.kind.message, d.kind.fields)
            };
            if !d.last.is_empty() {
                let _ = write!(what, "; the last: {}", d.last);
            }
            if d.level == Level::ERROR {
                tracing::error!(target: TARGET, repeats = d.held, window_secs = secs, "{} more like this within {secs}s, not logged: {what}", d.held);
            } else {
                tracing::warn!(target: TARGET, repeats = d.held, window_secs = secs, "{} more like this within {secs}s, not logged: {what}", d.held);
            }
        }
    }

    /// A thread that emits the summaries as windows close.
    pub fn spawn_flusher(&self) {
        let me = self.clone();
        let every = (self.window / 4).max(Duration::from_millis(100));
        let _ = std::thread::Builder::new()
            .name("log-repeats".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                me.flush(false);
            });
    }

    /// Whether this event is let through; counts it if not.
    fn admit(&self, event: &Event<'_>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == TARGET {
            return true;
        }
        let mut v = KeyVisitor::default();
        event.record(&mut v);
        let rest = std::mem::take(&mut v.rest);
        let kind = Kind {
            callsite: meta.callsite(),
            message: v.message,
            fields: v.fields,
        };
        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = st.windows.get_mut(&kind) {
            if now.duration_since(w.opened) < self.window {
                w.held += 1;
                w.last = rest;
                return false;
            }
            // The window closed without the flusher noticing yet: its
            // summary is due, and this event opens a new window.
            let held = std::mem::take(&mut w.held);
            let last = std::mem::take(&mut w.last);
            w.opened = now;
            if held > 0 {
                let level = w.level;
                st.due.push(Due {
                    kind,
                    held,
                    level,
                    last,
                });
            }
            return true;
        }
        if st.windows.len() < MAX_KINDS {
            st.windows.insert(
                kind,
                Window {
                    opened: now,
                    held: 0,
                    level: *meta.level(),
                    last: String::new(),
                },
            );
        }
        true
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        self.admit(event)
    }
}

#[derive(Default)]
struct KeyVisitor {
    message: String,
    fields: String,
    /// The fields that are not part of the key, at most [`REST_MAX`] bytes.
    rest: String,
}

const REST_MAX: usize = 400;

impl KeyVisitor {
    fn push_rest(&mut self, name: &str, value: &dyn std::fmt::Display) {
        if self.rest.len() >= REST_MAX {
            return;
        }
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
        let _ = write!(self.rest, "{name}={value}");
        if self.rest.len() > REST_MAX {
            let mut cut = REST_MAX;
            while !self.rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.rest.truncate(cut);
            self.rest.push('…');
        }
    }
}

impl Visit for KeyVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if KEY_FIELDS.contains(&field.name()) {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        } else {
            self.push_rest(field.name(), &format_args!("{value:?}"));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if KEY_FIELDS.contains(&field.name()) {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value}", field.name());
        } else {
            self.push_rest(field.name(), &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use tracing_subscriber::layer::SubscriberExt;

    /// Collects the messages of the events that get through.
    #[derive(Clone, Default)]
    struct Seen(Arc<StdMutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut v = KeyVisitor::default();
            event.record(&mut v);
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", v.message, v.fields));
        }
    }

    #[test]
    fn repeats_are_held_and_counted() {
        let limit = RateLimit::new(Duration::from_millis(300));
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(seen.clone())
            .with(limit.clone());
        tracing::subscriber::with_default(subscriber, || {
            for offset in 0..1000u64 {
                tracing::warn!(file = "a.log", offset, error = %offset, "skipping line: invalid UTF-8");
                tracing::warn!(file = "b.log", offset, "skipping line: invalid UTF-8");
                tracing::info!(offset, "info passes");
            }
            limit.flush(false); // windows still open: nothing yet
            assert_eq!(seen.0.lock().unwrap().len(), 2 + 1000);
            std::thread::sleep(Duration::from_millis(350));
            limit.flush(false);
            tracing::warn!(file = "a.log", offset = 5, "skipping line: invalid UTF-8");
        });
        let seen = seen.0.lock().unwrap();
        let warns: Vec<&String> = seen.iter().filter(|m| !m.starts_with("info")).collect();
        assert_eq!(warns.len(), 5, "{warns:?}");
        assert!(
            warns.iter().any(|m| m.contains("999 more like this")
                && m.contains("invalid UTF-8")
                && m.contains("file=a.log")
                && m.contains("the last: offset=999 error=999")),
            "{warns:?}"
        );
        assert!(warns.iter().any(|m| m.contains("file=b.log")));
        // A new window starts with the next repeat, shown at once.
        assert!(warns.last().unwrap().starts_with("skipping line"));
    }
}
