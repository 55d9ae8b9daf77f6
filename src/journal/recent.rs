//! The row blocks committed or read last, decoded, for the sinks to share.
//!
//! Every sink reads every block. Without this each of them read the block
//! back from its segment file and decoded it into rows of its own, while
//! the ingest had just dropped the same rows after encoding them: with
//! three sinks a row was built four times. Caught-up sinks read the block
//! the ingest has just committed, so the newest commit or two are enough; a sink
//! that lags reads from the segment files as before, and what it decodes is
//! kept here for the sinks after it.
//!
//! A block is known by its first sequence number, which names the same
//! rows for as long as the journal is open (sequence numbers are never
//! reused), and by its row count, checked on every hit.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::row::Row;

/// Rows kept after a sink's read: one full commit (one commit is one
/// block of at most 2,048 rows), enough for sinks that are caught up.
pub(super) const KEEP_ROWS: usize = 2048;
/// Rows the ingest may add before it trims them itself: trimming is the
/// sinks' work (the rows are freed on their threads, not the ingest's),
/// unless no sink reads. Rows cost a few hundred bytes each in memory.
const KEEP_UNREAD_ROWS: usize = 2 * KEEP_ROWS;

/// See the module documentation.
#[derive(Default)]
pub(super) struct Recent {
    /// By first sequence number.
    blocks: Mutex<VecDeque<(u64, Arc<Vec<Row>>)>>,
}

impl Recent {
    /// The block of `rows` rows that starts at sequence number `first`, if
    /// it is here.
    pub(super) fn get(&self, first: u64, rows: u64) -> Option<Arc<Vec<Row>>> {
        let blocks = self.blocks.lock().expect("recent blocks lock");
        blocks
            .iter()
            .rev()
            .find(|(f, b)| *f == first && b.len() as u64 == rows)
            .map(|(_, b)| b.clone())
    }

    /// Keeps the rows the ingest has just committed from `first` on (the
    /// newest rows there are).
    pub(super) fn committed(&self, first: u64, rows: Arc<Vec<Row>>) {
        let evicted = {
            let mut blocks = self.blocks.lock().expect("recent blocks lock");
            blocks.push_back((first, rows));
            trim(&mut blocks, KEEP_UNREAD_ROWS)
        };
        drop(evicted);
    }

    /// Keeps a block a sink has read from its segment file.
    pub(super) fn read(&self, first: u64, rows: Arc<Vec<Row>>) {
        let mut blocks = self.blocks.lock().expect("recent blocks lock");
        // In sequence order, so that trimming drops the oldest rows: a
        // sink that lags is the one that decodes.
        let at = blocks.partition_point(|(f, _)| *f < first);
        if !matches!(blocks.get(at), Some((f, _)) if *f == first) {
            blocks.insert(at, (first, rows));
        }
    }

    /// Takes out the oldest blocks past the few kept, on a sink's thread
    /// (after its read): the rows evicted are freed here, outside the lock.
    pub(super) fn trim(&self) {
        let evicted = {
            let mut blocks = self.blocks.lock().expect("recent blocks lock");
            trim(&mut blocks, KEEP_ROWS)
        };
        drop(evicted);
    }
}

/// Takes the oldest blocks (the lowest sequence numbers) out until the
/// rest hold at most `keep` rows; the newest block stays, whatever its
/// size.
fn trim(blocks: &mut VecDeque<(u64, Arc<Vec<Row>>)>, keep: usize) -> Vec<Arc<Vec<Row>>> {
    let mut rows: usize = blocks.iter().map(|(_, b)| b.len()).sum();
    let mut evicted = Vec::new();
    while rows > keep && blocks.len() > 1 {
        let (_, b) = blocks.pop_front().expect("more than one block");
        rows -= b.len();
        evicted.push(b);
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(n: usize) -> Arc<Vec<Row>> {
        let row = Row {
            run_id: "r".into(),
            step: 0,
            wall_time: 0.0,
            values: Default::default(),
            event: None,
            origin: Default::default(),
        };
        Arc::new(vec![row; n])
    }

    #[test]
    fn a_block_is_found_by_first_sequence_number_and_row_count() {
        let r = Recent::default();
        r.committed(1, block(3));
        assert!(r.get(1, 3).is_some());
        assert!(r.get(1, 2).is_none(), "row count differs");
        assert!(r.get(4, 3).is_none());
    }

    #[test]
    fn readers_trim_to_keep_and_the_ingest_only_past_its_bound() {
        let r = Recent::default();
        let size = 1000;
        let n = (KEEP_UNREAD_ROWS / size) as u64;
        for i in 0..n + 3 {
            r.committed(i * 10 + 1, block(size));
        }
        let held = |r: &Recent| {
            r.blocks
                .lock()
                .unwrap()
                .iter()
                .map(|(_, b)| b.len())
                .sum::<usize>()
        };
        assert_eq!(held(&r), n as usize * size);
        r.trim();
        assert_eq!(held(&r), KEEP_ROWS / size * size);
        let left: Vec<u64> = r.blocks.lock().unwrap().iter().map(|(f, _)| *f).collect();
        // The newest are kept.
        assert_eq!(*left.last().unwrap(), (n + 2) * 10 + 1);
        // A block read again is not added twice.
        r.read(*left.last().unwrap(), block(size));
        assert_eq!(r.blocks.lock().unwrap().len(), left.len());
        // One block larger than the bound stays.
        r.committed(9999, block(KEEP_UNREAD_ROWS + 1));
        r.trim();
        assert_eq!(held(&r), KEEP_UNREAD_ROWS + 1);
    }
}
