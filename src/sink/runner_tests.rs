//! The runner's handling of a refused run, with a sink that refuses one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::row::Row;

/// Takes every row except those of the runs in `refuse`; what it took,
/// by run, is in `taken` (flushed rows only).
struct Picky {
    refuse: Arc<Mutex<HashSet<String>>>,
    taken: Arc<Mutex<BTreeMap<String, Vec<i64>>>>,
    written: Vec<(String, i64)>,
}

impl Sink for Picky {
    fn name(&self) -> &'static str {
        "picky"
    }
    async fn recover(&mut self, _state: &[u8]) -> Result<(), SinkError> {
        self.written.clear();
        Ok(())
    }
    async fn write(&mut self, entries: &[Entry], _c: &Checkpoint) -> Result<(), SinkError> {
        for e in entries {
            if self.refuse.lock().unwrap().contains(&e.row.run_id) {
                return Err(SinkError::Refused {
                    run: e.row.run_id.clone(),
                    reason: "HTTP 404".into(),
                });
            }
            self.written.push((e.row.run_id.clone(), e.row.step));
        }
        Ok(())
    }
    async fn flush(&mut self) -> Result<Vec<u8>, SinkError> {
        let mut taken = self.taken.lock().unwrap();
        for (run, step) in self.written.drain(..) {
            taken.entry(run).or_default().push(step);
        }
        Ok(Vec::new())
    }
}

fn row(run: &str, step: i64) -> Row {
    Row {
        run_id: run.into(),
        step,
        wall_time: 1.0,
        values: [("x".to_string(), 1.0)].into_iter().collect(),
        event: None,
        origin: Default::default(),
    }
}

async fn drain(journal: &Arc<Journal>, sink: &Picky) {
    let sink = Picky {
        refuse: sink.refuse.clone(),
        taken: sink.taken.clone(),
        written: Vec::new(),
    };
    let (_tx, rx) = watch::channel(Mode::Drain {
        until: Instant::now() + Duration::from_secs(30),
    });
    let options = RunOptions {
        give_up_after: Some(3),
        ..RunOptions::default()
    };
    run(sink, journal.clone(), options, rx).await.unwrap();
}

#[tokio::test]
async fn a_refused_run_is_set_aside_and_the_others_flow_then_retry_delivers_it() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(dir.path(), &["picky"]).unwrap());
    let rows: Vec<Row> = (1..=6)
        .map(|i| row(if i % 2 == 0 { "bad" } else { "good" }, i))
        .collect();
    journal.commit_events(&rows).unwrap();
    let sink = Picky {
        refuse: Arc::new(Mutex::new(["bad".to_string()].into())),
        taken: Arc::default(),
        written: Vec::new(),
    };
    drain(&journal, &sink).await;
    assert_eq!(sink.taken.lock().unwrap()["good"], [1, 3, 5]);
    assert!(!sink.taken.lock().unwrap().contains_key("bad"));
    assert_eq!(
        journal.cursor("picky").unwrap().seq,
        6,
        "the cursor passed them"
    );
    let aside = journal.set_aside_runs(Some("picky")).unwrap();
    assert_eq!(aside.len(), 1);
    assert_eq!((aside[0].run.as_str(), aside[0].rows), ("bad", 3));
    assert!(aside[0].reason.contains("HTTP 404"), "{}", aside[0].reason);

    // Later rows of the refused run are set aside without asking the sink.
    journal
        .commit_events(&[row("bad", 7), row("good", 8)])
        .unwrap();
    sink.refuse.lock().unwrap().clear();
    drain(&journal, &sink).await;
    assert_eq!(sink.taken.lock().unwrap()["good"], [1, 3, 5, 8]);
    assert_eq!(journal.set_aside_runs(None).unwrap()[0].rows, 4);

    // A retry that is refused again stays set aside, nothing lost.
    sink.refuse.lock().unwrap().insert("bad".into());
    journal.retry_set_aside(None, Some("bad")).unwrap();
    drain(&journal, &sink).await;
    let aside = journal.set_aside_runs(None).unwrap();
    assert_eq!((aside[0].rows, aside[0].retry), (4, false));

    // Accepted: delivered in order, once, and the run flows again.
    sink.refuse.lock().unwrap().clear();
    journal.retry_set_aside(Some("picky"), None).unwrap();
    drain(&journal, &sink).await;
    assert_eq!(sink.taken.lock().unwrap()["bad"], [2, 4, 6, 7]);
    assert!(journal.set_aside_runs(None).unwrap().is_empty());
    journal.commit_events(&[row("bad", 9)]).unwrap();
    drain(&journal, &sink).await;
    assert_eq!(sink.taken.lock().unwrap()["bad"], [2, 4, 6, 7, 9]);
}
