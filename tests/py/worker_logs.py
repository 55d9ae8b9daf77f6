"""Writes worker logs the way real RL workers and logging libraries write
them, and the rows the agent's default rules must make of them.

    worker_logs.py OUT_DIR

writes the logs under OUT_DIR and OUT_DIR/expected.json:
{"files": [{"path": <relative>, "rows": [row, ...]}, ...]} where a row is
{"run_id", "step", "wall_time" (null: the time the line is read),
"values": {tag: number or "NaN"/"Infinity"/"-Infinity"}} plus "config"
(an object) or "finished" (an exit code) for rows about the run.

The libraries write the lines (stdlib logging with the CleanRL worker's
format, print like upstream CleanRL, python-json-logger, structlog,
json.dump like Ray's JsonLogger, MOSAIC's lifecycle JSON); the expected
rows come from the values passed to them and from Python's own time
functions, never from the agent's parser.
"""

import calendar
import contextlib
import datetime
import json
import logging
import math
import os
import sys
import time

import numpy as np
import structlog
from pythonjsonlogger.json import JsonFormatter

OUT = sys.argv[1]
FILES = []

# The CleanRL worker's logging (3rd_party/workers/cleanrl_worker/.../ppo.py).
CLEANRL_FORMAT = "%(asctime)s | %(levelname)-8s | %(name)s | %(message)s"
CLEANRL_DATEFMT = "%Y-%m-%d %H:%M:%S"


def num(v):
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def row(run_id, step, wall_time, values):
    return {
        "run_id": run_id,
        "step": step,
        "wall_time": wall_time,
        "values": {k: num(v) for k, v in values.items()},
    }


def event_row(run_id, step, wall_time, **event):
    r = {"run_id": run_id, "step": step, "wall_time": wall_time, "values": {}}
    r.update(event)
    return r


def open_log(rel):
    path = os.path.join(OUT, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "w", encoding="utf-8")


def exact(secs, micros):
    """The epoch time secs + micros/1e6, rounded once (as a decimal)."""
    return float(f"{secs}.{micros:06d}")


def epoch_of(text):
    """Epoch seconds of an ISO time or a logging asctime, by Python's own
    clock functions: with an offset via calendar.timegm, without one as
    local time via time.mktime."""
    text = text.replace(",", ".")
    dt = datetime.datetime.fromisoformat(text)
    if dt.tzinfo is None:
        secs = int(time.mktime(dt.timetuple()))
    else:
        secs = calendar.timegm(dt.astimezone(datetime.timezone.utc).timetuple())
    return exact(secs, dt.microsecond)


class LastRecord(logging.Filter):
    def filter(self, record):
        self.record = record
        return True


def cleanrl_logging(run_id):
    rel = f"var/trainer/runs/{run_id}/logs/cleanrl.stderr.log"
    rows = []
    with open_log(rel) as f:
        logging.basicConfig(
            level=logging.INFO, format=CLEANRL_FORMAT, datefmt=CLEANRL_DATEFMT, stream=f
        )
        last = LastRecord()
        logging.getLogger().handlers[0].addFilter(last)
        logger = logging.getLogger("__main__")
        logger.info("Using MinigridAgent (CNN) for %s", "MiniGrid-Empty-5x5-v0")
        logger.info("Resuming from global_step=%d", 4096)
        logger.debug("SPS: %d", 999)  # DEBUG: not written at INFO
        episodes = [(4100, 11.0, 11), (4128, 9.5, 28), (4160, float("nan"), 32), (4200, -0.25, 40)]
        for step, ret, length in episodes:
            logger.info("global_step=%d, episodic_return=%.3f, length=%d", step, ret, length)
            rows.append(
                row(
                    run_id,
                    step,
                    float(int(last.record.created)),
                    {
                        "charts/episodic_return": float("%.3f" % ret),
                        "charts/episodic_length": length,
                    },
                )
            )
        try:
            raise ValueError("length=unknown, episodic_return is missing")
        except ValueError:
            logger.exception("Training step failed at global_step=%d", 4300)
        logger.info("Model saved to %s", f"var/trainer/runs/{run_id}/checkpoints/ppo.cleanrl_model")
        logging.getLogger().removeHandler(logging.getLogger().handlers[0])
    FILES.append({"path": rel, "rows": rows})


def cleanrl_debug_logging(run_id):
    """The same format at DEBUG, where the worker writes SPS lines."""
    rel = f"var/trainer/runs/{run_id}/logs/cleanrl.stderr.log"
    rows = []
    with open_log(rel) as f:
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter(CLEANRL_FORMAT, CLEANRL_DATEFMT))
        last = LastRecord()
        handler.addFilter(last)
        logger = logging.getLogger("cleanrl_debug")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
        logger.debug("SPS: %d", 100)  # no step yet in this file: no row
        logger.info("global_step=%d, episodic_return=%.3f, length=%d", 64, 12.0, 12)
        rows.append(
            row(
                run_id,
                64,
                float(int(last.record.created)),
                {"charts/episodic_return": 12.0, "charts/episodic_length": 12},
            )
        )
        logger.debug("SPS: %d", 2224)
        rows.append(row(run_id, 64, float(int(last.record.created)), {"charts/SPS": 2224}))
        logger.removeHandler(handler)
    FILES.append({"path": rel, "rows": rows})


def upstream_cleanrl_print(run_id):
    """cleanrl/ppo.py and dqn.py print to stdout."""
    rel = f"var/trainer/runs/{run_id}/logs/cleanrl.stdout.log"
    rows = []
    with open_log(rel) as f, contextlib.redirect_stdout(f):
        print("SPS:", 1234)  # before any global_step: belongs to no step
        global_step = 0
        returns = [20.0, 20.5, -3.0, float("nan"), float("inf"), 0.1, 1e-5]
        for i, r in enumerate(returns):
            global_step += 16 + i
            info = {"episode": {"r": np.array([r], dtype=np.float32), "l": np.array([i + 9])}}
            print(f"global_step={global_step}, episodic_return={info['episode']['r']}")
            rows.append(
                row(
                    run_id,
                    global_step,
                    None,
                    {"charts/episodic_return": float(str(info["episode"]["r"][0]))},
                )
            )
            if i % 3 == 2:
                sps = int(global_step / 0.05)
                print("SPS:", sps)
                rows.append(row(run_id, global_step, None, {"charts/SPS": sps}))
        # A worker printing the array's repr.
        global_step += 100
        r = np.array([7.5], dtype=np.float32)
        print(f"global_step={global_step}, episodic_return={r!r}")
        rows.append(row(run_id, global_step, None, {"charts/episodic_return": 7.5}))
        print(f"model saved to runs/CartPole-v1__ppo__1__{int(time.time())}/ppo.cleanrl_model")
        print("Loaded 3 envs; step 5 of 10 at 01:54:05")
    FILES.append({"path": rel, "rows": rows})


def json_logger(run_id):
    rel = f"var/trainer/runs/{run_id}/logs/train.jsonl"
    handler_file = open_log(rel)
    handler = logging.StreamHandler(handler_file)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("train")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.info("Loaded 3 envs", extra={"global_step": 0})
    records = [
        {"global_step": 128, "episodic_return": 15.0, "episodic_length": 15},
        {"global_step": 256, "episodic_return": float("nan"), "value_loss": 0.75, "SPS": 2100},
        {"global_step": 384, "metrics": {"losses": {"entropy": 0.5}}, "note": "text"},
    ]
    for extra in records:
        logger.info("metrics", extra=extra)
    logger.removeHandler(handler)
    handler_file.close()
    rows = []
    with open(os.path.join(OUT, rel), encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line, extra in zip(lines[1:], records):
        asctime = json.loads(line)["asctime"]
        values = {}
        tags = {
            "episodic_return": "charts/episodic_return",
            "episodic_length": "charts/episodic_length",
            "value_loss": "losses/value_loss",
            "SPS": "charts/SPS",
        }
        for k, tag in tags.items():
            if k in extra:
                values[tag] = extra[k]
        if "metrics" in extra:
            values["losses/entropy"] = extra["metrics"]["losses"]["entropy"]
        rows.append(row(run_id, extra["global_step"], epoch_of(asctime), values))
    FILES.append({"path": rel, "rows": rows})


def json_logger_timestamp():
    """timestamp=True, run id as an extra field, outside a run directory."""
    rel = "elsewhere/json-timestamp.log"
    handler_file = open_log(rel)
    handler = logging.StreamHandler(handler_file)
    handler.setFormatter(JsonFormatter("%(asctime)s %(message)s", timestamp=True))
    logger = logging.getLogger("train_ts")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.info("metrics", extra={"run_id": "01KPJLTS", "global_step": 7, "SPS": 10})
    logger.removeHandler(handler)
    handler_file.close()
    with open(os.path.join(OUT, rel), encoding="utf-8") as f:
        ts = json.loads(f.readline())["timestamp"]
    FILES.append({"path": rel, "rows": [row("01KPJLTS", 7, epoch_of(ts), {"charts/SPS": 10})]})


def structlog_files(run_id):
    for name, stamper in [
        ("structlog.jsonl", structlog.processors.TimeStamper(fmt="iso")),
        ("structlog-local.jsonl", structlog.processors.TimeStamper(fmt="iso", utc=False)),
        ("structlog-epoch.jsonl", structlog.processors.TimeStamper()),
    ]:
        rel = f"var/trainer/runs/{run_id}/logs/{name}"
        with open_log(rel) as f:
            log = structlog.wrap_logger(
                structlog.PrintLogger(file=f),
                processors=[
                    structlog.processors.add_log_level,
                    stamper,
                    structlog.processors.JSONRenderer(),
                ],
            )
            log.info("env ready", env_id="CartPole-v1", global_step=0)
            log.info("metrics", global_step=10, episodic_return=float("inf"), learning_rate=2.5e-4)
            log.info("metrics", global_step=20, metrics={"losses": {"td_loss": 0.125}})
        rows = []
        with open(os.path.join(OUT, rel), encoding="utf-8") as f:
            lines = f.read().splitlines()
        for line, step, values in [
            (lines[1], 10, {"charts/episodic_return": float("inf"), "charts/learning_rate": 2.5e-4}),
            (lines[2], 20, {"losses/td_loss": 0.125}),
        ]:
            ts = json.loads(line)["timestamp"]
            wall = float(ts) if isinstance(ts, float) else epoch_of(ts)
            rows.append(row(run_id, step, wall, values))
        FILES.append({"path": rel, "rows": rows})


class NumpyFallback(json.JSONEncoder):
    """What Ray's encoder does for the values json cannot write itself."""

    def default(self, value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        return super().default(value)


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "/"))
        elif isinstance(v, (bool, int, float, np.floating, np.integer)):
            out[name] = float(v)
    return out


def ray_results(run_id, new_stack):
    rel = f"var/trainer/runs/{run_id}/tensorboard/result.json"
    config = {
        "env": "CartPole-v1",
        "lr": 5e-5,
        "gamma": 0.99,
        "train_batch_size": 4000,
        "model": {"fcnet_hiddens": [256, 256], "fcnet_activation": "tanh"},
        "grad_clip": None,
        "enable_rl_module_and_learner": new_stack,
    }
    rows = []
    with open_log(rel) as f:
        for it in range(1, 4):
            start = 1773107640 + it * 5
            if new_stack:
                result = {
                    "env_runners": {
                        "episode_return_mean": float("nan") if it == 1 else 10.0 * it,
                        "episode_len_mean": np.float32(9.5 * it),
                        "num_env_steps_sampled_lifetime": 2000 * it,
                        "hist_stats": {"episode_return": [1.0, 2.0]},
                    },
                    "learners": {
                        "default_policy": {"policy_loss": -0.01 * it, "vf_loss": np.float64(0.5)},
                        "__all_modules__": {"num_env_steps_trained": 2000 * it},
                    },
                    "env_runners/episode_return_max": 30.0 + it,
                    "num_env_steps_sampled_lifetime": 2000 * it,
                    "fault_tolerance": {"num_healthy_workers": 2},
                }
            else:
                result = {
                    "custom_metrics": {},
                    "episode_media": {},
                    "info": {
                        "learner": {
                            "default_policy": {
                                "learner_stats": {
                                    "cur_lr": 5e-5,
                                    "total_loss": 9.5 / it,
                                    "policy_loss": -0.04,
                                    "vf_loss": float("nan") if it == 1 else 8.0,
                                    "entropy": np.float32(0.6875),
                                },
                                "num_agent_steps_trained": 128.0,
                            }
                        },
                        "num_env_steps_sampled": 4000 * it,
                    },
                    "env_runners": {
                        "episode_reward_max": 45.0,
                        "episode_reward_min": 9.0,
                        "episode_reward_mean": float("nan") if it == 1 else 21.5 * it,
                        "episode_len_mean": 21.5,
                        "episodes_this_iter": 180,
                        "hist_stats": {"episode_reward": np.array([12.0, 30.0])},
                    },
                    "num_healthy_workers": 2,
                    "timesteps_total": 4000 * it,
                    "perf": {"cpu_util_percent": 35.25, "ram_util_percent": 61.0},
                }
            result.update(
                {
                    "done": it == 3,
                    "training_iteration": it,
                    "trial_id": "default",
                    "date": "2026-03-10_01-54-%02d" % it,
                    "timestamp": start,
                    "time_this_iter_s": 4.5,
                    "time_total_s": 4.5 * it,
                    "pid": 4242,
                    "hostname": "gpu-1",
                    "node_ip": "10.0.0.5",
                    "config": config,
                }
            )
            # Ray's JsonLoggerCallback: json.dump, then a newline.
            json.dump(result, f, cls=NumpyFallback)
            f.write("\n")
            metrics = {k: v for k, v in result.items() if k not in ("config", "pid", "timestamp")}
            step = result.get("timesteps_total") or result.get("num_env_steps_sampled_lifetime")
            if it == 1:
                rows.append(event_row(run_id, step, float(start), config=config))
            rows.append(row(run_id, step, float(start), flatten(metrics)))
    FILES.append({"path": rel, "rows": rows})


def lifecycle(path_rel):
    """MOSAIC's TelemetryEmitter on stdout (gym_gui/core/worker/telemetry.py),
    with upstream-style prints in between: three runs in one file."""
    rows = []
    clock = [1773107642.0]

    def emit(f, event, run_id, payload):
        clock[0] += 1.0
        record = {"event": event, "run_id": run_id, "timestamp": clock[0], "payload": payload}
        print(json.dumps(record, separators=(",", ":"), sort_keys=True), file=f)
        return clock[0]

    with open_log(path_rel) as f:
        a, b, c = "01KLIFEA", "01KLIFEB", "01KLIFEC"
        payload = {"worker_type": "cleanrl", "algo": "ppo", "env_id": "CartPole-v1", "seed": 1}
        t = emit(f, "run_started", a, payload)
        rows.append(event_row(a, 0, t, config=payload))
        emit(f, "heartbeat", a, {})
        print("global_step=40, episodic_return=[22.]", file=f)
        rows.append(row(a, 40, None, {"charts/episodic_return": 22.0}))
        print("SPS:", 800, file=f)
        rows.append(row(a, 40, None, {"charts/SPS": 800}))
        emit(f, "checkpoint_saved", a, {"path": "ckpt/1"})
        t = emit(f, "run_completed", a, {"episodes": 3, "duration_seconds": 1.5})
        rows.append(event_row(a, 0, t, finished=0))
        t = emit(f, "run_started", b, {"algo": "dqn"})
        rows.append(event_row(b, 0, t, config={"algo": "dqn"}))
        print("SPS:", 5, file=f)  # run B has no step yet: no row
        t = emit(f, "run_cancelled", b, {})
        rows.append(event_row(b, 0, t, finished=130))
        t = emit(f, "run_started", c, {"algo": "ppo", "seed": 2})
        rows.append(event_row(c, 0, t, config={"algo": "ppo", "seed": 2}))
        t = emit(f, "run_failed", c, {"error": "CUDA out of memory", "error_type": "RuntimeError", "step": 1337})
        rows.append(event_row(c, 0, t, finished=1))
    FILES.append({"path": path_rel, "rows": rows})


cleanrl_logging("01KKAQ6XP04TFF59TDWH9EDD1R")
cleanrl_debug_logging("01KKAQ6XP04TFF59TDWH9EDD1Q")
upstream_cleanrl_print("01KKAQ6XP04TFF59TDWH9EDD1S")
json_logger("01KKAQ6XP04TFF59TDWH9EDD1T")
json_logger_timestamp()
structlog_files("01KKAQ6XP04TFF59TDWH9EDD1V")
ray_results("01KKAQ6XP04TFF59TDWH9EDD1W", new_stack=False)
ray_results("01KKAQ6XP04TFF59TDWH9EDD1X", new_stack=True)
lifecycle("worker/stdout.log")

with open(os.path.join(OUT, "expected.json"), "w", encoding="utf-8") as f:
    json.dump({"files": FILES}, f, indent=1, allow_nan=False)
