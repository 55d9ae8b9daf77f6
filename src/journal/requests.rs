//! `set-aside retry` and `drop` while the agent runs: requests left in the
//! store directory for the running agent to carry out.
//!
//! sled lets one process open a store (it `flock`s its `db` file, and the
//! guard does too), so a command cannot change the store under a running
//! agent. Instead it writes a request file to `<store>/requests/` (written
//! whole under a temporary name, then renamed, so the agent never reads
//! half of one); the agent looks there every [`POLL`], carries each request
//! out on its own journal, writes the answer beside it and removes the
//! request. The command waits a bounded time for the answer. A request the
//! agent did not answer (it stopped first) stays and is carried out when
//! the agent next opens the store ([`serve`] runs once at start too).
//!
//! A running sink session learns of the change through
//! [`Journal::subscribe_set_aside`] and starts anew, so a retried run's kept
//! rows go out at once and a dropped run's later rows flow again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Journal, SetAsideRun};

/// How often a running agent looks for requests.
pub const POLL: Duration = Duration::from_millis(500);

/// What a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Retry,
    Drop,
}

/// One request: the action and which set-aside runs it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub action: Action,
    pub sink: Option<String>,
    pub run: Option<String>,
}

/// The agent's answer: the runs the request changed, or why it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub runs: Vec<SetAsideRun>,
    pub error: Option<String>,
}

fn dir(store: &Path) -> PathBuf {
    store.join("requests")
}

fn answer_path(request: &Path) -> PathBuf {
    request.with_extension("answer")
}

/// Writes `request` for the agent running on `store`; returns its path.
pub fn submit(store: &Path, request: &Request) -> std::io::Result<PathBuf> {
    let dir = dir(store);
    crate::util::create_private_dir(&dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = format!("{now:024}-{}", std::process::id());
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(format!("{name}.json"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(request).expect("requests serialise"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Waits up to `limit` for the answer to the request at `path`; takes it
/// (removes the file). `None`: no answer in time (the request stays).
pub fn wait_answer(path: &Path, limit: Duration) -> Option<Answer> {
    let answer = answer_path(path);
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(bytes) = std::fs::read(&answer) {
            if let Ok(a) = serde_json::from_slice::<Answer>(&bytes) {
                let _ = std::fs::remove_file(&answer);
                return Some(a);
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Carries out every request waiting in `store`'s request directory, in
/// the order they were made; returns how many. A request that cannot be
/// read is answered with the reason and removed.
pub fn serve(journal: &Journal, store: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir(store)) else {
        return 0;
    };
    let mut requests: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    requests.sort();
    for path in &requests {
        let answer = match std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Request>(&b).map_err(|e| e.to_string()))
        {
            Err(e) => Answer {
                runs: Vec::new(),
                error: Some(format!("cannot read request {}: {e}", path.display())),
            },
            Ok(r) => {
                let (sink, run) = (r.sink.as_deref(), r.run.as_deref());
                let done = match r.action {
                    Action::Retry => journal.retry_set_aside(sink, run),
                    Action::Drop => journal.drop_set_aside(sink, run),
                };
                match done {
                    Ok(runs) => {
                        for x in &runs {
                            tracing::info!(action = ?r.action, sink = %x.sink, run = ?x.run, rows = x.rows, "set-aside request carried out");
                        }
                        Answer { runs, error: None }
                    }
                    Err(e) => Answer {
                        runs: Vec::new(),
                        error: Some(e.to_string()),
                    },
                }
            }
        };
        let tmp = path.with_extension("answer.tmp");
        let written = std::fs::write(
            &tmp,
            serde_json::to_vec(&answer).expect("answers serialise"),
        )
        .and_then(|()| std::fs::rename(&tmp, answer_path(path)));
        if let Err(e) = written {
            tracing::warn!(request = %path.display(), error = %e, "cannot write the answer to a set-aside request");
        }
        let _ = std::fs::remove_file(path);
    }
    requests.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_carried_out_once_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["jsonl"]).unwrap();
        j.refuse_run("jsonl", "r1", "why").unwrap();
        let mut changes = j.subscribe_set_aside();
        let req = Request {
            action: Action::Retry,
            sink: None,
            run: Some("r1".into()),
        };
        let path = submit(dir.path(), &req).unwrap();
        assert_eq!(wait_answer(&path, Duration::ZERO), None);
        assert_eq!(serve(&j, dir.path()), 1);
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        let a = wait_answer(&path, Duration::ZERO).unwrap();
        assert_eq!((a.runs.len(), a.runs[0].retry, a.error), (1, true, None));
        assert_eq!(serve(&j, dir.path()), 0, "removed once carried out");
        let path = submit(
            dir.path(),
            &Request {
                action: Action::Drop,
                sink: Some("jsonl".into()),
                run: None,
            },
        )
        .unwrap();
        serve(&j, dir.path());
        assert_eq!(wait_answer(&path, Duration::ZERO).unwrap().runs.len(), 1);
        assert!(j.set_aside_runs(None).unwrap().is_empty());
        assert!(changes.has_changed().unwrap());
    }
}
