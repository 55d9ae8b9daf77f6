//! How W&B runs end: `complete` with the worker's exit code only when the
//! worker ended (a run-finished record, init mode's exit status), failed
//! for any non-zero code; an idle run stops heartbeating and is resumed by
//! later rows; open runs keep their heartbeat across agent restarts. The
//! sink is driven through the library API against the stand-in, the agent
//! as a process for init mode and for comparison with the SDK's recording.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
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
use support::standin::{parse_extended_json, Recorded, StandIn};

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

/// A sink session on a journal in `store` holding `rows`, against
/// `standin`, with heartbeats every [`HEARTBEAT`].
struct Session {
    journal: Arc<Journal>,
    mode: tokio::sync::watch::Sender<Mode>,
    task: tokio::task::JoinHandle<Result<(), mosaic_shipper::sink::SinkError>>,
    finish: mosaic_shipper::sink::wandb::FinishHandle,
}

const HEARTBEAT: Duration = Duration::from_millis(100);

impl Session {
    fn start(standin: &StandIn, store: &Path, rows: &[Row], idle_finish_secs: u64) -> Session {
        let journal = Arc::new(Journal::open(&store.join("store"), &["wandb"]).unwrap());
        let cfg = WandbSinkConfig {
            enabled: Toggle::On,
            base_url: Some(standin.base_url()),
            project: Some("mosaic-test".into()),
            idle_finish_secs,
            retry_initial_ms: 50,
            retry_max_ms: 200,
            ..WandbSinkConfig::default()
        };
        let home = store.display().to_string();
        let mut settings = resolve(&cfg, &|k| match k {
            "WANDB_API_KEY" => Some(KEY.to_string()),
            "HOME" => Some(home.clone()),
            _ => None,
        });
        settings.heartbeat = HEARTBEAT;
        let (sink, finish) = WandbSink::new(settings).unwrap();
        let (mode, mode_rx) = tokio::sync::watch::channel(Mode::Run);
        let options = RunOptions {
            batch_rows: 100,
            flush_interval: Duration::from_millis(50),
            tick_interval: Some(Duration::from_millis(50)),
            give_up_after: None,
            ..RunOptions::default()
        };
        let task = tokio::spawn(sink::run(sink, journal.clone(), options, mode_rx));
        let session = Session {
            journal,
            mode,
            task,
            finish,
        };
        session.add(rows, 10);
        session
    }

    /// Commits `rows` as read from the worker's log up to `offset`.
    fn add(&self, rows: &[Row], offset: u64) {
        if rows.is_empty() {
            return;
        }
        let file = FileState {
            id: 1,
            path: "worker.log".into(),
            dev: 0,
            ino: 0,
            fp_len: 0,
            fp: 0,
            offset,
            ..FileState::default()
        };
        self.journal
            .commit_ingest(
                std::slice::from_ref(&file),
                rows.to_vec(),
                &Counters::default(),
            )
            .unwrap();
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

fn metric_rows(run: &str, steps: std::ops::Range<i64>) -> Vec<Row> {
    steps
        .map(|i| Row {
            run_id: run.into(),
            step: i,
            wall_time: 1_795_000_000.0 + i as f64,
            values: BTreeMap::from([("loss".to_string(), 1.0 / (i + 1) as f64)]),
            event: None,
            origin: Default::default(),
        })
        .collect()
}

fn finished(run: &str, code: i32) -> Row {
    Row {
        run_id: run.into(),
        step: 0,
        wall_time: 1_795_000_100.0,
        values: BTreeMap::new(),
        event: Some(mosaic_shipper::row::RunEvent::Finished(code)),
        origin: Default::default(),
    }
}

/// `(W&B run id, exitcode)` of every file_stream request that completes.
fn completes(reqs: &[Recorded]) -> Vec<(String, i64)> {
    reqs.iter()
        .filter(|r| r.is_file_stream() && r.json().get("complete").is_some())
        .map(|r| {
            let run = r.path.split('/').nth(4).unwrap_or_default().to_string();
            (run, r.json()["exitcode"].as_i64().unwrap())
        })
        .collect()
}

fn upserts(reqs: &[Recorded]) -> usize {
    reqs.iter()
        .filter(|r| r.operation().as_deref() == Some("UpsertBucket"))
        .count()
}

/// A worker that stops logging (it died, or pauses) is not shown as a
/// finished run: after `idle_finish_secs` its heartbeats stop and no
/// `complete` goes out (the server shows it crashed). Rows arriving later
/// resume the same run: announced again, history continued at the next
/// offsets, heartbeats again; its run-finished record then completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_run_is_not_completed_and_later_rows_resume_it() {
    let standin = StandIn::start();
    let tmp = tempfile::tempdir().unwrap();
    let mosaic = "01JDAE00000000000000000001";
    let run = "01jdae00000000000000000001";
    let session = Session::start(&standin, tmp.path(), &metric_rows(mosaic, 0..10), 1);
    wait(Duration::from_secs(30), "rows and heartbeats", || {
        standin
            .runs()
            .get(run)
            .is_some_and(|r| r.history.len() == 10)
            && standin
                .requests()
                .iter()
                .filter(|r| r.is_heartbeat())
                .count()
                >= 2
    })
    .await;
    let last_rows = standin
        .requests()
        .iter()
        .filter(|r| r.is_file_stream() && !r.is_heartbeat())
        .map(|r| r.at)
        .max()
        .unwrap();
    // Idle for the second (a heartbeat decided just before it may still be
    // on its way), then for many heartbeat periods more.
    let quiet_from = last_rows + Duration::from_secs(2);
    let until = quiet_from + 10 * HEARTBEAT;
    for _ in 0..1000 {
        if Instant::now() >= until {
            break;
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
    let before = standin.requests();
    let late = before
        .iter()
        .filter(|r| r.is_heartbeat() && r.at > quiet_from)
        .count();
    assert_eq!(late, 0, "an idle run's heartbeats stop");
    assert!(
        completes(&before).is_empty(),
        "an idle run is not completed"
    );

    // The worker logs again: the same run, history on at offset 10.
    session.add(&metric_rows(mosaic, 10..15), 20);
    wait(Duration::from_secs(30), "the resumed rows", || {
        standin
            .runs()
            .get(run)
            .is_some_and(|r| r.history.len() == 15)
    })
    .await;
    let after = standin.requests()[before.len()..].to_vec();
    assert_eq!(upserts(&after), 1, "the resumed run is announced again");
    let record = standin.runs()[run].clone();
    assert_eq!(record.line_writes, 15, "no line written twice");
    let steps: Vec<i64> = record
        .history
        .iter()
        .map(|(o, l)| {
            let v = parse_extended_json(l);
            assert_eq!(v["_step"].as_u64(), Some(*o), "{l}");
            v["global_step"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(steps, (0..15).collect::<Vec<_>>());
    let resumed_at = after
        .iter()
        .find(|r| r.operation().as_deref() == Some("UpsertBucket"))
        .unwrap()
        .at;
    wait(Duration::from_secs(30), "heartbeats again", || {
        standin
            .requests()
            .iter()
            .any(|r| r.is_heartbeat() && r.at > resumed_at)
    })
    .await;
    assert!(completes(&standin.requests()).is_empty());

    // The worker's run_completed: finished, exit code 0, once.
    session.add(&[finished(mosaic, 0)], 30);
    wait(Duration::from_secs(30), "complete with exit code 0", || {
        standin.runs()[run].exit_code == Some(0)
    })
    .await;
    session.stop().await;
    assert_eq!(completes(&standin.requests()), [(run.to_string(), 0)]);
}

/// A run-finished record with a non-zero code (the lifecycle `run_failed`)
/// completes the run failed with that code, and init mode's exit status 0
/// leaves it failed; a kill after `run_completed` (exit 137) turns the
/// finished run into a failed one. A failure either way wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_win_over_success_from_records_and_exit_codes() {
    let standin = StandIn::start();
    let tmp = tempfile::tempdir().unwrap();
    let (failed, killed) = ("01JDAE0000000000000000000F", "01JDAE0000000000000000000K");
    let (f, k) = (failed.to_ascii_lowercase(), killed.to_ascii_lowercase());
    let mut rows = metric_rows(failed, 0..5);
    rows.push(finished(failed, 1));
    rows.extend(metric_rows(killed, 0..5));
    rows.push(finished(killed, 0));
    let session = Session::start(&standin, tmp.path(), &rows, 0);
    let code = |run: &str| standin.runs().get(run).and_then(|r| r.exit_code);
    wait(Duration::from_secs(30), "both records' completes", || {
        code(&f) == Some(1) && code(&k) == Some(0)
    })
    .await;
    // The workers' processes: exit 0 for the one that logged run_failed,
    // SIGKILL (137) for the one that logged run_completed.
    session.finish.run_finished(failed, 0);
    session.finish.run_finished(killed, 137);
    wait(Duration::from_secs(30), "the kill's exit code", || {
        code(&k) == Some(137)
    })
    .await;
    session.stop().await;
    let mut got = completes(&standin.requests());
    got.sort();
    assert_eq!(got, [(f, 1), (k.clone(), 0), (k, 137)]);
}

/// The agent restarts while a run is open (no end reported, not idle):
/// the new process announces it again and its heartbeats resume without
/// any new row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_run_keeps_its_heartbeat_across_a_restart() {
    let standin = StandIn::start();
    let tmp = tempfile::tempdir().unwrap();
    let mosaic = "01JDAE0000000000000000000R";
    let run = "01jdae0000000000000000000r";
    let first = Session::start(&standin, tmp.path(), &metric_rows(mosaic, 0..10), 1800);
    wait(Duration::from_secs(30), "the rows", || {
        standin
            .runs()
            .get(run)
            .is_some_and(|r| r.history.len() == 10)
    })
    .await;
    first.stop().await;
    let seen = standin.requests().len();
    let second = Session::start(&standin, tmp.path(), &[], 1800);
    wait(
        Duration::from_secs(30),
        "heartbeats after the restart",
        || {
            standin.requests()[seen..]
                .iter()
                .filter(|r| r.is_heartbeat() && r.path.contains(run))
                .count()
                >= 3
        },
    )
    .await;
    second.stop().await;
    let after = &standin.requests()[seen..];
    let upsert = after
        .iter()
        .position(|r| r.operation().as_deref() == Some("UpsertBucket"));
    let heartbeat = after.iter().position(|r| r.is_heartbeat());
    assert!(
        upsert.is_some() && upsert < heartbeat,
        "announced (UpsertBucket) before its heartbeats"
    );
    assert!(
        after
            .iter()
            .all(|r| !r.is_file_stream() || r.is_heartbeat()),
        "nothing but heartbeats: no rows, no complete"
    );
    assert_eq!(standin.runs()[run].history.len(), 10);
    assert_eq!(standin.runs()[run].exit_code, None);
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
    let tmp = tempfile::tempdir().unwrap();
    let session = Session::start(&standin, tmp.path(), &rows, 0);
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

/// The ends recorded from the SDK (tests/fixtures/wandb-sdk-state.json).
fn sdk_end(which: &str) -> serde_json::Value {
    support::sdk::state_fixture()["ends"][which].clone()
}

/// Daemon mode, default rules: a worker's lifecycle `run_failed` (no code
/// in its payload: 1) ends the W&B run as `wandb.finish(exit_code=1)`
/// does, field by field; `run_completed` as `finish(exit_code=0)`.
#[test]
fn lifecycle_ends_match_the_sdks_finish() {
    use support::harness::{self, agent, gen_logs, wait_for, write_config};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (event, code) in [("run_failed", 1), ("run_completed", 0)] {
        let standin = StandIn::start();
        let run = format!("01JDAE0000000000000000{:0>4}", code);
        let expected = gen_logs(dir, &run, 20, 5);
        let config = write_config(dir, &standin.base_url(), "");
        let mut child = harness::spawn(&mut agent(dir, &config, &[]));
        let id = harness::wandb_id(&run);
        wait_for(dir, Duration::from_secs(60), "every row", || {
            standin
                .runs()
                .get(&id)
                .is_some_and(|r| r.history.len() == expected.len())
        });
        harness::lifecycle(dir, &run, event, None);
        wait_for(dir, Duration::from_secs(60), "the run's end", || {
            standin
                .runs()
                .get(&id)
                .is_some_and(|r| r.exit_code.is_some())
        });
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert!(harness::wait_child(&mut child, Duration::from_secs(60)).success());
        let reqs: Vec<Recorded> = standin
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(&id) || r.path == "/graphql")
            .collect();
        assert_eq!(
            support::sdk::run_end(&reqs),
            sdk_end(&format!("finish_exit_code_{code}")),
            "{event}: {}",
            harness::stderr_logs(dir)
        );
        std::fs::remove_dir_all(dir.join("store")).unwrap();
        std::fs::remove_dir_all(dir.join("var")).unwrap();
    }
}

/// Init mode: the worker is killed by SIGKILL. The agent exits with the
/// shell's 137 and the run ends failed with 137, never finished with 0.
/// (The SDK inside a killed worker sends nothing more: the server shows
/// its run crashed once heartbeats stop. The agent, the worker's parent,
/// knows the status.)
#[test]
fn init_mode_sigkill_of_the_worker_is_a_failed_run() {
    use support::harness::{self, agent, assert_history, gen_logs, wait_child, write_config};
    let sigkill = sdk_end("sigkill");
    assert_eq!(
        sigkill["complete_requests"],
        serde_json::json!([]),
        "{sigkill}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAE0000000000000000K137";
    let expected = gen_logs(dir, run, 40, 5);
    let config = write_config(dir, &standin.base_url(), "");
    let mut child = harness::spawn(&mut agent(dir, &config, &["--", "sh", "-c", "kill -9 $$"]));
    let status = wait_child(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(137), "{}", harness::stderr_logs(dir));
    let id = harness::wandb_id(run);
    assert_history(&standin.runs()[&id], &expected);
    let end = support::sdk::run_end(&standin.requests());
    assert_eq!(
        end["complete_requests"],
        serde_json::json!([{"complete": true, "exitcode": 137}]),
        "{}",
        harness::stderr_logs(dir)
    );
}

/// A worker, for daemon-mode tests: Python writing `lines` metric lines of
/// `run` to `log` (kept open, as a worker's logging handler keeps it), then
/// waiting (at most 60 s) for `go` to appear and killing itself with
/// SIGKILL, without a run-finished record.
fn doomed_worker(log: &Path, go: &Path, run: &str, lines: usize) -> std::process::Child {
    let script = format!(
        "import json, os, signal, time\nf = open({log:?}, 'a')\nfor i in range({lines}):\n    f.write(json.dumps({{'event': 'metrics', 'run_id': {run:?}, 'global_step': i, 'episodic_return': 1.0 / (i + 1)}}) + '\\n')\n    f.flush()\nfor _ in range(600):\n    if os.path.exists({go:?}):\n        break\n    time.sleep(0.1)\nos.kill(os.getpid(), signal.SIGKILL)\n",
        log = log.display().to_string(),
        go = go.display().to_string(),
    );
    std::process::Command::new(support::harness::python())
        .arg("-c")
        .arg(&script)
        .spawn()
        .unwrap()
}

/// Daemon mode: the worker dies without a word (SIGKILL after logging).
/// The agent found it holding the run's log open and watched its pid: once
/// it is gone for `worker_gone_secs` without a run-finished record, the
/// run ends failed with exit code -1 (unknown: the agent is not its
/// parent), never finished with 0.
#[test]
fn daemon_mode_a_worker_killed_silently_ends_failed() {
    use support::harness::{self, agent, stderr_logs, wait_for, write_config};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAE0000000000000000DEAD";
    let logs = dir.join(format!("var/trainer/runs/{run}/logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let config = write_config(dir, &standin.base_url(), "worker_gone_secs = 1\n");
    let mut child = harness::spawn(&mut agent(dir, &config, &[]));
    let go = dir.join("go");
    let mut worker = doomed_worker(&logs.join("worker.log"), &go, run, 51);
    let id = harness::wandb_id(run);
    wait_for(dir, Duration::from_secs(60), "the worker's rows", || {
        standin
            .runs()
            .get(&id)
            .is_some_and(|r| r.history.len() == 51)
    });
    wait_for(dir, Duration::from_secs(60), "the worker found", || {
        stderr_logs(dir).contains("worker process found for the run")
    });
    assert_eq!(standin.runs()[&id].exit_code, None, "alive: not ended");
    std::fs::write(&go, "").unwrap();
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(worker.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
    wait_for(dir, Duration::from_secs(60), "the run's end", || {
        standin.runs()[&id].exit_code.is_some()
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(harness::wait_child(&mut child, Duration::from_secs(60)).success());
    let end = support::sdk::run_end(&standin.requests());
    assert_eq!(
        end["complete_requests"],
        serde_json::json!([{"complete": true, "exitcode": -1}]),
        "{end}"
    );
    assert_eq!(standin.runs()[&id].exit_code, Some(-1));
    assert_eq!(standin.runs()[&id].history.len(), 51);
}

/// Daemon mode: a worker that logged `run_completed` and then exited is
/// finished with 0: its own word stands over the agent's watch.
#[test]
fn daemon_mode_a_worker_gone_after_its_end_record_stays_finished() {
    use support::harness::{self, agent, stderr_logs, wait_for, write_config};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let standin = StandIn::start();
    let run = "01JDAE00000000000000000DNE";
    let logs = dir.join(format!("var/trainer/runs/{run}/logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let config = write_config(dir, &standin.base_url(), "worker_gone_secs = 1\n");
    let mut child = harness::spawn(&mut agent(dir, &config, &[]));
    let go = dir.join("go");
    let mut worker = doomed_worker(&logs.join("worker.log"), &go, run, 10);
    let id = harness::wandb_id(run);
    wait_for(dir, Duration::from_secs(60), "the worker found", || {
        stderr_logs(dir).contains("worker process found for the run")
    });
    harness::lifecycle(dir, run, "run_completed", None);
    wait_for(dir, Duration::from_secs(60), "the run's end", || {
        standin
            .runs()
            .get(&id)
            .is_some_and(|r| r.exit_code.is_some())
    });
    std::fs::write(&go, "").unwrap();
    worker.wait().unwrap();
    wait_for(dir, Duration::from_secs(60), "the watch's verdict", || {
        stderr_logs(dir).contains("worker process is gone")
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(harness::wait_child(&mut child, Duration::from_secs(60)).success());
    let end = support::sdk::run_end(&standin.requests());
    assert_eq!(
        end["complete_requests"],
        serde_json::json!([{"complete": true, "exitcode": 0}]),
        "{end}"
    );
}
