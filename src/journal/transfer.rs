//! What the journal keeps about rows carried between machines (`export`
//! and `import`, src/bundle/): its own stable id, the last bundle exported
//! from it, and every bundle imported into it.
//!
//! These records live in the journal, not beside it, because each must
//! change in the same transaction as the rows or the cursor it describes:
//! an export moves the `wandb` cursor and records its bundle together, an
//! import appends the rows and records its bundle together. A crash at any
//! point therefore never leaves rows handed over twice, or a bundle half
//! taken and marked as taken.

use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::codec::{block_len, seal, u64_key};
use super::{tx_get, tx_put, tx_u64, Journal, JournalError, TxAbort, NEXT_SEQ, STORED_BYTES};

const JOURNAL_ID: &[u8] = b"journal_id";
const LAST_EXPORT: &[u8] = b"last_export";

/// Keys of the `imports` tree: one per imported bundle, one per source
/// journal (how far its rows have been imported).
const BUNDLE_PREFIX: &str = "bundle/";
const SOURCE_PREFIX: &str = "source/";

/// The last bundle exported from this journal. The next bundle names it as
/// its predecessor, so that the importing side can tell a missing bundle
/// from rows that were never staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportMark {
    pub bundle_id: String,
    /// Sequence numbers (of this journal) of its first and last row.
    pub first: u64,
    pub last: u64,
}

/// A bundle imported into this journal: where it came from, which of its
/// rows were taken and where they are here. Kept for good, so the same
/// bundle is never imported twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub bundle_id: String,
    pub source_host: String,
    pub source_store: String,
    pub source_journal: String,
    /// Source sequence numbers of the rows taken: the bundle's range less
    /// any rows an earlier bundle from the same journal already brought.
    pub first: u64,
    pub last: u64,
    pub rows: u64,
    /// Sequence numbers the rows got in this journal.
    pub local_first: u64,
    pub local_last: u64,
    /// Unix seconds.
    pub imported_at: u64,
}

/// How far the rows of one source journal have been imported here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceMark {
    /// Last source sequence number imported.
    pub last: u64,
    /// The bundle that brought it.
    pub bundle_id: String,
}

fn bundle_key(id: &str) -> Vec<u8> {
    format!("{BUNDLE_PREFIX}{id}").into_bytes()
}

fn source_key(journal_id: &str) -> Vec<u8> {
    format!("{SOURCE_PREFIX}{journal_id}").into_bytes()
}

impl Journal {
    fn corrupt(&self, what: impl Into<String>, e: impl std::fmt::Display) -> JournalError {
        self.damaged(what.into(), e)
    }

    /// This journal's id if it has one (nothing is written).
    pub(super) fn stored_journal_id(&self) -> Result<Option<String>, JournalError> {
        match self.get(&self.meta, JOURNAL_ID, "read journal id")? {
            None => Ok(None),
            Some(id) => String::from_utf8(id)
                .map(Some)
                .map_err(|e| self.corrupt("journal id", e)),
        }
    }

    /// This journal's id, stable for its lifetime: bundles name their
    /// source by it. Made (random) the first time it is asked for, so that
    /// journals older than bundles get one too.
    pub fn journal_id(&self) -> Result<String, JournalError> {
        self.live()?;
        let fresh: [u8; 16] = rand::random();
        let fresh: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        // Compare-and-swap: only the first id ever written counts.
        let _ = self
            .meta
            .compare_and_swap(
                JOURNAL_ID,
                None as Option<&[u8]>,
                Some(seal(JOURNAL_ID, fresh.as_bytes())),
            )
            .map_err(self.io("write journal id"))?;
        self.stored_journal_id()?
            .ok_or_else(|| self.corrupt("journal id", "missing after it was written"))
    }

    /// Whether `sink` has a cursor (has ever been registered).
    pub fn has_cursor(&self, sink: &str) -> Result<bool, JournalError> {
        Ok(self
            .get(&self.sinks, sink.as_bytes(), "read cursor")?
            .is_some())
    }

    /// The last bundle exported from this journal, if any.
    pub fn last_export(&self) -> Result<Option<ExportMark>, JournalError> {
        match self.get(&self.meta, LAST_EXPORT, "read meta")? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt("last export record", e)),
        }
    }

    /// Hands rows over to a bundle: moves `sink`'s cursor to `seq` with
    /// `state`, and records `mark` as the last export, in one transaction,
    /// made durable before returning.
    ///
    /// Nothing is deleted here: export opens the store without knowing
    /// which sinks the agent's configuration enables, so the rows go at the
    /// agent's next start, once every sink it enables has them.
    pub fn commit_export(
        &self,
        sink: &str,
        seq: u64,
        state: &[u8],
        mark: &ExportMark,
    ) -> Result<(), JournalError> {
        self.live()?;
        let mut cursor = u64_key(seq).to_vec();
        cursor.extend_from_slice(state);
        let mark = serde_json::to_vec(mark).expect("export mark serialises");
        (&*self.sinks, &*self.meta)
            .transaction(|(sinks_t, meta_t)| {
                tx_put(sinks_t, sink.as_bytes(), &cursor)?;
                tx_put(meta_t, LAST_EXPORT, &mark)?;
                Ok(())
            })
            .map_err(|e| self.tx_err("record the export", e))?;
        self.flush()
    }

    /// The record of bundle `id`, if it was imported here.
    pub fn imported(&self, id: &str) -> Result<Option<ImportRecord>, JournalError> {
        match self.get(&self.imports, &bundle_key(id), "read imports")? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("import record of bundle {id}"), e)),
        }
    }

    /// How far rows of the source journal `journal_id` have been imported.
    pub fn import_source(&self, journal_id: &str) -> Result<Option<SourceMark>, JournalError> {
        match self.get(&self.imports, &source_key(journal_id), "read imports")? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.corrupt(format!("import mark of journal {journal_id}"), e)),
        }
    }

    /// Every bundle imported here, in bundle id order.
    pub fn imports(&self) -> Result<Vec<ImportRecord>, JournalError> {
        let mut out = Vec::new();
        for item in self.imports.scan_prefix(BUNDLE_PREFIX) {
            let (k, v) = item.map_err(self.io("read imports"))?;
            let v = super::codec::unseal(&k, &v).map_err(|e| {
                self.corrupt(format!("import record {}", String::from_utf8_lossy(&k)), e)
            })?;
            out.push(serde_json::from_slice(v).map_err(|e| {
                self.corrupt(format!("import record {}", String::from_utf8_lossy(&k)), e)
            })?);
        }
        Ok(out)
    }

    /// Appends imported rows and records their bundle in one transaction.
    ///
    /// `blocks` are journal block values ([`super::codec::encode_block`]),
    /// appended in order; `record` describes them, its `local_*` fields are
    /// filled in here. A bundle already recorded, or one not past what its
    /// source journal already brought, aborts the transaction: nothing is
    /// written. Returns the completed record.
    pub fn commit_import(
        &self,
        blocks: &[&[u8]],
        record: ImportRecord,
    ) -> Result<ImportRecord, JournalError> {
        self.live()?;
        let mut count = 0u64;
        for (i, block) in blocks.iter().enumerate() {
            match block_len(block) {
                Some(n) if n > 0 => count += n,
                _ => {
                    return Err(self.corrupt(
                        format!("imported block {i} of bundle {}", record.bundle_id),
                        "no row count",
                    ))
                }
            }
        }
        if count != record.rows || count == 0 {
            return Err(self.corrupt(
                format!("import of bundle {}", record.bundle_id),
                format!("{count} rows in the blocks, {} in the record", record.rows),
            ));
        }
        let bundle = bundle_key(&record.bundle_id);
        let source = source_key(&record.source_journal);
        let mark = serde_json::to_vec(&SourceMark {
            last: record.last,
            bundle_id: record.bundle_id.clone(),
        })
        .expect("source mark serialises");
        // The blocks go to the segment files first, their locations into
        // the transaction, under the segments' lock (segments.rs). Should
        // the transaction refuse the bundle, the bytes appended are
        // recorded nowhere: later blocks go after them, and they go with
        // their segment (or the next open cuts them off).
        let mut segments = self.segments.lock();
        let first = self.meta_u64(NEXT_SEQ)?.max(1);
        let mut placed = Vec::with_capacity(blocks.len());
        let mut next = first;
        for block in blocks {
            let loc = segments
                .append(&self.segments, next, block)
                .map_err(|e| self.segment_error("import rows", e))?;
            placed.push((next, loc));
            next += block_len(block).unwrap_or_default();
        }
        let done = (&*self.blocks, &*self.meta, &*self.imports)
            .transaction(|(blocks_t, meta_t, imports_t)| {
                if imports_t.get(&bundle)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(TxAbort::Refused(
                        format!("bundle {} is already imported", record.bundle_id),
                    )));
                }
                if let Some(v) = tx_get(imports_t, &source)? {
                    let had: SourceMark = serde_json::from_slice(&v).map_err(|e| {
                        ConflictableTransactionError::Abort(TxAbort::Damaged {
                            what: format!("import mark of journal {}", record.source_journal),
                            detail: e.to_string(),
                        })
                    })?;
                    if had.last >= record.first {
                        return Err(ConflictableTransactionError::Abort(TxAbort::Refused(
                            format!(
                                "rows up to #{} of journal {} are already imported",
                                had.last, record.source_journal
                            ),
                        )));
                    }
                }
                if tx_u64(meta_t, NEXT_SEQ)?.max(1) != first {
                    return Err(ConflictableTransactionError::Abort(TxAbort::Refused(
                        "rows were committed meanwhile".into(),
                    )));
                }
                let mut bytes = tx_u64(meta_t, STORED_BYTES)?;
                for (seq, loc) in &placed {
                    bytes += loc.len;
                    tx_put(blocks_t, &u64_key(*seq), &loc.encode())?;
                }
                let mut done = record.clone();
                done.local_first = first;
                done.local_last = next - 1;
                tx_put(meta_t, NEXT_SEQ, &u64_key(next))?;
                tx_put(meta_t, STORED_BYTES, &u64_key(bytes))?;
                tx_put(
                    imports_t,
                    &bundle,
                    &serde_json::to_vec(&done).expect("import record serialises"),
                )?;
                tx_put(imports_t, &source, &mark)?;
                Ok(done)
            })
            .map_err(|e| self.tx_err("import rows", e))?;
        drop(segments);
        self.last_seq.send_replace(done.local_last);
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::encode_block;
    use super::super::tests::row;
    use super::*;
    use crate::row::Row;

    fn record(id: &str, first: u64, last: u64) -> ImportRecord {
        ImportRecord {
            bundle_id: id.into(),
            source_host: "h".into(),
            source_store: "/s".into(),
            source_journal: "j".into(),
            first,
            last,
            rows: last - first + 1,
            local_first: 0,
            local_last: 0,
            imported_at: 0,
        }
    }

    #[test]
    fn the_journal_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["a"]).unwrap();
        let id = j.journal_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(j.journal_id().unwrap(), id);
        drop(j);
        let j = Journal::open(dir.path(), &["a"]).unwrap();
        assert_eq!(j.journal_id().unwrap(), id, "survives reopening");
    }

    #[test]
    fn an_import_appends_rows_and_its_record_together_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["a"]).unwrap();
        let b1 = encode_block(&[row(1), row(2)]);
        let b2 = encode_block(&[row(3)]);
        let done = j.commit_import(&[&b1, &b2], record("B1", 10, 12)).unwrap();
        assert_eq!((done.local_first, done.local_last), (1, 3));
        assert_eq!(j.last_seq().unwrap(), 3);
        assert_eq!(*j.subscribe_rows().borrow(), 3);
        assert_eq!(
            j.stored_bytes().unwrap(),
            2 * (12 + 4) + (b1.len() + b2.len()) as u64,
            "record headers, blocks and their checksums"
        );
        let rows: Vec<Row> = j
            .read_after(0, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.row.into_row())
            .collect();
        assert_eq!(rows, [row(1), row(2), row(3)]);
        assert_eq!(j.imported("B1").unwrap(), Some(done.clone()));
        assert_eq!(j.imports().unwrap(), [done]);
        assert_eq!(j.import_source("j").unwrap().unwrap().last, 12);

        let before = (j.last_seq().unwrap(), j.stored_bytes().unwrap());
        let again = j.commit_import(&[&b2], record("B1", 13, 13));
        assert!(again.unwrap_err().to_string().contains("already imported"));
        let older = j.commit_import(&[&b2], record("B0", 12, 12));
        assert!(older.unwrap_err().to_string().contains("#12"));
        assert_eq!(
            (j.last_seq().unwrap(), j.stored_bytes().unwrap()),
            before,
            "a refused import writes nothing"
        );
        j.ack("a", 3, vec![]).unwrap();
        assert_eq!(j.stored_bytes().unwrap(), 0, "accounting stays exact");
    }

    #[test]
    fn an_export_moves_the_cursor_and_records_itself_together() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), &["wandb"]).unwrap();
        assert!(j.has_cursor("wandb").unwrap() && !j.has_cursor("x").unwrap());
        let b = encode_block(&[row(1), row(2)]);
        j.commit_import(&[&b], record("B", 1, 2)).unwrap();
        assert_eq!(j.last_export().unwrap(), None);
        let mark = ExportMark {
            bundle_id: "E".into(),
            first: 1,
            last: 2,
        };
        j.commit_export("wandb", 2, b"state", &mark).unwrap();
        assert_eq!(j.last_export().unwrap(), Some(mark));
        assert_eq!(j.cursor("wandb").unwrap().state, b"state");
        assert!(
            j.stored_bytes().unwrap() > 0,
            "nothing is deleted by the export"
        );
        drop(j);
        let j = Journal::open(dir.path(), &["wandb"]).unwrap();
        assert_eq!(
            j.stored_bytes().unwrap(),
            0,
            "but at the agent's next start"
        );
    }
}
