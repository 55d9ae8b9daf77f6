"""Writes a run's console files as a worker did AGO seconds ago: a backlog
the agent reads later (after a restart, or staged and synced), for the
tests of console times in W&B's Logs tab (tests/wandb_logs.rs).

The worker's clock is moved back AGO seconds (time.time and time.time_ns,
which `logging` reads), and it advances 1.5 s between lines:
- `logs/worker.stderr.log`: Python `logging` with its default time format
  (`%(asctime)s`, local time, milliseconds after a comma), one line without
  a time of its own (a traceback's first line) between two;
- `logs/worker.stdout.log`: plain `print` lines without a time, and
  structlog-style JSON lines with an ISO 8601 UTC `timestamp`.
Both files' modification time is then set to the worker's clock.

Usage: console_backlog.py RUN_DIR AGO_SECONDS
Prints one JSON object: {"mtime": <the files' mtime>, "lines": {"stdout":
[[text, time or null], ...], "stderr": [...]}}, each line's time as
Python itself reads it from the line (null: the line has none).
"""

import datetime
import json
import logging
import os
import sys
import time

run_dir, ago = sys.argv[1], float(sys.argv[2])
clock = [time.time() - ago]
time.time = lambda: clock[0]
time.time_ns = lambda: int(clock[0] * 1e9)


def tick():
    clock[0] += 1.5


logs = os.path.join(run_dir, "logs")
os.makedirs(logs, exist_ok=True)
out_path = os.path.join(logs, "worker.stdout.log")
err_path = os.path.join(logs, "worker.stderr.log")
out = open(out_path, "a")
err = open(err_path, "a+")
handler = logging.StreamHandler(err)
handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
log = logging.getLogger("worker")
log.addHandler(handler)
log.setLevel(logging.INFO)
lines = {"stdout": [], "stderr": []}


def asctime_of(text):
    # "2026-12-02 16:40:00,123 - ..." in local time.
    whole = time.mktime(time.strptime(text[:19], "%Y-%m-%d %H:%M:%S"))
    return whole + int(text[20:23]) / 1000


def stamped_print(event):
    t = clock[0]
    iso = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    text = json.dumps({"event": event, "level": "info", "timestamp": iso})
    out.write(text + "\n")
    parsed = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    lines["stdout"].append([text, parsed.timestamp()])


def plain_print(text):
    out.write(text + "\n")
    lines["stdout"].append([text, None])


def logged(level, message):
    before = err.tell()
    log.log(level, message)
    handler.flush()
    err.seek(before)
    text = err.read().rstrip("\n")
    err.seek(0, os.SEEK_END)
    lines["stderr"].append([text, asctime_of(text)])


# stderr: logged, unstamped, logged; stdout: plain, stamped, plain,
# stamped, plain (the last one after every stamp: the file's time).
logged(logging.INFO, "starting")
tick()
plain_print("update 0: collecting rollouts")
tick()
stamped_print("rollout 0")
tick()
err.write("Traceback (most recent call last):\n")
lines["stderr"].append(["Traceback (most recent call last):", None])
tick()
plain_print("update 1: collecting rollouts")
tick()
stamped_print("rollout 1")
tick()
logged(logging.WARNING, "slow env 1")
tick()
plain_print("done")
tick()
out.close()
err.close()
for p in (out_path, err_path):
    os.utime(p, (clock[0], clock[0]))
print(json.dumps({"mtime": os.stat(out_path).st_mtime, "lines": lines}))
