//! The embedded default rules against every shape of line they are for,
//! and against ordinary log text that must not become metrics.

use super::*;
use crate::config::{Config, RuleConfig, EMBEDDED_DEFAULT};
use crate::row::RunEvent;

fn default_extractor() -> Extractor {
    Extractor::new(&Config::parse(EMBEDDED_DEFAULT, "t").unwrap().extract).unwrap()
}

const PATH: &str = "var/trainer/runs/01JABC/logs/cleanrl.stdout.log";
const READ_TIME: f64 = 7.0;

/// One file read line by line, as the ingest loop reads it.
struct File {
    e: Extractor,
    path: &'static str,
    memo: Memo,
    c: Counters,
}

impl File {
    fn new(path: &'static str) -> File {
        File {
            e: default_extractor(),
            path,
            memo: Memo::default(),
            c: Counters::default(),
        }
    }

    fn feed(&mut self, line: &str) -> Vec<Row> {
        let mut out = Vec::new();
        self.e.extract(
            self.path,
            0,
            line,
            READ_TIME,
            &mut self.memo,
            &mut self.c,
            &mut out,
        );
        out
    }

    fn one(&mut self, line: &str) -> Row {
        let mut rows = self.feed(line);
        assert_eq!(rows.len(), 1, "{line}: {rows:?}");
        rows.pop().unwrap()
    }

    fn none(&mut self, line: &str) {
        let rows = self.feed(line);
        assert!(rows.is_empty(), "{line}: {rows:?}");
    }
}

fn values(row: &Row) -> Vec<(&str, f64)> {
    row.values.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

#[test]
fn flat_record_gets_cleanrl_names() {
    let mut f = File::new(PATH);
    let line = r#"{"timestamp": "2026-11-27T16:23:14.123Z", "level": "INFO", "logger": "w", "message": "metrics", "event": "metrics", "run_id": "01JXYZ", "global_step": 128, "episodic_return": NaN, "episodic_length": 42}"#;
    let row = f.one(line);
    assert_eq!(row.run_id, "01JXYZ");
    assert_eq!(row.step, 128);
    assert_eq!(row.wall_time, 1795796594.123);
    assert!(row.values["charts/episodic_return"].is_nan());
    assert_eq!(row.values["charts/episodic_length"], 42.0);
    assert_eq!(row.values.len(), 2);
}

#[test]
fn nested_record_is_flattened() {
    let mut f = File::new(PATH);
    let line = r#"{"event": "metrics", "global_step": 256, "metrics": {"losses": {"policy_loss": 0.5, "value_loss": 3, "entropy": 0.25}, "charts": {"learning_rate": 0.00025, "SPS": Infinity, "note": "x", "done": true}}}"#;
    let row = f.one(line);
    assert_eq!(row.run_id, "01JABC", "run id from the path");
    assert_eq!(
        row.wall_time, READ_TIME,
        "read time when the record has none"
    );
    let tags: Vec<_> = row.values.keys().cloned().collect();
    assert_eq!(
        tags,
        [
            "charts/SPS",
            "charts/done",
            "charts/learning_rate",
            "losses/entropy",
            "losses/policy_loss",
            "losses/value_loss"
        ]
    );
    assert_eq!(row.values["charts/SPS"], f64::INFINITY);
    assert_eq!(row.values["charts/done"], 1.0);
    assert_eq!(f.c.skipped_values, 1);
}

#[test]
fn config_and_run_finished_records_become_run_events() {
    let mut f = File::new(PATH);
    let line = r#"{"event": "config", "run_id": "01JX", "config": {"lr": 0.00025, "env_id": "CartPole-v1", "clip": NaN}}"#;
    let row = f.one(line);
    assert_eq!(row.run_id, "01JX");
    assert!(row.values.is_empty());
    let Some(RunEvent::Config(text)) = row.event else {
        panic!("{row:?}")
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["lr"], 0.00025);
    assert_eq!(v["clip"], "NaN", "no parser marker in the text");
    f.none(line);
    assert_eq!(f.c.rows, 1, "the same configuration again: no row");
    let line = r#"{"event": "run_finished", "exit_code": 3}"#;
    let row = f.one(line);
    assert_eq!(
        (row.run_id.as_str(), row.event),
        ("01JABC", Some(RunEvent::Finished(3)))
    );
    let line = r#"{"event": "config", "run_id": "01JX", "config": "lr=1"}"#;
    f.none(line);
    assert_eq!(f.c.rejected, 1, "a config record without an object");
}

#[test]
fn ordinary_and_bad_lines_are_counted() {
    let mut f = File::new(PATH);
    f.none(r#"{"event": "heartbeat", "run_id": "r"}"#);
    f.none("Traceback (most recent call last):");
    f.none(r#"{"event": "metrics", "glo"#);
    f.none(r#"{"event": "metrics", "run_id": "r", "episodic_return": 1}"#);
    let c = f.c;
    assert_eq!(
        (c.unmatched, c.invalid_json, c.rejected, c.rows),
        (2, 1, 1, 0)
    );
}

#[test]
fn mosaic_cleanrl_log_lines() {
    // ppo.py's logging.basicConfig format; asctime is local time.
    let mut f = File::new("var/trainer/runs/01KKAQ6XP04TFF59TDWH9EDD1R/logs/cleanrl.stderr.log");
    let row = f.one(
        "2026-03-10 01:54:05 | INFO     | __main__ | global_step=44, episodic_return=11.000, length=11",
    );
    assert_eq!(row.run_id, "01KKAQ6XP04TFF59TDWH9EDD1R");
    assert_eq!(row.step, 44);
    assert_eq!(
        row.wall_time,
        parse_timestamp_as("2026-03-10 01:54:05", crate::config::NaiveTime::Local).unwrap()
    );
    assert_eq!(
        values(&row),
        [
            ("charts/episodic_length", 11.0),
            ("charts/episodic_return", 11.0)
        ]
    );
    f.none("2026-03-10 01:54:04 | INFO     | __main__ | Using MinigridAgent (CNN) for MiniGrid-Empty-5x5-v0");
    f.none("2026-03-10 01:54:09 | INFO     | __main__ | Model saved to var/trainer/runs/x/ppo.cleanrl_model");
    // SPS is a DEBUG line there, but when it is written it is read.
    let row = f.one("2026-03-10 01:54:06 | DEBUG    | __main__ | SPS: 2224");
    assert_eq!((row.step, values(&row)), (44, vec![("charts/SPS", 2224.0)]));
    assert_eq!((f.c.rows, f.c.unmatched, f.c.rejected), (2, 2, 0));
}

#[test]
fn upstream_cleanrl_prints() {
    let mut f = File::new(PATH);
    // SPS before any step in the file: it belongs to no step.
    f.none("SPS: 100");
    assert_eq!(f.c.rejected, 1);
    let row = f.one("global_step=19, episodic_return=[20.]");
    assert_eq!(
        (row.step, row.wall_time, values(&row)),
        (19, READ_TIME, vec![("charts/episodic_return", 20.0)])
    );
    let row = f.one("SPS: 2224");
    assert_eq!((row.step, values(&row)), (19, vec![("charts/SPS", 2224.0)]));
    for (line, step, v) in [
        ("global_step=30, episodic_return=[20.5]", 30, 20.5),
        ("global_step=31, episodic_return=[-3.0e+00]", 31, -3.0),
        (
            "global_step=32, episodic_return=array([20.], dtype=float32)",
            32,
            20.0,
        ),
        ("global_step=33, episodic_return=7.25", 33, 7.25),
    ] {
        let row = f.one(line);
        assert_eq!((row.step, row.values["charts/episodic_return"]), (step, v));
    }
    let row = f.one("SPS: 2300");
    assert_eq!(row.step, 33, "the latest step of the file");
}

#[test]
fn non_finite_text_values_are_kept() {
    let mut f = File::new(PATH);
    for (line, want) in [
        ("global_step=1, episodic_return=nan", f64::NAN),
        ("global_step=2, episodic_return=[nan]", f64::NAN),
        ("global_step=3, episodic_return=NaN", f64::NAN),
        ("global_step=4, episodic_return=inf", f64::INFINITY),
        ("global_step=5, episodic_return=[-inf]", f64::NEG_INFINITY),
    ] {
        let v = f.one(line).values["charts/episodic_return"];
        assert!(
            v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()),
            "{line}: {v}"
        );
    }
}

#[test]
fn ordinary_text_never_becomes_a_metric() {
    let mut f = File::new(PATH);
    let lines = [
        "Loaded 3 envs",
        "step 5 of 10",
        "01:54:05",
        "2026-03-10 01:54:05",
        "[worker stderr] 2026-03-10 01:54:27,458 [INFO] xuance_worker.runtime: LOG1021 XuanCe training started",
        "2026-03-10 01:54:27,458 | INFO | gym_gui.services.trainer.dispatcher | [comp=trainer sub=dispatch run=01KKAQ6XP04TFF59TDWH9EDD1R agent=- code=LOG1021 tags=-] | Run started",
        "2026-03-10 01:54:27,458 | WARNING | trainer_daemon | [comp=daemon sub=- run=01KKAQ6XP04TFF59TDWH9EDD1R agent=- code=LOG9 tags=x] | step=5 reward=3.5 return: 2",
        "Traceback (most recent call last):",
        "  File \"ppo.py\", line 221, in <module>",
        "ValueError: length must be positive",
        "model saved to runs/CartPole-v1__ppo__1__1773107642/ppo.cleanrl_model",
        "episodic_return is not logged yet",
        "SPS_target=5000 my_length=3 xglobal_step=9 losses/value_loss=1 a.SPS=4",
        "length=unknown SPS=fast episodic_return=[1. 2.]",
        "https://wandb.ai/team/proj/runs/abc?SPS=5",
        "",
        "   ",
        "{'global_step': 5, 'episodic_return': 3.0}",
    ];
    for line in lines {
        f.none(line);
    }
    assert_eq!(f.c.rows, 0);
    assert_eq!(f.c.rejected, 0, "ordinary text is not a rejected record");
    assert_eq!(f.memo.step, None, "{:?}", f.memo);
}

#[test]
fn a_step_alone_is_remembered_for_the_next_line() {
    let mut f = File::new(PATH);
    f.none("2026-03-10 01:54:05 | INFO     | __main__ | Resuming from global_step=4096");
    assert_eq!(f.c.unmatched, 1);
    let row = f.one("SPS: 99");
    assert_eq!(row.step, 4096);
}

#[test]
fn python_json_logger_records() {
    // JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s").
    let mut f = File::new(PATH);
    let row = f.one(r#"{"asctime": "2026-12-02 07:19:43,307", "levelname": "INFO", "name": "train", "message": "metrics", "global_step": 6, "episodic_return": 1.5, "value_loss": NaN, "note": "x"}"#);
    assert_eq!(row.step, 6);
    assert_eq!(
        row.wall_time,
        parse_timestamp_as("2026-12-02 07:19:43,307", crate::config::NaiveTime::Local).unwrap()
    );
    assert_eq!(row.values["charts/episodic_return"], 1.5);
    assert!(row.values["losses/value_loss"].is_nan());
    assert_eq!(row.values.len(), 2);
    // timestamp=True adds an ISO time with offset, which wins.
    let row = f.one(r#"{"asctime": "2026-12-02 07:19:43,308", "message": "metrics", "global_step": 7, "SPS": 10, "run_id": "01K", "timestamp": "2026-12-02T01:49:43.308432+00:00"}"#);
    assert_eq!(
        (row.run_id.as_str(), row.wall_time),
        ("01K", 1796176183.308432)
    );
    // Ordinary records of the same logger.
    f.none(r#"{"asctime": "2026-12-02 07:19:43,309", "levelname": "INFO", "name": "train", "message": "Loaded 3 envs", "global_step": 7}"#);
    assert_eq!(f.c.unmatched, 1);
}

#[test]
fn structlog_records() {
    let mut f = File::new(PATH);
    let row = f.one(r#"{"global_step": 8, "episodic_return": Infinity, "event": "metrics", "level": "info", "timestamp": "2026-12-02T01:49:43.308640Z"}"#);
    assert_eq!((row.step, row.wall_time), (8, 1796176183.30864));
    assert_eq!(row.values["charts/episodic_return"], f64::INFINITY);
    // TimeStamper(fmt="iso", utc=False): local time without offset.
    let row = f.one(
        r#"{"global_step": 9, "episodic_return": 2, "event": "metrics", "timestamp": "2026-12-02T07:19:43.308718"}"#,
    );
    assert_eq!(
        row.wall_time,
        parse_timestamp_as(
            "2026-12-02T07:19:43.308718",
            crate::config::NaiveTime::Local
        )
        .unwrap()
    );
    // TimeStamper() without fmt: epoch seconds.
    let row =
        f.one(r#"{"global_step": 10, "SPS": 2, "event": "metrics", "timestamp": 1796176183.5}"#);
    assert_eq!(row.wall_time, 1796176183.5);
    f.none(r#"{"event": "episode started", "level": "info", "global_step": 11}"#);
}

const RAY_OLD: &str = r#"{"custom_metrics": {}, "episode_media": {}, "info": {"learner": {"default_policy": {"learner_stats": {"cur_lr": 5e-05, "total_loss": 9.5, "policy_loss": -0.04, "vf_loss": NaN, "entropy": 0.69}, "num_agent_steps_trained": 128.0, "custom_metrics": {}}}, "num_env_steps_sampled": 4000, "num_env_steps_trained": 4000}, "env_runners": {"episode_reward_max": 45.0, "episode_reward_min": 9.0, "episode_reward_mean": 21.5, "episode_len_mean": 21.5, "episodes_this_iter": 180, "hist_stats": {"episode_reward": [12.0, 30.0]}, "sampler_perf": {"mean_env_wait_ms": 0.05}}, "num_healthy_workers": 2, "timesteps_total": 4000, "done": false, "training_iteration": 1, "trial_id": "default", "date": "2026-03-10_01-54-05", "timestamp": 1773107645, "time_this_iter_s": 4.5, "time_total_s": 4.5, "pid": 4242, "hostname": "gpu-1", "node_ip": "10.0.0.5", "config": {"lr": 5e-05, "gamma": 0.99, "env": "CartPole-v1", "model": {"fcnet_hiddens": [256, 256]}, "grad_clip": null}, "perf": {"cpu_util_percent": 35.2, "ram_util_percent": 61.0}}"#;

#[test]
fn rllib_result_is_flattened_and_its_config_emitted_once() {
    let mut f = File::new("var/trainer/runs/01KRAY/tensorboard/result.json");
    let rows = f.feed(RAY_OLD);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (config, metrics) = (&rows[0], &rows[1]);
    let Some(RunEvent::Config(text)) = &config.event else {
        panic!("{config:?}")
    };
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["model"]["fcnet_hiddens"][1], 256);
    assert_eq!(
        (config.run_id.as_str(), config.step, config.wall_time),
        ("01KRAY", 4000, 1773107645.0)
    );
    assert_eq!((metrics.step, metrics.wall_time), (4000, 1773107645.0));
    let m = &metrics.values;
    assert_eq!(m["env_runners/episode_reward_mean"], 21.5);
    assert_eq!(m["env_runners/sampler_perf/mean_env_wait_ms"], 0.05);
    assert_eq!(
        m["info/learner/default_policy/learner_stats/total_loss"],
        9.5
    );
    assert!(m["info/learner/default_policy/learner_stats/vf_loss"].is_nan());
    assert_eq!(m["perf/cpu_util_percent"], 35.2);
    assert_eq!(m["time_this_iter_s"], 4.5);
    assert_eq!(m["done"], 0.0);
    assert_eq!(m["training_iteration"], 1.0);
    for gone in [
        "pid",
        "timestamp",
        "config/lr",
        "trial_id",
        "hostname",
        "date",
    ] {
        assert!(!m.contains_key(gone), "{gone}");
    }
    assert!(!m
        .keys()
        .any(|k| k.starts_with("config") || k.contains("hist_stats")));
    assert_eq!(
        f.c.skipped_values, 0,
        "a record's text is not a skipped metric"
    );
    // The next iteration: metrics only.
    let next = RAY_OLD
        .replace("\"timesteps_total\": 4000", "\"timesteps_total\": 8000")
        .replace("\"training_iteration\": 1", "\"training_iteration\": 2");
    let row = f.one(&next);
    assert_eq!((row.step, row.event.is_none()), (8000, true));
    assert_eq!(f.c.rows, 3);
    // A changed configuration (a resumed trial with new settings) is new.
    let changed = next.replace("\"gamma\": 0.99", "\"gamma\": 0.9");
    assert_eq!(f.feed(&changed).len(), 2);
}

#[test]
fn rllib_new_stack_steps_and_slash_keys() {
    let mut f = File::new("var/trainer/runs/01KNEW/tensorboard/result.json");
    let line = r#"{"env_runners": {"episode_return_mean": 12.5, "num_env_steps_sampled_lifetime": 2000}, "learners": {"default_policy": {"policy_loss": 0.1}}, "env_runners/agent_episode_returns_mean/default_agent": 12.5, "num_env_steps_sampled_lifetime": 2000, "training_iteration": 1, "time_this_iter_s": 2.0, "timestamp": 1773107650, "config": {"lr": 0.001}}"#;
    let rows = f.feed(line);
    let m = &rows[1].values;
    assert_eq!(rows[1].step, 2000);
    assert_eq!(m["env_runners/episode_return_mean"], 12.5);
    assert_eq!(
        m["env_runners/agent_episode_returns_mean/default_agent"],
        12.5
    );
    assert_eq!(m["learners/default_policy/policy_loss"], 0.1);
    let bare = r#"{"training_iteration": 3, "time_this_iter_s": 1.0, "timesteps_total": null, "episode_reward_mean": 1.0}"#;
    let row = f.one(bare);
    assert_eq!(row.step, 3, "training_iteration when nothing better");
}

#[test]
fn lifecycle_events_on_stdout() {
    // Outside a run directory: the run id comes from the records.
    let mut f = File::new("/tmp/worker.stdout.log");
    let row = f.one(r#"{"event":"run_started","payload":{"algo":"ppo","env_id":"CartPole-v1","seed":1},"run_id":"01KKAQ6XP04TFF59TDWH9EDD1R","timestamp":1773107642.0}"#);
    assert_eq!(
        (row.run_id.as_str(), row.wall_time),
        ("01KKAQ6XP04TFF59TDWH9EDD1R", 1773107642.0)
    );
    let Some(RunEvent::Config(text)) = &row.event else {
        panic!("{row:?}")
    };
    assert_eq!(text, r#"{"algo":"ppo","env_id":"CartPole-v1","seed":1}"#);
    f.none(r#"{"event":"heartbeat","payload":{},"run_id":"01KKAQ6XP04TFF59TDWH9EDD1R","timestamp":1773107643.0}"#);
    f.none(r#"{"event":"checkpoint_saved","payload":{"path":"x"},"run_id":"01KKAQ6XP04TFF59TDWH9EDD1R","timestamp":1773107643.0}"#);
    // Text lines after it carry no run id: the memo's.
    let row = f.one("global_step=19, episodic_return=[20.]");
    assert_eq!(row.run_id, "01KKAQ6XP04TFF59TDWH9EDD1R");
    let row = f.one(r#"{"event":"run_completed","payload":{"episodes":100},"run_id":"01KKAQ6XP04TFF59TDWH9EDD1R","timestamp":1773107700.0}"#);
    assert_eq!(
        (row.event, row.wall_time),
        (Some(RunEvent::Finished(0)), 1773107700.0)
    );
    for (line, code) in [
        (
            r#"{"event":"run_failed","payload":{"error":"CUDA out of memory","step":1337},"run_id":"A","timestamp":1.0}"#,
            1,
        ),
        (
            r#"{"event":"run_failed","payload":{"exit_code":3},"run_id":"A","timestamp":1.0}"#,
            3,
        ),
        (
            r#"{"event":"run_cancelled","payload":{},"run_id":"A","timestamp":1.0}"#,
            130,
        ),
    ] {
        let row = f.one(line);
        assert_eq!(
            (row.run_id.as_str(), row.event),
            ("A", Some(RunEvent::Finished(code)))
        );
    }
    assert_eq!(f.c.unmatched, 2);
}

#[test]
fn run_id_precedence_and_a_new_run_resets_the_step() {
    let mut f = File::new(PATH);
    // The record's field wins over the path.
    let row = f.one(r#"{"event": "metrics", "run_id": "01REC", "global_step": 5, "SPS": 1}"#);
    assert_eq!(row.run_id, "01REC");
    // The path wins over the memo.
    let row = f.one("global_step=6, episodic_return=1.0");
    assert_eq!(row.run_id, "01JABC");
    assert_eq!(f.memo.run_id.as_deref(), Some("01REC"));
    // Another run in the same file: its own steps, not the last run's.
    f.one(r#"{"event": "run_started", "run_id": "01OTHER", "payload": {"x": 1}}"#);
    assert_eq!(f.memo.step, None);
    f.none("SPS: 5");
    assert_eq!(f.c.rejected, 1);
}

#[test]
fn a_json_record_names_its_own_step() {
    let mut f = File::new(PATH);
    f.one(r#"{"event": "metrics", "global_step": 5, "SPS": 1}"#);
    f.none(r#"{"event": "metrics", "SPS": 2}"#);
    assert_eq!(f.c.rejected, 1);
    // ... but a text line after it belongs to its step.
    assert_eq!(f.one("SPS: 3").step, 5);
}

#[test]
fn without_any_run_id_a_record_is_rejected() {
    let mut f = File::new("/tmp/stdout.log");
    f.none("global_step=1, episodic_return=2.0");
    assert_eq!(f.c.rejected, 1);
}

#[test]
fn explain_says_why() {
    let e = default_extractor();
    let mut memo = Memo::default();
    let mut ex = |line: &str| e.explain(PATH, line, READ_TIME, &mut memo);
    let x = ex(r#"{"event": "heartbeat", "run_id": "r"}"#);
    let Outcome::NoMatch { closest, missed } = &x.outcome else {
        panic!("{x:?}")
    };
    assert_eq!(closest.as_deref(), Some("mosaic-metrics"));
    assert_eq!(
        missed,
        &[r#"event = "metrics" (the record has "heartbeat")"#]
    );
    assert!(
        x.to_string().contains("closest rule \"mosaic-metrics\""),
        "{x}"
    );
    let x = ex("SPS: 2224");
    assert_eq!(x.rule.as_deref(), Some("cleanrl-text"));
    assert!(
        matches!(&x.outcome, Outcome::Rejected(why) if why.contains("no integer step")),
        "{x}"
    );
    let x = ex("Loaded 3 envs");
    let Outcome::NoMatch { closest, missed } = &x.outcome else {
        panic!("{x:?}")
    };
    assert_eq!(closest.as_deref(), Some("cleanrl-text"));
    assert!(missed[0].contains("no metric key"), "{missed:?}");
    let x = ex("episodic_return=[1. 2.]");
    let Outcome::NoMatch { missed, .. } = &x.outcome else {
        panic!("{x:?}")
    };
    assert!(missed[0].contains("not one number"), "{missed:?}");
    let x = ex(r#"{"event": "metrics", "glo"#);
    assert!(matches!(x.outcome, Outcome::Invalid(_)), "{x:?}");
    let x = ex("global_step=3, episodic_return=[2.]");
    let Outcome::Rows(rows) = &x.outcome else {
        panic!("{x:?}")
    };
    assert_eq!(rows[0].step, 3);
    assert!(x.to_string().contains("charts/episodic_return=2"), "{x}");
    // The same path as extract: the memo moved on.
    let x = ex("SPS: 2224");
    assert!(
        matches!(&x.outcome, Outcome::Rows(r) if r[0].step == 3),
        "{x}"
    );
    let cfg = r#"{"event": "config", "config": {"a": 1}}"#;
    assert!(matches!(ex(cfg).outcome, Outcome::Rows(_)));
    let x = ex(cfg);
    assert_eq!(
        (x.rule.as_deref(), &x.outcome),
        (Some("mosaic-config"), &Outcome::Repeated)
    );
    // python-json-logger's `message` with another text: its rule is the
    // nearest, not the first rule that misses as much.
    let x = ex(r#"{"asctime": "2026-01-01 00:00:00,000", "message": "epoch done", "loss": 1}"#);
    let Outcome::NoMatch { closest, missed } = &x.outcome else {
        panic!("{x:?}")
    };
    assert_eq!(closest.as_deref(), Some("python-json-logger-metrics"));
    assert_eq!(
        missed,
        &[r#"message = "metrics" (the record has "epoch done")"#]
    );
    let x = ex(r#"{"training_iteration": 1}"#);
    let Outcome::NoMatch { closest, missed } = &x.outcome else {
        panic!("{x:?}")
    };
    assert_eq!(closest.as_deref(), Some("rllib-result"));
    assert_eq!(missed, &["time_this_iter_s present (absent)"]);
}

#[test]
fn explain_and_extract_agree_line_by_line() {
    let lines = [
        "SPS: 1",
        r#"{"event":"run_started","payload":{"a":1},"run_id":"01R","timestamp":1.0}"#,
        "2026-03-10 01:54:05 | INFO     | __main__ | global_step=44, episodic_return=11.000, length=11",
        "SPS: 2",
        RAY_OLD,
        RAY_OLD,
        "Loaded 3 envs",
        r#"{"event":"run_completed","payload":{},"run_id":"01R","timestamp":2.0}"#,
    ];
    let mut f = File::new("/tmp/x.log");
    let e = default_extractor();
    let mut memo = Memo::default();
    for line in lines {
        let rows = f.feed(line);
        let x = e.explain(f.path, line, READ_TIME, &mut memo);
        match x.outcome {
            // Debug text: NaN values are equal there.
            Outcome::Rows(r) => assert_eq!(format!("{r:?}"), format!("{rows:?}"), "{line}"),
            other => assert!(rows.is_empty(), "{line}: {other:?}"),
        }
        assert_eq!(memo, f.memo, "{line}");
    }
}

fn rule(toml_text: &str) -> Result<Rule, String> {
    let c: RuleConfig = toml::from_str(toml_text).unwrap();
    Rule::compile(&c)
}

#[test]
fn text_rules_are_checked_when_compiled() {
    let base = "name = \"t\"\ninput = \"text\"\nstep = [\"global_step\"]\n";
    assert!(rule(&format!("{base}metrics = [{{ field = \"SPS\" }}]")).is_ok());
    for (extra, want) in [
        ("metrics = [{ field = \"*\" }]", "`*` is for JSON"),
        (
            "metrics = [{ field = \"SPS\" }]\nmatch = { a = 1 }",
            "`match`",
        ),
        ("metrics = [{ field = \"9lives\" }]", "a key starts with"),
        ("metrics = [{ field = \"a b\" }]", "a key starts with"),
        (
            "metrics = [{ field = \"SPS\" }]\npattern = \"(\"",
            "pattern",
        ),
        (
            "metrics = [{ field = \"SPS\" }]\nwall_time = [\"t\"]",
            "wall_time",
        ),
        ("kind = \"config\"", "reads metrics"),
    ] {
        let err = rule(&format!("{base}{extra}")).unwrap_err();
        assert!(err.contains(want), "{extra}: {err}");
    }
    let err = rule("name = \"j\"\npattern = \"x\"\nstep = [\"s\"]\nmetrics = [{ field = \"a\" }]")
        .unwrap_err();
    assert!(err.contains("pattern"), "{err}");
}

#[test]
fn a_text_rule_pattern_gives_wall_time_and_run_id_and_filters() {
    let r = rule(
        r#"
name = "t"
input = "text"
pattern = '^(?P<wall_time>\S+Z) run=(?P<run_id>\w+) '
step = ["it"]
metrics = [{ field = "loss", tag = "losses/loss" }]
"#,
    )
    .unwrap();
    let mut memo = Memo::default();
    let mut c = Counters::default();
    let mut out = Vec::new();
    let line = Line::Text("1970-01-01T00:00:02Z run=R1 it=3 loss=0.5");
    assert_eq!(
        r.apply(&line, "p", 0.0, &mut memo, &mut c, &mut out),
        Applied::Rows(1)
    );
    assert_eq!(
        (out[0].run_id.as_str(), out[0].step, out[0].wall_time),
        ("R1", 3, 2.0)
    );
    let other = Line::Text("loss=0.5 it=4");
    assert_eq!(
        r.apply(&other, "p", 0.0, &mut memo, &mut c, &mut out),
        Applied::NoMatch
    );
}

#[test]
fn a_run_configuration_document_is_the_runs_config_once_and_lines_never_match_its_rule() {
    let e = default_extractor();
    let path = "var/trainer/configs/config-01KKAQ6XP04TFF59TDWH9EDD1R.json";
    let doc = "{\n  \"run_name\": \"cartpole\",\n  \"run_id\": \"form-name\",\n  \"metadata\": {\"worker\": {\"module\": \"cleanrl_worker\"}},\n  \"lr\": 0.00025\n}\n";
    let (mut memo, mut c, mut out) = (Memo::default(), Counters::default(), Vec::new());
    e.extract_document(path, doc, READ_TIME, &mut memo, &mut c, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].run_id, "01KKAQ6XP04TFF59TDWH9EDD1R",
        "the file name's run id"
    );
    let Some(RunEvent::Config(text)) = &out[0].event else {
        panic!("{:?}", out[0])
    };
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(v["lr"], 0.00025);
    assert_eq!(v["metadata"]["worker"]["module"], "cleanrl_worker");
    // Read again unchanged (an mtime bump): nothing new.
    e.extract_document(path, doc, READ_TIME, &mut memo, &mut c, &mut out);
    assert_eq!(out.len(), 1);
    // The same text as a line of a log is no document.
    let one_line = doc.replace('\n', " ");
    let mut lines = File::new(PATH);
    lines.none(&one_line);
    assert_eq!(lines.c.rows, 0);
}
