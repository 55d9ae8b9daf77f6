//! "Run X finished with code N" (the hook init mode uses): the W&B sink,
//! driven through the library API, sends `complete` with that exit code
//! once the run's rows are delivered; a later code replaces an idle finish.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mosaic_shipper::config::{Toggle, WandbSinkConfig};
use mosaic_shipper::journal::FileState;
use mosaic_shipper::journal::Journal;
use mosaic_shipper::row::Row;
use mosaic_shipper::sink::wandb::{resolve, WandbSink};
use mosaic_shipper::sink::{self, Mode, RunOptions};
use mosaic_shipper::stats::Counters;
use support::harness::KEY;
use support::standin::StandIn;

async fn wait(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A sink session on its own journal holding `rows`, against `standin`.
struct Session {
    _tmp: tempfile::TempDir,
    mode: tokio::sync::watch::Sender<Mode>,
    task: tokio::task::JoinHandle<Result<(), mosaic_shipper::sink::SinkError>>,
    finish: mosaic_shipper::sink::wandb::FinishHandle,
}

impl Session {
    fn start(standin: &StandIn, rows: &[Row], idle_finish_secs: u64) -> Session {
        let tmp = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&tmp.path().join("store"), &["wandb"]).unwrap());
        let file = FileState {
            id: 1,
            path: "worker.log".into(),
            dev: 0,
            ino: 0,
            fp_len: 0,
            fp: 0,
            offset: 10,
            ..FileState::default()
        };
        journal
            .commit_ingest(&file, rows, &Counters::default())
            .unwrap();
        let cfg = WandbSinkConfig {
            enabled: Toggle::On,
            base_url: Some(standin.base_url()),
            project: Some("mosaic-test".into()),
            idle_finish_secs,
            retry_initial_ms: 50,
            retry_max_ms: 200,
            ..WandbSinkConfig::default()
        };
        let home = tmp.path().display().to_string();
        let settings = resolve(&cfg, &|k| match k {
            "WANDB_API_KEY" => Some(KEY.to_string()),
            "HOME" => Some(home.clone()),
            _ => None,
        });
        let (sink, finish) = WandbSink::new(settings).unwrap();
        let (mode, mode_rx) = tokio::sync::watch::channel(Mode::Run);
        let options = RunOptions {
            batch_rows: 100,
            flush_interval: Duration::from_millis(50),
            flush_when_caught_up: false,
            tick_interval: Some(Duration::from_millis(100)),
            give_up_after: None,
            ..RunOptions::default()
        };
        let task = tokio::spawn(sink::run(sink, journal, options, mode_rx));
        Session {
            _tmp: tmp,
            mode,
            task,
            finish,
        }
    }

    async fn stop(self) {
        self.mode
            .send(Mode::Drain {
                until: Instant::now(),
            })
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_finished_sends_complete_with_the_exit_code() {
    let standin = StandIn::start();
    let rows: Vec<Row> = (0..10)
        .map(|i| Row {
            run_id: "01JDAE00000000000000000001".into(),
            step: i,
            wall_time: 1_795_000_000.0 + i as f64,
            values: BTreeMap::from([("loss".to_string(), 1.0 / (i + 1) as f64)]),
            event: None,
            origin: Default::default(),
        })
        .collect();
    let session = Session::start(&standin, &rows, 1);
    let run = "01jdae00000000000000000001";

    // Idle for a second: finished with 0 (nothing better is known)...
    wait(Duration::from_secs(30), "the idle finish", || {
        standin
            .runs()
            .get(run)
            .is_some_and(|r| r.history.len() == 10 && r.exit_code == Some(0))
    })
    .await;
    // ...then the worker's real exit code arrives and replaces it.
    session.finish.run_finished("01JDAE00000000000000000001", 3);
    wait(Duration::from_secs(30), "complete with exit code 3", || {
        standin
            .runs()
            .get(run)
            .is_some_and(|r| r.exit_code == Some(3))
    })
    .await;
    let completes = standin
        .requests()
        .iter()
        .filter(|r| r.is_file_stream() && r.json()["complete"] == true)
        .count();
    assert_eq!(completes, 2);
    session.stop().await;
}

/// The worker's own records about its run: a config record reaches W&B as
/// the run's config (W&B's `{"key": {"value": ...}}` form, in UpsertBucket
/// and config.yaml), a run-finished record as `complete` with its exit
/// code — after every row before it is delivered, and with no idle wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_and_run_finished_records_reach_wandb() {
    use mosaic_shipper::row::RunEvent;
    let standin = StandIn::start();
    let mosaic = "01JDAE00000000000000000002";
    let event = |e: RunEvent| Row {
        run_id: mosaic.into(),
        step: 0,
        wall_time: 1_795_000_000.0,
        values: BTreeMap::new(),
        event: Some(e),
        origin: Default::default(),
    };
    let mut rows = vec![event(RunEvent::Config(
        r#"{"learning_rate": 0.00025, "env_id": "CartPole-v1", "net": {"hidden": [64, 64]}}"#
            .into(),
    ))];
    rows.extend((1..=5).map(|i| Row {
        run_id: mosaic.into(),
        step: i,
        wall_time: 1_795_000_000.0 + i as f64,
        values: BTreeMap::from([("charts/episodic_return".to_string(), i as f64)]),
        event: None,
        origin: Default::default(),
    }));
    rows.push(event(RunEvent::Finished(3)));
    let session = Session::start(&standin, &rows, 0);
    let run = "01jdae00000000000000000002";
    wait(Duration::from_secs(30), "complete with exit code 3", || {
        standin
            .runs()
            .get(run)
            .is_some_and(|r| r.exit_code == Some(3))
    })
    .await;
    let record = standin.runs()[run].clone();
    assert_eq!(
        record.history.len(),
        5,
        "event records are not history lines"
    );
    let upserts: Vec<_> = standin
        .requests()
        .into_iter()
        .filter(|r| r.operation().as_deref() == Some("UpsertBucket"))
        .collect();
    let last = upserts.last().expect("an UpsertBucket").json();
    let config: serde_json::Value =
        serde_json::from_str(last["variables"]["config"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["learning_rate"],
        serde_json::json!({"value": 0.00025})
    );
    assert_eq!(
        config["env_id"],
        serde_json::json!({"value": "CartPole-v1"})
    );
    assert_eq!(
        config["net"],
        serde_json::json!({"value": {"hidden": [64, 64]}})
    );
    assert!(config["_wandb"]["value"]["t"].is_object());
    session.stop().await;
}

/// Init mode: when the worker (CMD) exits with 3, the agent ships its
/// logs, marks the W&B run complete with exit code 3, and exits with 3.
#[test]
fn init_mode_marks_the_run_complete_with_the_workers_exit_code() {
    use support::harness::{self, agent, assert_history, gen_logs, wait_child, write_config};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAE00000000000000000003";
    let expected = gen_logs(dir, run, 40, 5);
    let config = write_config(dir, &standin.base_url(), "");
    let mut child = harness::spawn(&mut agent(dir, &config, &["--", "sh", "-c", "exit 3"]));
    let status = wait_child(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(3), "{}", harness::stderr_logs(dir));
    let runs = standin.runs();
    let record = &runs[&harness::wandb_id(run)];
    assert_history(record, &expected);
    assert_eq!(record.exit_code, Some(3), "{}", harness::stderr_logs(dir));
}
