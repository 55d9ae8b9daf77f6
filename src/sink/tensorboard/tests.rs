use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;

use super::*;
use crate::format::tensorboard_proto::{event, summary_value, Event};
use crate::format::tfrecord;
use crate::journal::Journal;
use crate::row::{Row, RowRef};

fn entry(seq: u64, run: &str, step: i64, v: f64) -> Entry {
    Entry {
        seq,
        row: RowRef::new(Row {
            run_id: run.into(),
            step,
            wall_time: 1_700_000_000.0 + seq as f64 / 8.0,
            values: BTreeMap::from([
                ("charts/SPS".to_string(), v),
                ("losses/value_loss".to_string(), -v),
            ]),
            event: None,
            origin: Default::default(),
        }),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    journal: Arc<Journal>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let journal = Arc::new(Journal::open(&root.join("store"), &["tensorboard"]).unwrap());
        Fixture {
            _dir: dir,
            root,
            journal,
        }
    }

    fn sink(&self, max_open: usize) -> TensorBoardSink {
        let template = self.root.join("runs/{run_id}/tb");
        TensorBoardSink::new(template.to_str().unwrap(), max_open)
    }

    fn checkpoint(&self, seq: u64) -> Checkpoint {
        Checkpoint {
            journal: self.journal.clone(),
            name: "tensorboard",
            seq,
        }
    }

    fn saved_state(&self) -> State {
        let c = self.journal.cursor("tensorboard").unwrap();
        serde_json::from_slice(&c.state).unwrap()
    }

    /// (step, values) of every event of `run`'s files, file version first.
    fn events(&self, run: &str) -> Vec<(i64, Vec<(String, f32)>)> {
        let dir = self.root.join("runs").join(run).join("tb");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let bytes = std::fs::read(&name).unwrap();
            for rec in tfrecord::read_records(&bytes).unwrap() {
                let e = Event::decode(rec).unwrap();
                match e.what {
                    Some(event::What::FileVersion(v)) => {
                        assert_eq!(v, "brain.Event:2");
                        out.push((-1, Vec::new()));
                    }
                    Some(event::What::Summary(s)) => out.push((
                        e.step,
                        s.value
                            .into_iter()
                            .map(|v| match v.value {
                                Some(summary_value::Value::Tensor(t)) => (v.tag, t.float_val[0]),
                                other => panic!("{other:?}"),
                            })
                            .collect(),
                    )),
                    None => panic!("empty event"),
                }
            }
        }
        out
    }
}

fn steps(events: &[(i64, Vec<(String, f32)>)]) -> Vec<i64> {
    events.iter().map(|e| e.0).collect()
}

#[tokio::test]
async fn writes_version_then_one_event_per_row() {
    let fx = Fixture::new();
    let mut sink = fx.sink(8);
    sink.recover(&[]).await.unwrap();
    let batch: Vec<_> = (1..=3).map(|i| entry(i, "A", i as i64 * 10, 0.5)).collect();
    sink.write(&batch, &fx.checkpoint(0)).await.unwrap();
    let state = sink.flush().await.unwrap();
    let events = fx.events("A");
    assert_eq!(steps(&events), [-1, 10, 20, 30]);
    assert_eq!(
        events[1].1,
        [
            ("charts/SPS".to_string(), 0.5f32),
            ("losses/value_loss".to_string(), -0.5f32)
        ]
    );
    let state: State = serde_json::from_slice(&state).unwrap();
    let ef = &state[&fx.root.join("runs/A/tb")];
    assert_eq!(ef.len, std::fs::metadata(&ef.file).unwrap().len());
    let name = ef.file.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
}

#[tokio::test]
async fn a_new_file_is_checkpointed_before_it_exists_then_written_at_once() {
    let fx = Fixture::new();
    // B's directory cannot be made (a file is in its way): the write fails
    // where it would create the event file, after the checkpoint.
    std::fs::create_dir_all(fx.root.join("runs/B")).unwrap();
    std::fs::write(fx.root.join("runs/B/tb"), b"in the way").unwrap();
    let mut sink = fx.sink(8);
    sink.recover(&[]).await.unwrap();
    assert!(sink
        .write(&[entry(1, "B", 1, 1.0)], &fx.checkpoint(0))
        .await
        .is_err());
    let saved = fx.saved_state();
    let ef = &saved[&fx.root.join("runs/B/tb")];
    assert_eq!(ef.len, 0);
    assert!(!ef.file.exists());

    let mut sink = fx.sink(8);
    sink.recover(&[]).await.unwrap();
    sink.write(&[entry(1, "A", 1, 1.0)], &fx.checkpoint(0))
        .await
        .unwrap();
    let saved = fx.saved_state();
    let ef = saved[&fx.root.join("runs/A/tb")].clone();
    assert_eq!(ef.len, 0, "recorded before its first byte");
    // Readable before any flush: the flush only makes it durable.
    assert_eq!(fx.events("A").len(), 2, "file version and the row");
    let state: State = serde_json::from_slice(&sink.flush().await.unwrap()).unwrap();
    let on_disk = std::fs::metadata(&ef.file).unwrap().len();
    assert!(on_disk > 0);
    assert_eq!(state[&fx.root.join("runs/A/tb")].len, on_disk);
}

#[tokio::test]
async fn recovery_cuts_uncommitted_and_torn_records_then_rows_appear_once() {
    let fx = Fixture::new();
    let mut sink = fx.sink(8);
    sink.recover(&[]).await.unwrap();
    sink.write(
        &[entry(1, "A", 1, 1.0), entry(2, "B", 1, 1.0)],
        &fx.checkpoint(0),
    )
    .await
    .unwrap();
    let committed = sink.flush().await.unwrap();
    fx.journal.ack("tensorboard", 2, committed.clone()).unwrap();
    // Rows 3 and 4 reach the files, but the agent dies before the commit,
    // in the middle of appending one more record.
    sink.write(
        &[entry(3, "A", 2, 2.0), entry(4, "B", 2, 2.0)],
        &fx.checkpoint(2),
    )
    .await
    .unwrap();
    let after = sink.flush().await.unwrap();
    drop(sink);
    let state: State = serde_json::from_slice(&after).unwrap();
    let a_file = &state[&fx.root.join("runs/A/tb")].file;
    let mut torn = Vec::new();
    Encoder::default().row(&mut torn, &entry(5, "A", 3, 3.0).row);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(a_file)
        .unwrap();
    std::io::Write::write_all(&mut f, &torn[..torn.len() / 2]).unwrap();

    let mut sink = fx.sink(8);
    sink.recover(&fx.journal.cursor("tensorboard").unwrap().state)
        .await
        .unwrap();
    assert_eq!(steps(&fx.events("A")), [-1, 1], "cut back to the commit");
    sink.write(
        &[
            entry(3, "A", 2, 2.0),
            entry(4, "B", 2, 2.0),
            entry(5, "A", 3, 3.0),
        ],
        &fx.checkpoint(2),
    )
    .await
    .unwrap();
    sink.flush().await.unwrap();
    assert_eq!(steps(&fx.events("A")), [-1, 1, 2, 3]);
    assert_eq!(steps(&fx.events("B")), [-1, 1, 2]);
    assert_eq!(
        std::fs::read_dir(fx.root.join("runs/A/tb"))
            .unwrap()
            .count(),
        1,
        "a run keeps appending to its file across restarts"
    );
}

#[tokio::test]
async fn a_file_recorded_but_never_flushed_starts_with_the_version_record() {
    let fx = Fixture::new();
    let mut sink = fx.sink(8);
    sink.recover(&[]).await.unwrap();
    sink.write(&[entry(1, "A", 1, 1.0)], &fx.checkpoint(0))
        .await
        .unwrap();
    sink.flush().await.unwrap(); // written, never acknowledged
    drop(sink);
    let mut sink = fx.sink(8);
    sink.recover(&fx.journal.cursor("tensorboard").unwrap().state)
        .await
        .unwrap();
    sink.write(&[entry(1, "A", 1, 1.0)], &fx.checkpoint(0))
        .await
        .unwrap();
    sink.flush().await.unwrap();
    assert_eq!(steps(&fx.events("A")), [-1, 1]);
}

#[tokio::test]
async fn a_removed_file_is_replaced_by_a_new_one() {
    let fx = Fixture::new();
    let mut sink = fx.sink(8);
    sink.recover(&[]).await.unwrap();
    sink.write(&[entry(1, "A", 1, 1.0)], &fx.checkpoint(0))
        .await
        .unwrap();
    let committed = sink.flush().await.unwrap();
    fx.journal.ack("tensorboard", 1, committed).unwrap();
    drop(sink);
    let old = fx.saved_state()[&fx.root.join("runs/A/tb")].file.clone();
    std::fs::remove_file(&old).unwrap();
    let mut sink = fx.sink(8);
    sink.recover(&fx.journal.cursor("tensorboard").unwrap().state)
        .await
        .unwrap();
    sink.write(&[entry(2, "A", 2, 2.0)], &fx.checkpoint(1))
        .await
        .unwrap();
    let new = fx.saved_state()[&fx.root.join("runs/A/tb")].file.clone();
    assert_ne!(old, new, "the replacement is checkpointed");
    sink.flush().await.unwrap();
    assert_eq!(steps(&fx.events("A")), [-1, 2]);
}

#[tokio::test]
async fn more_runs_than_open_files() {
    let fx = Fixture::new();
    let mut sink = fx.sink(2);
    sink.recover(&[]).await.unwrap();
    let mut seq = 0;
    for round in 0..3 {
        let batch: Vec<_> = (0..5)
            .map(|r| {
                seq += 1;
                entry(seq, &format!("run{r}"), round, round as f64)
            })
            .collect();
        sink.write(&batch, &fx.checkpoint(0)).await.unwrap();
        sink.flush().await.unwrap();
        assert!(sink.files.len() <= 2);
    }
    for r in 0..5 {
        assert_eq!(steps(&fx.events(&format!("run{r}"))), [-1, 0, 1, 2]);
    }
}
