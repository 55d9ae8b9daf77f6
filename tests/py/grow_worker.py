#!/usr/bin/env python3
"""Grow worker files the way live workers do, in small pieces, for the
crash test (tests/crash.rs): the bytes come from the real writers
(stdlib logging with MOSAIC's CleanRL format; TensorBoard's RecordWriter
framing Event protos as its EventFileWriter does), but each write reaches
the file in random pieces, so that a reader sees lines and records cut
anywhere, a record's 12-byte header included.

    grow_worker.py ROOT SEED POINTS EXPECT_JSON

Under ROOT/var/trainer/runs/ it grows three runs at once:
  TEXT   logs/cleanrl.stderr.log only (a worker without TensorBoard);
  EVENTS an event file only (XuanCe-like: tensorboard/seed_1_<ts>/);
  TWIN   both, as MOSAIC's CleanRL worker writes them: every episode to
         the text log and to the event file (created first, as the
         worker's SummaryWriter is), losses to the event file only.
EXPECT_JSON gets {"runs": {name: ULID}, "points": {ULID: [[metric, step,
value], ...]}}: what the jsonl sink must hold at the end, each once (the
TWIN run's text lines give way to its event file).
"""
import json
import logging
import os
import random
import socket
import sys
import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

RUNS = {
    "TEXT": "01KKCRASH0TEXT000000000000",
    "EVENTS": "01KKCRASH0EVENTS0000000000",
    "TWIN": "01KKCRASH0TW1N000000000000",
}
FORMAT = "%(asctime)s | %(levelname)-8s | %(name)s | %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


class Pieces:
    """A file object that hands each write to the file in random pieces,
    flushed one by one, sometimes with a pause between them."""

    def __init__(self, path, rng):
        self.f = open(path, "ab", buffering=0)
        self.rng = rng

    def write(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        i = 0
        while i < len(data):
            n = self.rng.randint(1, 40)
            self.f.write(data[i : i + n])
            i += n
            if self.rng.random() < 0.05:
                time.sleep(0.002)
        return len(data)

    def flush(self):
        pass

    def close(self):
        self.f.close()


class TextPieces:
    """The text stream a logging.StreamHandler writes to, in pieces."""

    def __init__(self, pieces):
        self.pieces = pieces

    def write(self, s):
        self.pieces.write(s)

    def flush(self):
        pass


def event_file(run_dir, sub, rng):
    d = os.path.join(run_dir, "tensorboard", sub)
    os.makedirs(d, exist_ok=True)
    # EventFileWriter's name and first record.
    name = "events.out.tfevents.%010d.%s.%s.%s" % (time.time(), socket.gethostname(), os.getpid(), 0)
    pieces = Pieces(os.path.join(d, name), rng)
    w = RecordWriter(pieces)
    first = event_pb2.Event(
        wall_time=time.time(),
        file_version="brain.Event:2",
        source_metadata=event_pb2.SourceMetadata(writer="tensorboard.summary.writer.event_file_writer"),
    )
    w.write(first.SerializeToString())
    return w


def scalar(w, tag, value, step):
    s = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    w.write(event_pb2.Event(wall_time=time.time(), step=step, summary=s).SerializeToString())
    return [tag, step, float(np.float32(value))]


def text_logger(run_dir, name, rng):
    logs = os.path.join(run_dir, "logs")
    os.makedirs(logs, exist_ok=True)
    handler = logging.StreamHandler(TextPieces(Pieces(os.path.join(logs, "cleanrl.stderr.log"), rng)))
    handler.setFormatter(logging.Formatter(FORMAT, DATEFMT))
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log


def main():
    root, seed, points, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = random.Random(seed)
    runs_dir = os.path.join(root, "var", "trainer", "runs")
    dirs = {k: os.path.join(runs_dir, v) for k, v in RUNS.items()}
    expected = {v: [] for v in RUNS.values()}
    twin_events = event_file(dirs["TWIN"], "CartPole-v1__ppo__1__%d" % int(time.time()), rng)
    text_log = text_logger(dirs["TEXT"], "text", rng)
    twin_log = text_logger(dirs["TWIN"], "twin", rng)
    events = event_file(dirs["EVENTS"], "seed_1_2026_0310_015427", rng)
    steps = {k: 0 for k in RUNS}
    for i in range(points):
        which = rng.choice(list(RUNS))
        steps[which] += rng.randint(1, 8) * 4
        step = steps[which]
        ret = rng.randint(0, 500000) / 997.0
        length = rng.randint(8, 500)
        if which == "TEXT":
            text_log.info("global_step=%d, episodic_return=%.3f, length=%d", step, ret, length)
            expected[RUNS[which]] += [
                ["charts/episodic_return", step, float("%.3f" % ret)],
                ["charts/episodic_length", step, float(length)],
            ]
        elif which == "EVENTS":
            expected[RUNS[which]].append(scalar(events, "actor_loss", -ret / 1000.0, step))
            if i % 3 == 0:
                expected[RUNS[which]].append(scalar(events, "critic_loss", ret, step))
        else:
            twin_log.info("global_step=%d, episodic_return=%.3f, length=%d", step, ret, length)
            expected[RUNS[which]].append(scalar(twin_events, "charts/episodic_return", ret, step))
            expected[RUNS[which]].append(scalar(twin_events, "charts/episodic_length", length, step))
            if i % 5 == 0:
                expected[RUNS[which]].append(scalar(twin_events, "losses/value_loss", ret / 100.0, step))
        if i % 8 == 0:
            time.sleep(0.01)
    with open(out, "w") as f:
        json.dump({"runs": RUNS, "points": expected}, f)


if __name__ == "__main__":
    main()
