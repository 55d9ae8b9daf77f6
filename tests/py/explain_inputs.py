#!/usr/bin/env python3
"""Write the inputs of tests/explain.rs with the real writers.

    explain_inputs.py ROOT RUN_ID TB_RUN_ID QUIET_RUN_ID

Under ROOT (a MOSAIC tree) it writes, and prints as JSON what each holds:

- var/trainer/runs/RUN_ID/logs/worker.jsonl: python-json-logger's
  JsonFormatter, three records whose message is not "metrics" and one
  whose message is (global_step 10, episodic_return 1.5);
- var/trainer/runs/RUN_ID/logs/cleanrl.stderr.log: the standard logging
  module with the CleanRL worker's format, one ordinary line and one
  metric line (global_step=44, episodic_return=11.000, length=11);
- var/trainer/runs/RUN_ID/logs/setup.log: three ordinary lines of the
  standard logging module, no metric (beside files of its run that make
  rows);
- var/trainer/runs/QUIET_RUN_ID/logs/chatter.jsonl: 200 python-json-logger
  records, none of them metrics, in a run nothing else is written for;
- var/trainer/runs/TB_RUN_ID/tensorboard/events.out.tfevents.*: TensorBoard's
  own EventFileWriter: its header, a TF 1.x simple_value scalar at step 5,
  a TF 1.x histogram (as torch's add_histogram writes it) at step 6, a TF 2
  histogram (histogram_v2, the histograms plugin's tensor) at step 7 (in a
  run of its own: beside a run's own event files its text logs give way);
- var/trainer/configs/config-RUN_ID.json: the run's configuration, as
  json.dump writes it;
- notes.txt: a file no source lists.

Printed: {"files": {relative path: {"lines": records, "rows": rows the
default rules make of it}}, "event_file": relative path}.
"""
import json
import logging
import os
import sys

import numpy as np
from pythonjsonlogger.json import JsonFormatter
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_v2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

ROOT, RUN, TB_RUN, QUIET_RUN = sys.argv[1:5]
CLEANRL_FORMAT = "%(asctime)s | %(levelname)-8s | %(name)s | %(message)s"
CLEANRL_DATEFMT = "%Y-%m-%d %H:%M:%S"
files = {}


def path(rel):
    p = os.path.join(ROOT, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    return p


def logger_to(rel, formatter, name):
    handler = logging.FileHandler(path(rel))
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


# python-json-logger: three ordinary records, one metric record.
rel = f"var/trainer/runs/{RUN}/logs/worker.jsonl"
fmt = JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
log, h = logger_to(rel, fmt, "worker")
for epoch in range(3):
    log.info("epoch done", extra={"epoch": epoch, "loss": 0.5})
log.info("metrics", extra={"global_step": 10, "episodic_return": 1.5})
h.close()
files[rel] = {"lines": 4, "rows": 1}

# CleanRL's text log.
rel = f"var/trainer/runs/{RUN}/logs/cleanrl.stderr.log"
log, h = logger_to(rel, logging.Formatter(CLEANRL_FORMAT, CLEANRL_DATEFMT), "__main__")
log.info("Starting PPO training on CartPole-v1")
log.info("global_step=44, episodic_return=11.000, length=11")
h.close()
files[rel] = {"lines": 2, "rows": 1}

# Ordinary lines only, beside files of the run that make rows.
rel = f"var/trainer/runs/{RUN}/logs/setup.log"
log, h = logger_to(rel, logging.Formatter(CLEANRL_FORMAT, CLEANRL_DATEFMT), "setup")
for what in ("Loading config", "Creating 4 envs", "Seeding"):
    log.info(what)
h.close()
files[rel] = {"lines": 3, "rows": 0}

# 200 records no rule reads, in a run of their own.
rel = f"var/trainer/runs/{QUIET_RUN}/logs/chatter.jsonl"
log, h = logger_to(rel, fmt, "chatter")
for i in range(200):
    log.info("heartbeat", extra={"tick": i})
h.close()
files[rel] = {"lines": 200, "rows": 0}

# TensorBoard's own writer.
tb = path(f"var/trainer/runs/{TB_RUN}/tensorboard/x")
w = EventFileWriter(os.path.dirname(tb))
s = summary_pb2.Summary()
s.value.add(tag="charts/episodic_return", simple_value=11.0)
w.add_event(event_pb2.Event(wall_time=1_773_107_642.0, step=5, summary=s))
s = summary_pb2.Summary()
s.value.add(tag="weights", histo=summary_pb2.HistogramProto(min=0.0, max=1.0, num=2.0))
w.add_event(event_pb2.Event(wall_time=1_773_107_643.0, step=6, summary=s))
s = summary_pb2.Summary()
s.value.extend(histogram_v2.histogram_pb("actions", np.arange(4.0)).value)
w.add_event(event_pb2.Event(wall_time=1_773_107_644.0, step=7, summary=s))
w.close()
(name,) = [n for n in os.listdir(os.path.dirname(tb)) if n.startswith("events.out.tfevents.")]
event_rel = f"var/trainer/runs/{TB_RUN}/tensorboard/{name}"
files[event_rel] = {"lines": 4, "rows": 1}

# The run's configuration document.
rel = f"var/trainer/configs/config-{RUN}.json"
with open(path(rel), "w") as f:
    json.dump({"algo": "ppo", "env_id": "CartPole-v1", "learning_rate": 0.00025}, f, indent=2)
files[rel] = {"lines": 1, "rows": 1}

with open(path("notes.txt"), "w") as f:
    f.write("global_step=1, episodic_return=2.0\n")

json.dump({"files": files, "event_file": event_rel}, sys.stdout)
