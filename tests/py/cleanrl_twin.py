#!/usr/bin/env python3
"""Write one CleanRL-shaped run the way MOSAIC's CleanRL worker writes it:
metrics both as text log lines (stdlib logging with the worker's format,
to logs/cleanrl.stderr.log) and to its own TensorBoard event file
(TensorBoard's EventFileWriter, simple_value scalars as torch's
SummaryWriter writes them), under RUN_DIR.

    cleanrl_twin.py RUN_DIR STEPS

Prints the points written to the event file, one JSON list per line:
[tag, step, value].
"""
import json
import logging
import os
import sys
import time

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def main():
    run_dir, steps = sys.argv[1], int(sys.argv[2])
    logs = os.path.join(run_dir, "logs")
    tb = os.path.join(run_dir, "tensorboard", "CartPole-v1__ppo__1__%d" % int(time.time()))
    os.makedirs(logs, exist_ok=True)
    writer = EventFileWriter(tb)
    handler = logging.FileHandler(os.path.join(logs, "cleanrl.stderr.log"))
    handler.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-8s | %(name)s | %(message)s", "%Y-%m-%d %H:%M:%S")
    )
    log = logging.getLogger("__main__")
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def scalar(tag, value, step):
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        print(json.dumps([tag, step, value]))

    for i in range(1, steps + 1):
        step = 16 * i
        ret, length = float(10 + i), 10 + i
        log.info("global_step=%d, episodic_return=%.3f, length=%d", step, ret, length)
        scalar("charts/episodic_return", ret, step)
        scalar("charts/episodic_length", length, step)
        scalar("losses/value_loss", 0.5 / i, step)
    writer.close()
    handler.close()


if __name__ == "__main__":
    main()
