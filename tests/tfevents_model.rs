//! Model-based test of `tfrecord::split` as a follower of a live event file
//! uses it: a writer appends records that become visible in random chunk
//! sizes, some with a byte flipped (a corrupt length or data checksum) and
//! some over the record limit; a reader keeps nothing across a restart but
//! its committed offset, reads what it can see (all of it or a bounded
//! window) and commits at random points.
//!
//! The rules checked, once the writer has finished (with one last good
//! record, so that damage at the end is resolved):
//! - every good record comes out exactly once, in file order, at its offset;
//! - each run of consecutive bad records comes out once, as damage from the
//!   run's first byte to the next good record (a single bad record: its own
//!   bytes), possibly in adjacent pieces;
//! - nothing after damage is lost (the good records after it are there).

use mosaic_shipper::format::tfrecord::{append_record, min_window, split, OVERHEAD};
use proptest::prelude::*;

const MAX_RECORD: usize = 256;

#[derive(Debug, Clone)]
enum Op {
    /// Append a record with `len` bytes of data; `flip` damages the byte
    /// at that position of the frame (modulo its size).
    Append {
        len: usize,
        flip: Option<(usize, u8)>,
    },
    /// Make `n` more written bytes visible to the reader.
    Show(usize),
    /// Read from the working offset: everything visible, or a window of
    /// at least `max_record + OVERHEAD + 12` bytes.
    Read {
        window: Option<usize>,
    },
    Commit,
    /// Forget everything but the committed offset and what was delivered.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop_oneof![20 => 0usize..200, 1 => 257usize..600],
              prop::option::weighted(0.15, (any::<usize>(), 1u8..=255)))
            .prop_map(|(len, flip)| Op::Append { len, flip }),
        5 => prop_oneof![1usize..20, 20usize..400].prop_map(Op::Show),
        4 => prop::option::of(MAX_RECORD + OVERHEAD + 12..2000usize).prop_map(|window| Op::Read { window }),
        2 => Just(Op::Commit),
        1 => Just(Op::Restart),
    ]
}

/// What the reader delivers, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Record { offset: u64, data: Vec<u8> },
    Damage { offset: u64, end: u64 },
}

impl Item {
    fn offset(&self) -> u64 {
        match self {
            Item::Record { offset, .. } | Item::Damage { offset, .. } => *offset,
        }
    }
}

struct Writer {
    file: Vec<u8>,
    visible: usize,
    /// (offset, data, good, one piece) of every record appended; "one
    /// piece": a bad record that, alone between good ones, must be reported
    /// as a single damage (all but an over-long record with a damaged
    /// header, which is garbage longer than a maximal frame).
    records: Vec<(u64, Vec<u8>, bool, bool)>,
    seed: u8,
}

impl Writer {
    fn append(&mut self, len: usize, flip: Option<(usize, u8)>) {
        let offset = self.file.len();
        self.seed = self.seed.wrapping_add(1);
        let seed = self.seed;
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).rotate_left(3) ^ 0x5a)
            .collect();
        append_record(&mut self.file, &data);
        if let Some((at, x)) = flip {
            let at = offset + at % (len + OVERHEAD);
            self.file[at] ^= x;
        }
        let good = flip.is_none() && len <= MAX_RECORD;
        let one_piece =
            len <= MAX_RECORD || flip.map_or(true, |(at, _)| at % (len + OVERHEAD) >= 12);
        self.records.push((offset as u64, data, good, one_piece));
    }

    /// The model's output: good records, and one damage range per run of
    /// bad records.
    fn expected(&self) -> Vec<Item> {
        let mut out = Vec::new();
        let mut run_start = None;
        for (offset, data, good, _) in &self.records {
            if *good {
                if let Some(start) = run_start.take() {
                    out.push(Item::Damage {
                        offset: start,
                        end: *offset,
                    });
                }
                out.push(Item::Record {
                    offset: *offset,
                    data: data.clone(),
                });
            } else if run_start.is_none() {
                run_start = Some(*offset);
            }
        }
        assert!(run_start.is_none(), "the last record is good");
        out
    }

    /// The damage of every lone bad record that must come in one piece.
    fn lone(&self) -> Vec<Item> {
        let r = &self.records;
        (1..r.len().saturating_sub(1))
            .filter(|&i| !r[i].2 && r[i].3 && r[i - 1].2 && r[i + 1].2)
            .map(|i| Item::Damage {
                offset: r[i].0,
                end: r[i + 1].0,
            })
            .collect()
    }
}

#[derive(Default)]
struct Reader {
    committed: u64,
    delivered: Vec<Item>,
    working: u64,
    pending: Vec<Item>,
}

impl Reader {
    fn read(&mut self, w: &Writer, window: Option<usize>) {
        let start = self.working as usize;
        if start >= w.visible {
            return;
        }
        let end = window.map_or(w.visible, |n| w.visible.min(start + n));
        let buf = &w.file[start..end];
        let s = split(buf, self.working, MAX_RECORD);
        let mut items: Vec<Item> = s
            .frames
            .iter()
            .map(|f| Item::Record {
                offset: f.offset,
                data: buf[f.data.clone()].to_vec(),
            })
            .chain(s.damage.iter().map(|d| Item::Damage {
                offset: d.offset,
                end: d.end,
            }))
            .collect();
        items.sort_by_key(Item::offset);
        self.pending.extend(items);
        self.working += s.consumed;
    }

    fn commit(&mut self) {
        self.delivered.append(&mut self.pending);
        self.committed = self.working;
    }

    fn restart(&mut self) {
        self.pending.clear();
        self.working = self.committed;
    }

    /// Delivered items with adjacent damage pieces joined.
    fn merged(&self) -> Vec<Item> {
        let mut out: Vec<Item> = Vec::new();
        for item in &self.delivered {
            if let (Some(Item::Damage { end: prev_end, .. }), Item::Damage { offset, end }) =
                (out.last_mut(), item)
            {
                if *prev_end == *offset {
                    *prev_end = *end;
                    continue;
                }
            }
            out.push(item.clone());
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn every_good_record_once_every_damage_once(ops in prop::collection::vec(op(), 1..80)) {
        let mut w = Writer { file: Vec::new(), visible: 0, records: Vec::new(), seed: 0 };
        let mut r = Reader::default();
        for op in &ops {
            match op {
                Op::Append { len, flip } => w.append(*len, *flip),
                Op::Show(n) => w.visible = (w.visible + n).min(w.file.len()),
                Op::Read { window } => r.read(&w, *window),
                Op::Commit => r.commit(),
                Op::Restart => r.restart(),
            }
        }
        // The writer finishes with a good record; everything becomes visible.
        w.append(10, None);
        w.visible = w.file.len();
        r.read(&w, None);
        r.commit();
        prop_assert_eq!(r.working, w.file.len() as u64);
        let expected = w.expected();
        let got = r.merged();
        prop_assert_eq!(&got, &expected);
        // Nothing was reported twice, and a lone bad record in one piece.
        prop_assert!(r.delivered.windows(2).all(|p| p[0].offset() < p[1].offset()));
        for lone in w.lone() {
            prop_assert!(r.delivered.contains(&lone), "{:?} not in one piece: {:?}", lone, r.delivered);
        }
    }
}

/// The model test's generator reaches the interesting cases: a
/// deterministic run with each kind of damage, read in small windows with
/// restarts, delivering what the model says.
#[test]
fn each_kind_of_damage_with_restarts() {
    let mut w = Writer {
        file: Vec::new(),
        visible: 0,
        records: Vec::new(),
        seed: 0,
    };
    w.append(5, None);
    w.append(40, Some((3, 0xff))); // length
    w.append(7, None);
    w.append(30, Some((20, 1))); // data
    w.append(300, None); // over the limit
    w.append(0, None);
    w.append(50, Some((9, 4))); // length checksum
    w.append(60, Some((70, 8))); // data checksum, right after
    w.append(9, None);
    let mut r = Reader::default();
    let window = Some(min_window(MAX_RECORD));
    while w.visible < w.file.len() {
        w.visible = (w.visible + 37).min(w.file.len());
        r.read(&w, window);
        r.read(&w, window);
        if w.visible % 3 == 0 {
            r.restart();
        } else {
            r.commit();
        }
    }
    for _ in 0..10 {
        r.read(&w, window);
    }
    r.commit();
    assert_eq!(r.merged(), w.expected());
    assert_eq!(
        w.lone().len(),
        1,
        "the length-damaged record between good ones"
    );
    for lone in w.lone() {
        assert!(r.delivered.contains(&lone), "{:?}", r.delivered);
    }
    let damage = w
        .expected()
        .iter()
        .filter(|i| matches!(i, Item::Damage { .. }))
        .count();
    assert_eq!(damage, 3, "{:?}", w.expected());
}
