#!/usr/bin/env python3
"""Inputs and read-back for scripts/bench-sources.

    bench_sources_gen.py write KIND RUN_DIR POINTS
    bench_sources_gen.py count-tb DIR

`write` writes POINTS metric points (rounded down to whole records) into
the MOSAIC-style run directory RUN_DIR, the way a worker does, as KIND:

  json      JSON lines of the `mosaic-metrics` shape, through stdlib
            logging (a Formatter that dumps the record's `extra` fields),
            to logs/metrics.jsonl;
  text      CleanRL's text lines through stdlib logging with MOSAIC's
            format, to logs/cleanrl.stderr.log;
  tfevents  tensorboardX's SummaryWriter, one add_scalar per tag per step
            (simple_value, as torch's SummaryWriter writes), under
            tensorboard/CartPole-v1__ppo__1__<ts>/.

Every kind carries the same points: records alternate between an episode
(episodic_return, length: 2 points) and an update (learning_rate and five
losses: 6 points), each at its own global_step. Values are multiples of
1/8, exact in float32 and in `%.3f`, so the bench compares every point
exactly. Prints one JSON object: records, points, and the points as
{"tag|step": value}.

`count-tb` prints the number of scalar values in the event files under DIR,
read with TensorBoard's own loader.
"""
import json
import logging
import os
import sys
import time

EPISODE = [("episodic_return", "charts/episodic_return"), ("length", "charts/episodic_length")]
UPDATE = [
    ("learning_rate", "charts/learning_rate"),
    ("value_loss", "losses/value_loss"),
    ("policy_loss", "losses/policy_loss"),
    ("entropy", "losses/entropy"),
    ("approx_kl", "losses/approx_kl"),
    ("clipfrac", "losses/clipfrac"),
]
POINTS_PER_PAIR = len(EPISODE) + len(UPDATE)


def records(points):
    """(step, [(key, tag, value)]) for whole episode+update pairs."""
    for i in range(points // POINTS_PER_PAIR):
        step = 256 * (i + 1)
        yield step, [(k, t, float(10 + i % 490)) if k == "episodic_return" else (k, t, float(10 + i % 190))
                     for k, t in EPISODE]
        yield step + 128, [(k, t, ((i * (j + 3) + j + 1) % 997) / 8.0) for j, (k, t) in enumerate(UPDATE)]


class MetricsJson(logging.Formatter):
    """`{"event": "metrics", "global_step": ..., ...}` from a record's extras."""

    def format(self, record):
        out = {"event": record.getMessage(), "timestamp": record.created}
        out.update(record.metrics)
        return json.dumps(out)


def logger(path, formatter):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter)
    log = logging.getLogger("__main__")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    return log, handler


def write(kind, run_dir, points):
    expected, n = {}, 0
    if kind == "json":
        log, handler = logger(os.path.join(run_dir, "logs", "metrics.jsonl"), MetricsJson())
    elif kind == "text":
        log, handler = logger(
            os.path.join(run_dir, "logs", "cleanrl.stderr.log"),
            logging.Formatter("%(asctime)s | %(levelname)-8s | %(name)s | %(message)s", "%Y-%m-%d %H:%M:%S"),
        )
    elif kind == "tfevents":
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(os.path.join(run_dir, "tensorboard", "CartPole-v1__ppo__1__%d" % int(time.time())))
    else:
        sys.exit("bench_sources_gen: unknown kind %r" % kind)
    for step, values in records(points):
        n += 1
        for _, tag, v in values:
            expected["%s|%d" % (tag, step)] = v
        if kind == "json":
            metrics = {"global_step": step}
            metrics.update((k, int(v) if k == "length" else v) for k, _, v in values)
            log.info("metrics", extra={"metrics": metrics})
        elif kind == "text":
            log.info("global_step=%d, %s", step, ", ".join(
                "%s=%d" % (k, v) if k == "length" else "%s=%.3f" % (k, v) for k, _, v in values))
        else:
            for _, tag, v in values:
                writer.add_scalar(tag, v, step)
    if kind == "tfevents":
        writer.close()
    else:
        handler.close()
    print(json.dumps({"records": n, "points": len(expected), "expected": expected}))


def count_tb(root):
    from tensorboard.backend.event_processing import event_file_loader

    n = 0
    for d, _, files in os.walk(root):
        for f in files:
            if "tfevents" in f:
                for ev in event_file_loader.EventFileLoader(os.path.join(d, f)).Load():
                    n += len(ev.summary.value)
    print(json.dumps({"scalars": n}))


def main():
    if sys.argv[1:2] == ["write"] and len(sys.argv) == 5:
        write(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1:2] == ["count-tb"] and len(sys.argv) == 3:
        count_tb(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
