//! Rows a sink could not take, kept apart so that every other run flows.
//!
//! When a sink refuses one run (W&B answers 4xx for it), the runner
//! records the run as set aside for that sink ([`Journal::refuse_run`]);
//! from then on that run's rows are copied here instead of being handed to
//! the sink, in the same transaction that moves the sink's cursor past
//! them ([`Journal::ack_with_set_aside`]). A crash therefore leaves either
//! both (rows kept, cursor past them) or neither (the rows are read from
//! the journal again and set aside again): nothing lost, nothing twice.
//!
//! `mosaic-shipper set-aside retry` marks runs for another attempt; the
//! runner then hands their kept rows to the sink first, and deletes them in
//! the transaction that commits the sink's state ([`Journal::ack_retried`]).
//! `set-aside drop` deletes them.
//!
//! Set-aside rows do not count towards `store.max_bytes`: a refused run
//! must not pause reading for the others.

use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::codec::{decode_block, encode_block, key_u64, seal, u64_key};
use super::{Journal, JournalError, SinkCursor, TxAbort};
use crate::row::{Entry, RowRef};

/// One run set aside for one sink: why, since when, how many rows are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetAsideRun {
    pub sink: String,
    pub run: String,
    /// The sink's error for the row that was refused (no secrets: W&B
    /// errors name the run, the URL and the status, never the body).
    pub reason: String,
    /// Unix seconds of the refusal.
    pub since: f64,
    /// Rows kept.
    pub rows: u64,
    /// `set-aside retry` asked for another attempt; the next runner
    /// session delivers the kept rows first.
    #[serde(default)]
    pub retry: bool,
}

/// A run id the sinks show under another name (`status` lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunName {
    pub run: String,
    /// In paths (`jsonl`, TensorBoard).
    pub path: String,
    /// On W&B (online and offline).
    pub wandb: String,
}

/// `(sink, run)` as an unambiguous key prefix (run ids may hold any byte,
/// NUL included): both length-prefixed.
fn key(sink: &str, run: Option<&str>) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + sink.len() + run.map_or(0, str::len));
    k.extend_from_slice(&(sink.len() as u32).to_be_bytes());
    k.extend_from_slice(sink.as_bytes());
    if let Some(run) = run {
        k.extend_from_slice(&(run.len() as u32).to_be_bytes());
        k.extend_from_slice(run.as_bytes());
    }
    k
}

fn row_key(sink: &str, run: &str, seq: u64) -> Vec<u8> {
    let mut k = key(sink, Some(run));
    k.extend_from_slice(&u64_key(seq));
    k
}

type Tx<T> = Result<T, ConflictableTransactionError<TxAbort>>;

fn damaged(detail: String) -> ConflictableTransactionError<TxAbort> {
    ConflictableTransactionError::Abort(TxAbort::Damaged {
        what: "set-aside rows".into(),
        detail,
    })
}

fn decode_record(v: &[u8]) -> Tx<SetAsideRun> {
    serde_json::from_slice(v).map_err(|e| damaged(format!("damaged set-aside record: {e}")))
}

fn encode_record(r: &SetAsideRun) -> Vec<u8> {
    serde_json::to_vec(r).expect("record serialises")
}

impl Journal {
    /// Runs set aside, for `sink` or for every sink, in (sink, run) order.
    pub fn set_aside_runs(&self, sink: Option<&str>) -> Result<Vec<SetAsideRun>, JournalError> {
        let prefix = sink.map(|s| key(s, None)).unwrap_or_default();
        let mut out = Vec::new();
        for item in self.refused.scan_prefix(prefix) {
            let (_, v) = item.map_err(self.io("read set-aside runs"))?;
            out.push(
                serde_json::from_slice(&v).map_err(|e| JournalError::Corrupt {
                    path: self.path.clone(),
                    what: "set-aside run record".into(),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    /// Records that `sink` refused `run`: its rows are set aside from now
    /// on. Durable before it returns (the runner restarts the sink's
    /// session next, and must find the record after a crash too; losing
    /// it would only mean the run is tried, and refused, again).
    pub fn refuse_run(&self, sink: &str, run: &str, reason: &str) -> Result<(), JournalError> {
        let k = key(sink, Some(run));
        let now = crate::util::now_secs();
        self.refused
            .transaction(|t| {
                let record = match t.get(&k)? {
                    Some(v) => {
                        let mut r = decode_record(&v)?;
                        r.reason = reason.to_string();
                        r.since = now;
                        r.retry = false;
                        r
                    }
                    None => SetAsideRun {
                        sink: sink.to_string(),
                        run: run.to_string(),
                        reason: reason.to_string(),
                        since: now,
                        rows: 0,
                        retry: false,
                    },
                };
                t.insert(k.as_slice(), encode_record(&record))?;
                Ok(())
            })
            .map_err(|e| self.tx_err("record a set-aside run", e))?;
        self.flush()
    }

    /// [`Journal::ack`] that also keeps `aside` (rows of runs set aside
    /// for `sink`, all at or before `seq`), in one transaction.
    pub fn ack_with_set_aside(
        &self,
        sink: &str,
        seq: u64,
        state: Vec<u8>,
        aside: &[Entry],
    ) -> Result<(), JournalError> {
        if aside.is_empty() {
            return self.ack(sink, seq, state);
        }
        let cursor = cursor_value(&SinkCursor { seq, state });
        // Rows of runs dropped (`set-aside drop`) since the session read
        // them go with the rest of the dropped rows.
        let dropped = self
            .dropped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let aside: Vec<&Entry> = aside
            .iter()
            .filter(|e| {
                !dropped.contains(&(sink.to_string(), e.row.run_id.clone()))
                    || self
                        .refused
                        .contains_key(key(sink, Some(&e.row.run_id)))
                        .unwrap_or(true)
            })
            .collect();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = aside
            .iter()
            .map(|e| {
                (
                    row_key(sink, &e.row.run_id, e.seq),
                    encode_block(std::slice::from_ref(&e.row)),
                )
            })
            .collect();
        (&*self.sinks, &*self.set_aside, &*self.refused)
            .transaction(|(sinks_t, rows_t, refused_t)| {
                sinks_t.insert(sink.as_bytes(), seal(sink.as_bytes(), &cursor))?;
                for ((k, v), e) in rows.iter().zip(&aside) {
                    // A replay after a lost ack sets the same rows aside
                    // again: count each once.
                    if rows_t.insert(k.as_slice(), v.as_slice())?.is_some() {
                        continue;
                    }
                    let rk = key(sink, Some(&e.row.run_id));
                    let mut record = match refused_t.get(&rk)? {
                        Some(v) => decode_record(&v)?,
                        None => {
                            return Err(damaged(format!(
                                "row #{} of run {:?} set aside for sink {sink} without a record",
                                e.seq, e.row.run_id
                            )))
                        }
                    };
                    record.rows += 1;
                    refused_t.insert(rk.as_slice(), encode_record(&record))?;
                }
                Ok(())
            })
            .map_err(|e| self.tx_err("commit cursor and set-aside rows", e))?;
        self.compact()
    }

    /// Up to `max` kept rows of `run` for `sink`, oldest first.
    pub fn set_aside_rows(
        &self,
        sink: &str,
        run: &str,
        max: usize,
    ) -> Result<Vec<Entry>, JournalError> {
        let prefix = key(sink, Some(run));
        let mut out = Vec::new();
        for item in self.set_aside.scan_prefix(&prefix).take(max) {
            let (k, v) = item.map_err(self.io("read set-aside rows"))?;
            let seq = key_u64(&k[prefix.len()..]).unwrap_or_default();
            let corrupt = |detail: String| JournalError::Corrupt {
                path: self.path.clone(),
                what: format!("set-aside row #{seq} of run {run:?}"),
                detail,
            };
            let mut rows = decode_block(&v).map_err(corrupt)?;
            let row = rows.pop().ok_or_else(|| corrupt("no row".into()))?;
            out.push(Entry {
                seq,
                row: RowRef::new(row),
            });
        }
        Ok(out)
    }

    /// Commits `sink`'s state after it took kept rows of `run` up to
    /// `upto` (its cursor stays at `seq`), deleting those rows in the same
    /// transaction; the record goes when no row is left.
    pub fn ack_retried(
        &self,
        sink: &str,
        seq: u64,
        state: Vec<u8>,
        run: &str,
        upto: u64,
    ) -> Result<(), JournalError> {
        let cursor = cursor_value(&SinkCursor { seq, state });
        let keys: Vec<Vec<u8>> = self
            .set_aside
            .range(row_key(sink, run, 0)..=row_key(sink, run, upto))
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.io("read set-aside rows"))?
            .into_iter()
            .map(|k| k.to_vec())
            .collect();
        let rk = key(sink, Some(run));
        let left = self.set_aside.scan_prefix(&rk).count() - keys.len();
        (&*self.sinks, &*self.set_aside, &*self.refused)
            .transaction(|(sinks_t, rows_t, refused_t)| {
                sinks_t.insert(sink.as_bytes(), seal(sink.as_bytes(), &cursor))?;
                for k in &keys {
                    rows_t.remove(k.as_slice())?;
                }
                if let Some(v) = refused_t.get(&rk)? {
                    let mut record = decode_record(&v)?;
                    if left == 0 {
                        refused_t.remove(rk.as_slice())?;
                    } else {
                        record.rows = left as u64;
                        refused_t.insert(rk.as_slice(), encode_record(&record))?;
                    }
                }
                Ok(())
            })
            .map_err(|e| self.tx_err("commit retried set-aside rows", e))
    }

    /// A run marked for retry whose rows are all gone (none were kept):
    /// its record goes, so its new rows flow again.
    pub fn forget_set_aside_run(&self, sink: &str, run: &str) -> Result<(), JournalError> {
        let rk = key(sink, Some(run));
        if self.set_aside.scan_prefix(&rk).next().is_none() {
            self.refused
                .remove(rk)
                .map_err(self.io("remove a set-aside record"))?;
        }
        Ok(())
    }

    /// The runs matching `sink` and `run` (`None`: any).
    fn matching(
        &self,
        sink: Option<&str>,
        run: Option<&str>,
    ) -> Result<Vec<SetAsideRun>, JournalError> {
        Ok(self
            .set_aside_runs(sink)?
            .into_iter()
            .filter(|r| run.map_or(true, |run| r.run == run))
            .collect())
    }

    /// Marks the matching runs for another attempt; returns them.
    pub fn retry_set_aside(
        &self,
        sink: Option<&str>,
        run: Option<&str>,
    ) -> Result<Vec<SetAsideRun>, JournalError> {
        let mut out = Vec::new();
        for mut r in self.matching(sink, run)? {
            r.retry = true;
            self.refused
                .insert(key(&r.sink, Some(&r.run)), encode_record(&r))
                .map_err(self.io("mark a set-aside run for retry"))?;
            out.push(r);
        }
        self.flush()?;
        if !out.is_empty() {
            self.set_aside_changes.send_modify(|n| *n += 1);
        }
        Ok(out)
    }

    /// Deletes the kept rows and records of the matching runs; returns
    /// them. Their later rows flow to the sink again.
    pub fn drop_set_aside(
        &self,
        sink: Option<&str>,
        run: Option<&str>,
    ) -> Result<Vec<SetAsideRun>, JournalError> {
        let found = self.matching(sink, run)?;
        for r in &found {
            let rk = key(&r.sink, Some(&r.run));
            let keys: Vec<sled::IVec> = self
                .set_aside
                .scan_prefix(&rk)
                .keys()
                .collect::<Result<_, _>>()
                .map_err(self.io("read set-aside rows"))?;
            (&*self.set_aside, &*self.refused)
                .transaction(|(rows_t, refused_t)| {
                    for k in &keys {
                        rows_t.remove(k)?;
                    }
                    refused_t.remove(rk.as_slice())?;
                    Ok(())
                })
                .map_err(|e| self.tx_err("drop set-aside rows", e))?;
            self.dropped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((r.sink.clone(), r.run.clone()));
        }
        self.flush()?;
        if !found.is_empty() {
            self.set_aside_changes.send_modify(|n| *n += 1);
        }
        Ok(found)
    }

    /// Records that the sinks show `name.run` under other names (once).
    pub fn note_run_name(&self, name: &RunName) -> Result<(), JournalError> {
        let v = serde_json::to_vec(name).expect("name serialises");
        self.run_names
            .compare_and_swap(name.run.as_bytes(), None as Option<&[u8]>, Some(v))
            .map_err(self.io("record a mapped run name"))?
            .ok();
        Ok(())
    }

    /// Every run id shown under another name, in id order.
    pub fn run_names(&self) -> Result<Vec<RunName>, JournalError> {
        let mut out = Vec::new();
        for item in self.run_names.iter() {
            let (_, v) = item.map_err(self.io("read mapped run names"))?;
            out.push(
                serde_json::from_slice(&v).map_err(|e| JournalError::Corrupt {
                    path: self.path.clone(),
                    what: "mapped run name".into(),
                    detail: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}

/// A cursor as stored in the `sinks` tree (as `Journal::put_cursor`).
fn cursor_value(c: &SinkCursor) -> Vec<u8> {
    let mut v = u64_key(c.seq).to_vec();
    v.extend_from_slice(&c.state);
    v
}

#[cfg(test)]
mod tests {
    use super::super::tests::row;
    use super::*;

    fn entry(seq: u64, run: &str) -> Entry {
        let mut r = row(seq as i64);
        r.run_id = run.into();
        Entry {
            seq,
            row: RowRef::new(r),
        }
    }

    #[test]
    fn rows_set_aside_with_the_cursor_then_retried_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["w", "x"]).unwrap();
        j.commit_events(&[row(1), row(2), row(3)]).unwrap();
        j.refuse_run("w", "bad\0run", "HTTP 404").unwrap();
        j.refuse_run("x", "bad\0run", "other").unwrap();
        let aside = [entry(1, "bad\0run"), entry(3, "bad\0run")];
        j.ack_with_set_aside("w", 3, b"s".to_vec(), &aside).unwrap();
        // A replay of the same ack (it was lost) counts nothing twice.
        j.ack_with_set_aside("w", 3, b"s".to_vec(), &aside).unwrap();
        assert_eq!(
            j.cursor("w").unwrap(),
            SinkCursor {
                seq: 3,
                state: b"s".to_vec()
            }
        );
        let runs = j.set_aside_runs(Some("w")).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!((runs[0].rows, runs[0].retry), (2, false));
        assert_eq!(j.set_aside_runs(None).unwrap().len(), 2);
        let kept = j.set_aside_rows("w", "bad\0run", 10).unwrap();
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(kept[1].row, aside[1].row);
        // Another run's prefix does not reach into this one's rows.
        assert!(j.set_aside_rows("w", "bad", 10).unwrap().is_empty());

        assert_eq!(j.retry_set_aside(Some("w"), None).unwrap().len(), 1);
        assert!(j.set_aside_runs(Some("w")).unwrap()[0].retry);
        j.ack_retried("w", 3, b"t".to_vec(), "bad\0run", 1).unwrap();
        assert_eq!(j.set_aside_runs(Some("w")).unwrap()[0].rows, 1);
        j.ack_retried("w", 3, b"u".to_vec(), "bad\0run", 3).unwrap();
        assert!(j.set_aside_runs(Some("w")).unwrap().is_empty());
        assert_eq!(j.cursor("w").unwrap().state, b"u");

        let dropped = j.drop_set_aside(None, Some("bad\0run")).unwrap();
        assert_eq!(dropped.len(), 1);
        assert!(j.set_aside_runs(None).unwrap().is_empty());
    }

    #[test]
    fn run_names_are_noted_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["w"]).unwrap();
        let n = RunName {
            run: "a/b".into(),
            path: "a_b--x".into(),
            wandb: "a_b--x".into(),
        };
        j.note_run_name(&n).unwrap();
        j.note_run_name(&n).unwrap();
        assert_eq!(j.run_names().unwrap(), [n]);
    }
}
