#!/usr/bin/env python3
"""Write MOSAIC run directories the way MOSAIC's workers write them, for
the committed samples, the demo and the end-to-end tests.

    gen-mosaic-runs.py ROOT [--seed S] [--time EPOCH] [--host NAME]
                            [--workers LIST] [--expect FILE]

Under ROOT/var/trainer/ it writes one run per worker shape (ULIDs made as
MOSAIC makes them, python-ulid's str(ULID()): 48-bit milliseconds and 80
random bits in Crockford base32), each with its configuration document
configs/config-<ULID>.json, and prints {"runs": {ULID: worker}} on stdout.
The real libraries write the files (facts and sources:
../shared/worker-formats.md, issue 10):

  cleanrl-ppo  MOSAIC's CleanRL PPO (cleanrl_worker/algorithms/ppo.py):
               stdlib logging with its basicConfig format to
               logs/cleanrl.stderr.log (`global_step=44,
               episodic_return=11.000, length=11`; SPS only at DEBUG, so
               not written), an empty logs/cleanrl.stdout.log, and
               torch's SummaryWriter layout in
               tensorboard/<env>__<exp>__<seed>__<unix_ts>/ (CleanRL's tags,
               simple_value scalars, the `hyperparameters` text summary).
  cleanrl-dqn  upstream CleanRL dqn.py: print() to logs/cleanrl.stdout.log
               (`global_step=19, episodic_return=[20.]`, `SPS: 2224`) and
               its event file (charts/*, losses/td_loss, losses/q_values).
  xuance       XuanCe PPO: `[worker stderr] ... LOG1021 XuanCe training
               started` lines (no metrics) and torch's SummaryWriter in
               tensorboard/seed_<s>_<YYYY_MMDD_HHMMSS>/ (actor_loss, ... at
               current_step) with add_scalars' child writers
               <logdir>/<main_tag with / as _>_<key>/ for 2 envs.
  ray          Ray RLlib PPO, old API stack, through MOSAIC's ray_worker:
               Ray's UnifiedLogger in tensorboard/ (result.json lines with
               the whole config and bare NaN, progress.csv, params.json,
               tensorboardX's ray/tune/* event file), MOSAIC's own writer
               (train/*, perf/*) beside it, and logs/worker.log lifecycle
               text.
  json-logger  a worker logging through python-json-logger
               (logs/train.jsonl, message "metrics"): no event files, so
               the agent's TensorBoard sink writes its points.

torch is not needed: torch.utils.tensorboard's FileWriter is TensorBoard's
EventFileWriter, and its add_scalar/add_scalars/add_text events are built
here the way torch builds them (simple_value = float(value)).

Deterministic for a given --seed and --time (values, steps, wall times,
ULIDs, event file names). Without --time the ULIDs and times start
now, so each call makes new runs.

--expect FILE writes what the agent's sinks must receive, one JSON object:
{"runs": {ULID: {"worker", "event_files": bool}}, "points": [point, ...]}
where a point is {"run", "metric", "step", "value", "source", "sinks",
"tb": [dir, tag] | null, "twin": bool}:
  metric  the name jsonl and W&B show (W&B's TensorBoard sync naming,
          src/source/tfevents/naming.rs: <namespace>/<tag>);
  value   a number, or "NaN" / "Infinity" / "-Infinity"; event-file values
          are the float32 the file stores;
  source  "event" (a worker's event file), "text" (a text log line),
          "result.json", "json-log";
  sinks   of "jsonl", "wandb", "tensorboard": every point in "jsonl" and
          "wandb" is received there exactly once; "tensorboard" lists the
          points `tensorboard --logdir var/trainer/runs` must show, in
          run directory `tb[0]` (relative to var/trainer/runs) under tag
          `tb[1]`: the worker's own event points, plus the agent's for runs
          whose worker writes none;
  twin    a text point the worker also wrote to its event file (written
          twice: it must arrive once, as the event file's point). Text
          points of runs with event files have no sinks: the CleanRL text
          rule gives way to the event file (yields_to_tensorboard). A text
          point with twin false there is DQN's `SPS: N`, which the text
          rule puts at the latest printed global_step while the event
          file has it at the step of the SPS computation.
"""
import argparse
import csv
import io
import json
import logging
import math
import os
import random
import socket
import sys
import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# MOSAIC's CleanRL worker logging (cleanrl_worker/algorithms/ppo.py).
CLEANRL_FORMAT = "%(asctime)s | %(levelname)-8s | %(name)s | %(message)s"
CLEANRL_DATEFMT = "%Y-%m-%d %H:%M:%S"
# MOSAIC's ray_worker file handler (ray_worker/runtime.py, _HUMAN_FMT).
RAY_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"
RAY_DATEFMT = "%Y-%m-%d %H:%M:%S"

# The worker process's pid, in event file names and Ray's results.
WORKER_PID = 4242

WORKERS = ["cleanrl-ppo", "cleanrl-dqn", "xuance", "ray", "json-logger"]


def ulid(ms, rng):
    """python-ulid's layout: 48-bit timestamp, 80 random bits, base32."""
    value = (ms << 80) | rng.getrandbits(80)
    return "".join(CROCKFORD[(value >> (5 * k)) & 31] for k in range(25, -1, -1))


def f32(v):
    return float(np.float32(v))


def num(v):
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


class Clock:
    """Wall times for the writers and the logging records: a fixed start
    plus the simulated training time, so that runs are reproducible."""

    def __init__(self, start):
        self.now = start

    def tick(self, secs):
        self.now += secs
        return self.now


class WriterClock:
    """While a writer is made, time.time() reads the simulated clock and
    os.getpid() the worker's pid (WORKER_PID): the writers take the event
    file's name and its first record's wall time from them, as they would
    in the worker at the run's start."""

    def __init__(self, clock):
        self.clock = clock

    def __enter__(self):
        self.real = time.time, os.getpid
        time.time = lambda: self.clock.now
        os.getpid = lambda: WORKER_PID

    def __exit__(self, *exc):
        time.time, os.getpid = self.real


class Expect:
    def __init__(self):
        self.runs = {}
        self.points = []

    def run(self, run_id, worker, event_files):
        self.runs[run_id] = {"worker": worker, "event_files": event_files}

    def point(self, run, metric, step, value, source, sinks, tb=None, twin=False):
        self.points.append(
            {
                "run": run,
                "metric": metric,
                "step": int(step),
                "value": num(value),
                "source": source,
                "sinks": sinks,
                "tb": tb,
                "twin": twin,
            }
        )


class TorchWriter:
    """torch.utils.tensorboard.SummaryWriter's events, through the writer
    torch itself uses (TensorBoard's EventFileWriter): add_scalar and
    add_scalars as simple_value, add_scalars' one child writer per key in
    <logdir>/<main_tag with '/' -> '_'>_<key>, add_text as torch's text
    summary. Every scalar is also recorded as an expected event point."""

    def __init__(self, run_dir, logdir, expect, run_id, clock):
        self.run_dir, self.logdir = run_dir, logdir
        self.expect, self.run_id = expect, run_id
        self.clock = clock
        with WriterClock(clock):
            self.main = EventFileWriter(logdir)
        self.children = {}

    def _rel(self, d):
        return os.path.relpath(d, os.path.dirname(self.run_dir))

    def _write(self, writer, tag, value, step, wall):
        # torch: make_np(value), one element, float().
        value = float(np.asarray(value).reshape(()))
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(event_pb2.Event(summary=summary, wall_time=wall, step=int(step)))

    def add_scalar(self, tag, value, step, wall):
        self._write(self.main, tag, value, step, wall)
        # The main writer's own directory is the outermost writer: no namespace.
        self.expect.point(
            self.run_id, tag, step, f32(np.asarray(value).reshape(())), "event", ["jsonl", "wandb", "tensorboard"],
            tb=[self._rel(self.logdir), tag],
        )

    def add_scalars(self, main_tag, values, step, wall):
        for key, value in values.items():
            child_dir = self.logdir + "/" + main_tag.replace("/", "_") + "_" + key
            if child_dir not in self.children:
                with WriterClock(self.clock):
                    self.children[child_dir] = EventFileWriter(child_dir)
            self._write(self.children[child_dir], main_tag, value, step, wall)
            namespace = os.path.relpath(child_dir, self.logdir)
            self.expect.point(
                self.run_id, namespace + "/" + main_tag, step, f32(value), "event",
                ["jsonl", "wandb", "tensorboard"], tb=[self._rel(child_dir), main_tag],
            )

    def add_text(self, tag, text, wall):
        meta = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text", content=b"")
        )
        tensor = tensor_pb2.TensorProto(
            dtype=7,  # DT_STRING
            string_val=[text.encode("utf-8")],
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
        )
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag + "/text_summary", metadata=meta, tensor=tensor)]
        )
        self.main.add_event(event_pb2.Event(summary=summary, wall_time=wall, step=0))

    def close(self):
        self.main.close()
        for w in self.children.values():
            w.close()


def opened(path, mode="w"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, mode, encoding="utf-8")


def file_logger(name, stream, fmt, datefmt, clock, level=logging.INFO, formatter=None):
    """A logger writing to `stream` whose records carry the simulated time."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or logging.Formatter(fmt, datefmt))
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(level)

    def stamp(record):
        record.created = clock.now
        record.msecs = (clock.now - int(clock.now)) * 1000.0
        return True

    handler.addFilter(stamp)
    return log


def write_config(root, run_id, worker_module, worker_config, run_name, clock):
    """MOSAIC's trainer service saves the submitted run configuration
    (TrainRunConfig, gym_gui/services/trainer/config.py) as
    var/trainer/configs/config-<ULID>.json."""
    doc = {
        "run_name": run_name,
        "entry_point": "python",
        "arguments": ["-m", worker_module],
        "environment": {"MOSAIC_RUN_ID": run_id, "TRAINER_RUN_ID": run_id},
        "resources": {"cpus": 2, "memory_mb": 4096, "gpus": {"requested": 0, "mandatory": False}},
        "artifacts": {"output_prefix": f"runs/{run_name}", "persist_logs": True, "keep_checkpoints": True},
        "metadata": {
            "ui": {"worker_id": worker_config["worker_id"], "submitted_at": clock.now},
            "worker": {"module": worker_module, "config": dict(worker_config, run_id=run_id)},
            "artifacts": {
                "tensorboard": {
                    "enabled": True,
                    "relative_path": f"var/trainer/runs/{run_id}/tensorboard",
                }
            },
        },
    }
    with opened(os.path.join(root, "var", "trainer", "configs", f"config-{run_id}.json")) as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def episodes(rng, env_steps, first_len, growth):
    """CartPole episode lengths for one env: reward 1 a step, so the return
    is the length; lengths grow as the policy learns."""
    out, t, k = [], 0, 0
    while True:
        length = max(8, int(first_len + growth * k + rng.randint(-4, 6)))
        if t + length > env_steps:
            return out
        t += length
        out.append((t, length))
        k += 1


def cleanrl_ppo(root, run_id, rng, clock, expect):
    run_dir = os.path.join(root, "var", "trainer", "runs", run_id)
    env_id, exp, seed = "CartPole-v1", "ppo", 1
    num_envs, num_steps, iterations = 4, 32, 4
    args = {
        "exp_name": exp, "seed": seed, "torch_deterministic": True, "cuda": False, "track": False,
        "env_id": env_id, "total_timesteps": num_envs * num_steps * iterations,
        "learning_rate": 2.5e-4, "num_envs": num_envs, "num_steps": num_steps, "anneal_lr": True,
        "gamma": 0.99, "gae_lambda": 0.95, "num_minibatches": 4, "update_epochs": 4,
        "norm_adv": True, "clip_coef": 0.2, "clip_vloss": True, "ent_coef": 0.01, "vf_coef": 0.5,
        "max_grad_norm": 0.5, "target_kl": None, "batch_size": num_envs * num_steps,
        "minibatch_size": num_envs * num_steps // 4, "num_iterations": iterations,
    }
    run_name = f"{env_id}__{exp}__{seed}__{int(clock.now)}"
    write_config(root, run_id, "cleanrl_worker.cli", dict(args, worker_id="cleanrl_worker", algo="ppo"), run_name, clock)
    expect.run(run_id, "cleanrl-ppo", True)
    logs = os.path.join(run_dir, "logs")
    opened(os.path.join(logs, "cleanrl.stdout.log")).close()
    stderr = opened(os.path.join(logs, "cleanrl.stderr.log"))
    log = file_logger("__main__", stderr, CLEANRL_FORMAT, CLEANRL_DATEFMT, clock)
    writer = TorchWriter(run_dir, os.path.join(run_dir, "tensorboard", run_name), expect, run_id, clock)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in args.items()),
        clock.now,
    )
    log.info("Using MlpAgent for %s", env_id)
    # Each env's episode ends (env step index within the whole run).
    env_steps = num_steps * iterations
    ends = {}
    for e in range(num_envs):
        for t, length in episodes(rng, env_steps, 12 + 3 * e, 4.0):
            ends.setdefault(t, []).append((e, length))
    global_step, start = 0, clock.now
    lr = args["learning_rate"]
    for it in range(1, iterations + 1):
        frac = 1.0 - (it - 1.0) / iterations
        lr_now = frac * lr
        for step in range(num_steps):
            global_step += num_envs
            clock.tick(0.002)
            t = (it - 1) * num_steps + step + 1
            seen = set()
            for e, length in ends.get(t, []):
                # Two envs ending at one global_step with one length would be
                # the same point twice; real runs can do that, but the tests'
                # point-by-point checks want points told apart.
                while length in seen:
                    length += 1
                seen.add(length)
                ret = float(length)
                log.info("global_step=%d, episodic_return=%.3f, length=%d", global_step, ret, length)
                for metric, v in [("charts/episodic_return", ret), ("charts/episodic_length", length)]:
                    writer.add_scalar(metric, v, global_step, clock.now)
                    expect.point(run_id, metric, global_step, float("%.3f" % v) if metric.endswith("return") else v,
                                 "text", [], twin=True)
        clock.tick(0.05)
        losses = {
            "losses/value_loss": 40.0 / it + rng.random(),
            "losses/policy_loss": -0.01 * rng.random(),
            "losses/entropy": 0.693 - 0.004 * it - 0.001 * rng.random(),
            "losses/old_approx_kl": 0.001 * rng.random(),
            "losses/approx_kl": 0.001 * rng.random(),
            "losses/clipfrac": float(np.mean([rng.random() < 0.1 for _ in range(16)])),
            "losses/explained_variance": -0.5 + 0.2 * it + 0.01 * rng.random(),
        }
        writer.add_scalar("charts/learning_rate", lr_now, global_step, clock.now)
        for tag, v in losses.items():
            writer.add_scalar(tag, v, global_step, clock.now)
        sps = int(global_step / (clock.now - start))
        log.debug("SPS: %d", sps)  # DEBUG: not written at INFO
        writer.add_scalar("charts/SPS", sps, global_step, clock.now)
    log.info("Model saved to %s", f"runs/{run_name}/{exp}.cleanrl_model")
    writer.close()
    stderr.close()


def cleanrl_dqn(root, run_id, rng, clock, expect):
    run_dir = os.path.join(root, "var", "trainer", "runs", run_id)
    env_id, exp, seed = "CartPole-v1", "dqn", 1
    total, learning_starts, train_frequency = 720, 400, 10
    args = {
        "exp_name": exp, "seed": seed, "env_id": env_id, "total_timesteps": total,
        "learning_rate": 2.5e-4, "num_envs": 1, "buffer_size": 10000, "gamma": 0.99, "tau": 1.0,
        "target_network_frequency": 500, "batch_size": 128, "start_e": 1.0, "end_e": 0.05,
        "exploration_fraction": 0.5, "learning_starts": learning_starts, "train_frequency": train_frequency,
    }
    run_name = f"{env_id}__{exp}__{seed}__{int(clock.now)}"
    write_config(root, run_id, "cleanrl_worker.cli", dict(args, worker_id="cleanrl_worker", algo="dqn"), run_name, clock)
    expect.run(run_id, "cleanrl-dqn", True)
    logs = os.path.join(run_dir, "logs")
    stdout = opened(os.path.join(logs, "cleanrl.stdout.log"))
    opened(os.path.join(logs, "cleanrl.stderr.log")).close()
    writer = TorchWriter(run_dir, os.path.join(run_dir, "tensorboard", run_name), expect, run_id, clock)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % "\n".join(f"|{k}|{v}|" for k, v in args.items()),
        clock.now,
    )
    ends = dict(episodes(rng, total, 10, 2.5))
    start, last_printed = clock.now, None
    for global_step in range(total):
        clock.tick(0.0004)
        if global_step in ends:
            length = ends[global_step]
            r = np.array([float(length)], dtype=np.float32)
            l = np.array([length], dtype=np.int32)
            print(f"global_step={global_step}, episodic_return={r}", file=stdout)
            writer.add_scalar("charts/episodic_return", r, global_step, clock.now)
            writer.add_scalar("charts/episodic_length", l, global_step, clock.now)
            expect.point(run_id, "charts/episodic_return", global_step, float(r[0]), "text", [], twin=True)
            last_printed = global_step
        if global_step > learning_starts and global_step % train_frequency == 0 and global_step % 100 == 0:
            loss = np.float32(1.0 / (1 + global_step / 100.0) + 0.01 * rng.random())
            q = np.float32(1.0 + global_step / 200.0 + rng.random())
            writer.add_scalar("losses/td_loss", loss, global_step, clock.now)
            writer.add_scalar("losses/q_values", q, global_step, clock.now)
            sps = int(global_step / (clock.now - start))
            print("SPS:", sps, file=stdout)
            writer.add_scalar("charts/SPS", sps, global_step, clock.now)
            if last_printed is not None:
                expect.point(run_id, "charts/SPS", last_printed, sps, "text", [],
                             twin=last_printed == global_step)
    print(f"model saved to runs/{run_name}/{exp}.cleanrl_model", file=stdout)
    writer.close()
    stdout.close()


class Prefixed(io.TextIOBase):
    """MOSAIC's dispatcher copies a worker's stderr into the run's logs,
    each line prefixed with "[worker stderr] "."""

    def __init__(self, f):
        self.f = f

    def write(self, s):
        for line in s.splitlines(keepends=True):
            self.f.write("[worker stderr] " + line)
        return len(s)

    def flush(self):
        self.f.flush()


def xuance(root, run_id, rng, clock, expect):
    run_dir = os.path.join(root, "var", "trainer", "runs", run_id)
    seed, n_envs, horizon, epochs = 1, 2, 64, 4
    cfg = {"agent": "PPO_Clip", "env_name": "Classic Control", "env_id": "CartPole-v1", "seed": seed,
           "parallels": n_envs, "horizon_size": horizon, "learning_rate": 4e-4, "clip_range": 0.2,
           "running_steps": n_envs * horizon * epochs, "logger": "tensorboard", "device": "cpu"}
    write_config(root, run_id, "xuance_worker.cli", dict(cfg, worker_id="xuance_worker"), "xuance-ppo", clock)
    expect.run(run_id, "xuance", True)
    logs = os.path.join(run_dir, "logs")
    opened(os.path.join(logs, "xuance_worker.stdout.log")).close()
    raw = opened(os.path.join(logs, "xuance_worker.stderr.log"))
    log = file_logger("xuance_worker.runtime", Prefixed(raw), "%(asctime)s [%(levelname)s] %(name)s: %(message)s",
                      None, clock)
    log.info("LOG1020 XuanCe runtime configured")
    tb_dir = os.path.join(run_dir, "tensorboard")
    log.info("Set parser_args.log_dir = %s", os.path.relpath(tb_dir, root))
    # XuanCe's get_time_string: local time, YYYY_MMDD_HHMMSS.
    stamp = time.strftime("%Y_%m%d_%H%M%S", time.localtime(clock.now))
    writer = TorchWriter(run_dir, os.path.join(tb_dir, f"seed_{seed}_{stamp}"), expect, run_id, clock)
    log.info("LOG1021 XuanCe training started")
    ends = [dict(episodes(rng, horizon * epochs, 14 + 5 * e, 3.0)) for e in range(n_envs)]
    current_step = 0
    for epoch in range(epochs):
        for t in range(horizon):
            clock.tick(0.003)
            k = epoch * horizon + t + 1
            for i in range(n_envs):
                if k in ends[i]:
                    length = ends[i][k]
                    score = float(length) + (0.5 if i else 0.0)
                    # log_infos: add_scalar fails on a dict, add_scalars takes it.
                    writer.add_scalars("Episode-Steps/rank_0", {f"env-{i}": length}, current_step, clock.now)
                    writer.add_scalars("Train-Episode-Rewards/rank_0", {f"env-{i}": score}, current_step, clock.now)
            current_step += n_envs
        clock.tick(0.04)
        info = {
            "actor_loss": -0.02 * rng.random(),
            "critic_loss": 30.0 / (epoch + 1) + rng.random(),
            "entropy": 0.69 - 0.01 * epoch,
            "learning_rate": 4e-4 * (1 - epoch / epochs),
            "predict_value": 2.0 + epoch + rng.random(),
            "clip_ratio": rng.randint(0, 12) / 128.0,
        }
        for k, v in info.items():
            writer.add_scalar(k, v, current_step, clock.now)
    log.info("LOG1022 XuanCe training completed")
    writer.close()
    raw.close()


class RayEncoder(json.JSONEncoder):
    """Ray's SafeFallbackEncoder: numpy values as Python numbers."""

    def default(self, value):
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
        return super().default(value)


def flatten(d, prefix=""):
    """ray.tune.utils.flatten_dict with delimiter "/"."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def ray(root, run_id, rng, clock, expect):
    from tensorboardX import SummaryWriter as TBXWriter

    run_dir = os.path.join(root, "var", "trainer", "runs", run_id)
    tb_dir = os.path.join(run_dir, "tensorboard")
    os.makedirs(tb_dir, exist_ok=True)
    batch, iterations = 4000, 4
    config = {
        "env": "CartPole-v1", "framework": "torch", "lr": 5e-5, "gamma": 0.99, "lambda": 1.0,
        "train_batch_size": batch, "sgd_minibatch_size": 128, "num_sgd_iter": 30,
        "model": {"fcnet_hiddens": [256, 256], "fcnet_activation": "tanh"},
        "clip_param": 0.3, "vf_clip_param": 10.0, "grad_clip": None, "kl_coeff": 0.2,
        "num_env_runners": 2, "enable_rl_module_and_learner": False,
        "enable_env_runner_and_connector_v2": False, "seed": 1,
    }
    write_config(root, run_id, "ray_worker.cli",
                 {"worker_id": "ray_worker", "algorithm": "PPO", "env_id": "CartPole-v1",
                  "training": {"total_timesteps": batch * iterations, "algo_params": {"train_batch_size": batch}}},
                 "ray-ppo", clock)
    expect.run(run_id, "ray", True)
    wlog = opened(os.path.join(run_dir, "logs", "worker.log"))
    log = file_logger("ray_worker.runtime", wlog, RAY_FORMAT, RAY_DATEFMT, clock)
    log.info("Using algorithm: PPO (PPOConfig)")
    # MOSAIC's own writer (torch SummaryWriter) comes up first, then
    # build_algo's UnifiedLogger (JsonLogger, CSVLogger, TBXLogger).
    mosaic = TorchWriter(run_dir, tb_dir, expect, run_id, clock)
    log.info("TensorBoard logging to: %s", os.path.relpath(tb_dir, root))
    with open(os.path.join(tb_dir, "params.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True, cls=RayEncoder)
    with WriterClock(clock):
        tbx = TBXWriter(tb_dir, flush_secs=30)
    log.info("Training for %d iterations", iterations)
    results = open(os.path.join(tb_dir, "result.json"), "a")
    progress = open(os.path.join(tb_dir, "progress.csv"), "a")
    csv_out = None
    start = clock.now
    episodes_total = 0
    for it in range(1, iterations + 1):
        clock.tick(4.0 + rng.random())
        done_now = 0 if it == 1 else rng.randint(100, 180)
        episodes_total += done_now
        mean = float("nan") if it == 1 else round(20.0 * it + rng.random(), 6)
        result = {
            "custom_metrics": {},
            "episode_media": {},
            "info": {
                "learner": {
                    "default_policy": {
                        "learner_stats": {
                            "cur_kl_coeff": 0.2,
                            "cur_lr": 5e-5,
                            "total_loss": round(9.0 / it + rng.random(), 6),
                            "policy_loss": round(-0.04 * rng.random(), 6),
                            "vf_loss": round(8.0 + rng.random(), 6),
                            "vf_explained_var": np.float32(0.1 * it),
                            "kl": round(0.01 * rng.random(), 6),
                            "entropy": np.float32(0.69 - 0.01 * it),
                            "entropy_coeff": 0.0,
                        },
                        "num_agent_steps_trained": 128.0,
                    }
                },
                "num_env_steps_sampled": batch * it,
                "num_env_steps_trained": batch * it,
            },
            "env_runners": {
                "episode_reward_max": float("nan") if it == 1 else 40.0 + 10 * it,
                "episode_reward_min": float("nan") if it == 1 else 9.0,
                "episode_reward_mean": mean,
                "episode_len_mean": mean,
                "episodes_this_iter": done_now,
                "num_faulty_episodes": 0,
                "hist_stats": {"episode_reward": [] if it == 1 else [12.0, 30.0, float(10 * it)],
                               "episode_lengths": [] if it == 1 else [12, 30, 10 * it]},
                "sampler_perf": {"mean_env_wait_ms": round(0.05 + 0.01 * rng.random(), 6)},
            },
            "num_healthy_workers": 2,
            "timesteps_total": batch * it,
            "episodes_total": episodes_total,
            "timers": {
                "training_iteration_time_ms": round(4000 + 100 * rng.random(), 3),
                "sample_time_ms": round(1500 + 100 * rng.random(), 3),
                "learn_time_ms": round(2500 + 100 * rng.random(), 3),
            },
            "perf": {"cpu_util_percent": round(30 + 10 * rng.random(), 2), "ram_util_percent": 61.0},
            "done": it == iterations,
            "training_iteration": it,
            "trial_id": "default",
            "date": time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(clock.now)),
            "timestamp": int(clock.now),
            "time_this_iter_s": round(clock.now - start - (it - 1) * 4.5, 6),
            "time_total_s": round(clock.now - start, 6),
            "pid": WORKER_PID,
            "hostname": "gpu-1",
            "node_ip": "10.0.0.5",
            "time_since_restore": round(clock.now - start, 6),
            "iterations_since_restore": it,
            "config": config,
        }
        step = result["timesteps_total"]
        # JsonLogger: json.dump with Ray's encoder, then a newline.
        json.dump(result, results, cls=RayEncoder)
        results.write("\n")
        results.flush()
        flat_metrics = {}
        for k, v in flatten({k: v for k, v in result.items() if k not in ("config", "pid", "timestamp")}).items():
            if isinstance(v, (bool, int, float, np.floating, np.integer)):
                flat_metrics[k] = float(v)
        for k, v in flat_metrics.items():
            expect.point(run_id, k, step, float(v), "result.json", ["jsonl", "wandb"])
        # CSVLogger: flattened, header from the first result.
        flat = flatten({k: v for k, v in result.items() if k != "config"})
        if csv_out is None:
            csv_out = csv.DictWriter(progress, flat.keys())
            csv_out.writeheader()
        csv_out.writerow({k: v for k, v in flat.items() if k in csv_out.fieldnames})
        progress.flush()
        # TBXLogger.on_result
        tmp = {k: v for k, v in result.items() if k not in ("config", "pid", "timestamp", "time_total_s", "training_iteration")}
        for attr, value in flatten(tmp).items():
            full = "ray/tune/" + attr
            if isinstance(value, (int, float, np.float32, np.float64, np.int32, np.int64)) and not np.isnan(value):
                tbx.add_scalar(full, value, global_step=step, walltime=clock.now)
                expect.point(run_id, full, step, f32(value), "event", ["jsonl", "wandb", "tensorboard"],
                             tb=[os.path.relpath(tb_dir, os.path.dirname(run_dir)), full])
            elif isinstance(value, list) and len(value) > 0:
                tbx.add_histogram(full, np.array(value), global_step=step, walltime=clock.now)
        tbx.flush()
        # MOSAIC's _log_metrics (old API stack keys).
        env_runners = result["env_runners"]
        metrics = {
            "train/episode_reward_mean": env_runners["episode_reward_mean"],
            "train/episode_len_mean": env_runners["episode_len_mean"],
            "train/num_episodes": result["episodes_total"],
            "perf/time_total_s": result["time_total_s"],
            "perf/learn_time_ms": result["timers"]["learn_time_ms"],
            "perf/sample_time_ms": result["timers"]["sample_time_ms"],
        }
        for k, v in metrics.items():
            mosaic.add_scalar(k, v, step, clock.now)
        log.info("Iteration %d/%d: timesteps=%d reward_mean=%s", it, iterations, step, mean)
    log.info("Training completed successfully")
    log.info("TensorBoard writer closed")
    results.close()
    progress.close()
    tbx.close()
    mosaic.close()
    wlog.close()


def json_logger(root, run_id, rng, clock, expect):
    from pythonjsonlogger.json import JsonFormatter

    run_dir = os.path.join(root, "var", "trainer", "runs", run_id)
    write_config(root, run_id, "my_worker.train", {"worker_id": "custom", "algo": "a2c", "env_id": "CartPole-v1"},
                 "custom-a2c", clock)
    expect.run(run_id, "json-logger", False)
    f = opened(os.path.join(run_dir, "logs", "train.jsonl"))
    log = file_logger("train", f, None, None, clock,
                      formatter=JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    log.info("Loaded 4 envs", extra={"env_id": "CartPole-v1"})
    names = {"episodic_return": "charts/episodic_return", "episodic_length": "charts/episodic_length",
             "value_loss": "losses/value_loss", "SPS": "charts/SPS"}
    for k in range(1, 13):
        step = 80 * k
        extra = {"global_step": step, "episodic_return": float(10 + 2 * k), "episodic_length": 10 + 2 * k}
        if k % 3 == 0:
            extra.update({"value_loss": round(5.0 / k, 6), "SPS": 1900 + k})
        if k == 1:
            extra["value_loss"] = float("nan")
        clock.tick(1.5)
        log.info("metrics", extra=extra)
        for key, tag in names.items():
            if key in extra:
                expect.point(run_id, tag, step, extra[key], "json-log", ["jsonl", "wandb", "tensorboard"],
                             tb=[os.path.relpath(os.path.join(run_dir, "tensorboard"), os.path.dirname(run_dir)), tag])
    log.info("done")
    f.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--time", type=float, default=None, help="epoch seconds the runs start at (default: now)")
    ap.add_argument("--host", default="gpu-1", help="host name the writers put in event file names")
    ap.add_argument("--workers", default=",".join(WORKERS), help="comma-separated, of: " + ", ".join(WORKERS))
    ap.add_argument("--expect", default=None)
    a = ap.parse_args()

    # The writers name files after the host, as on the worker's machine.
    socket.gethostname = lambda: a.host
    rng = random.Random(a.seed)
    clock = Clock(a.time if a.time is not None else time.time())
    expect = Expect()
    made = {}
    for worker in a.workers.split(","):
        fn = {"cleanrl-ppo": cleanrl_ppo, "cleanrl-dqn": cleanrl_dqn, "xuance": xuance, "ray": ray,
              "json-logger": json_logger}.get(worker)
        if fn is None:
            ap.error(f"unknown worker {worker!r}")
        run_id = ulid(int(clock.now * 1000), rng)
        fn(a.root, run_id, rng, clock, expect)
        made[run_id] = worker
        clock.tick(60.0)
    if a.expect:
        with open(a.expect, "w") as f:
            json.dump({"runs": expect.runs, "points": expect.points}, f, indent=0, allow_nan=False)
    json.dump({"runs": made}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
