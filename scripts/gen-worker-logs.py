#!/usr/bin/env python3
"""Write JSON-lines worker logs through Python's logging and
RotatingFileHandler, for the load, rotation and W&B tests and the
benchmarks (stdlib only). This is one synthetic shape, not what MOSAIC's
workers write: scripts/gen-mosaic-runs.py writes those.

Lines go through the standard `logging` module, formatted as JSON and
rotated by `RotatingFileHandler`, under ROOT/var/trainer/runs/<run_id>/logs/.
Three record shapes alternate: flat metric records, records with a nested
`metrics` object, and heartbeats; every so often a foreign non-JSON line is
written straight to the stream. Values include NaN and Infinity, which
Python's json module writes as bare tokens.

    gen-worker-logs.py ROOT [--rows N] [--max-bytes B] [--seed S]
                            [--run-id ID] [--expect FILE] [--delay SECONDS]

--expect writes the rows the agent must deliver, one JSON object a line,
in the format of the agent's jsonl sink (non-finite values as strings).
"""
import argparse
import json
import logging
import logging.handlers
import math
import os
import random
import sys
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def make_ulid(rng):
    ms = int(time.time() * 1000)
    stamp = "".join(ALPHABET[(ms >> (5 * k)) & 31] for k in range(9, -1, -1))
    return stamp + "".join(rng.choice(ALPHABET) for _ in range(16))


class JsonLines(logging.Formatter):
    def format(self, record):
        doc = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + ".%03dZ" % int(record.msecs),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(getattr(record, "payload", {}))
        return json.dumps(doc)


def expected_value(v):
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root")
    ap.add_argument("--rows", type=int, default=3000, help="records to log (2 of 3 carry metrics)")
    ap.add_argument("--max-bytes", type=int, default=64 * 1024, help="rotate past this size (0: never)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--run-id", default=None)
    ap.add_argument("--file", default="worker.log", help="log file name")
    ap.add_argument("--expect", default=None, help="write the expected rows here")
    ap.add_argument("--delay", type=float, default=0.0, help="sleep between records")
    ap.add_argument("--start-step", type=int, default=0)
    a = ap.parse_args()

    rng = random.Random(a.seed)
    run_id = a.run_id or make_ulid(rng)
    logs = os.path.join(a.root, "var", "trainer", "runs", run_id, "logs")
    os.makedirs(logs, exist_ok=True)
    path = os.path.join(logs, a.file)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=a.max_bytes, backupCount=10000)
    handler.setFormatter(JsonLines())
    log = logging.getLogger("worker.%s.%s" % (run_id, a.file))
    log.propagate = False
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    expect = open(a.expect, "a") if a.expect else None
    made = {"flat": 0, "nested": 0, "heartbeat": 0, "foreign": 0}
    for i in range(a.rows):
        step = a.start_step + (i + 1) * 64
        if i % 3 == 0:
            ret = float("nan") if i % 89 == 0 else rng.gauss(120.0, 30.0)
            length = rng.randint(8, 600)
            log.info("episode", extra={"payload": {
                "event": "metrics", "run_id": run_id, "global_step": step,
                "episodic_return": ret, "episodic_length": length}})
            values = {"charts/episodic_return": ret, "charts/episodic_length": length}
            made["flat"] += 1
        elif i % 3 == 1:
            sps = math.inf if i % 157 == 1 else rng.randint(500, 6000)
            losses = {"policy_loss": rng.uniform(-1, 1), "value_loss": rng.uniform(0, 20),
                      "entropy": rng.uniform(0, 2)}
            log.info("update", extra={"payload": {
                "event": "metrics", "run_id": run_id, "global_step": step,
                "metrics": {"losses": losses, "charts": {"learning_rate": 2.5e-4 * (1 - i / (a.rows + 1)),
                                                          "SPS": sps}}}})
            values = {"losses/" + k: v for k, v in losses.items()}
            values["charts/learning_rate"] = 2.5e-4 * (1 - i / (a.rows + 1))
            values["charts/SPS"] = sps
            made["nested"] += 1
        else:
            log.info("alive", extra={"payload": {"event": "heartbeat", "run_id": run_id}})
            values = None
            made["heartbeat"] += 1
        if values is not None and expect:
            expect.write(json.dumps({"run_id": run_id, "step": step, "values": {
                k: expected_value(v) for k, v in sorted(values.items())}}) + "\n")
        if i % 400 == 399:
            handler.stream.write("Warning: some library printed this, not JSON\n")
            handler.stream.flush()
            made["foreign"] += 1
        if a.delay:
            time.sleep(a.delay)
    handler.close()
    if expect:
        expect.close()
    json.dump({"run_id": run_id, "log": path, "records": made}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
