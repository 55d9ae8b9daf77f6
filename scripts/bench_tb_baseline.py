#!/usr/bin/env python3
"""Python baseline for scripts/bench-tensorboard.

    bench_tb_baseline.py LOG_ROOT OUT_ROOT

Does in Python what the agent does for the default configuration: reads
every worker log under LOG_ROOT/var/trainer/runs/*/logs/ (rotated
siblings oldest first) line by line, parses JSON (Python's json accepts
NaN/Infinity), maps metric records with the default rule's fields and
CleanRL-style tags, and writes one Event per row with TensorBoard's own
EventFileWriter and scalar summaries (summary_v2.scalar_pb), one writer per
run under OUT_ROOT/<run_id>/tensorboard. Prints one JSON line: rows written.
"""
import datetime
import glob
import json
import os
import re
import sys

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import summary_v2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

FLAT = {
    "episodic_return": "charts/episodic_return",
    "episodic_length": "charts/episodic_length",
    "policy_loss": "losses/policy_loss",
    "value_loss": "losses/value_loss",
    "entropy": "losses/entropy",
    "learning_rate": "charts/learning_rate",
    "SPS": "charts/SPS",
}
RUN_FROM_PATH = re.compile(r"runs/(?P<run_id>[^/]+)/")


def flatten(prefix, obj, out):
    for k, v in obj.items():
        tag = prefix + "/" + k if prefix else k
        if isinstance(v, dict):
            flatten(tag, v, out)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[tag] = float(v)
        elif isinstance(v, bool):
            out[tag] = 1.0 if v else 0.0


def wall_time(rec):
    t = rec.get("timestamp")
    if isinstance(t, (int, float)):
        return float(t)
    if isinstance(t, str):
        return datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    return datetime.datetime.now().timestamp()


def files(root):
    out = []
    for log in sorted(glob.glob(os.path.join(root, "var/trainer/runs/*/logs/*.log"))):
        rotated = sorted(
            glob.glob(log + ".*"), key=lambda p: -int(p.rsplit(".", 1)[1])
        )
        out.extend(rotated + [log])
    return out


def main():
    root, out_root = sys.argv[1:3]
    writers = {}
    rows = 0
    for path in files(root):
        with open(path, "rb") as f:
            for line in f:
                if not line.lstrip().startswith(b"{"):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if rec.get("event") != "metrics":
                    continue
                run_id = rec.get("run_id")
                if run_id is None:
                    m = RUN_FROM_PATH.search(path)
                    run_id = m.group("run_id") if m else None
                step = next((rec[k] for k in ("global_step", "step", "_step") if k in rec), None)
                if run_id is None or step is None:
                    continue
                values = {}
                if isinstance(rec.get("metrics"), dict):
                    flatten("", rec["metrics"], values)
                for field, tag in FLAT.items():
                    v = rec.get(field)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        values[tag] = float(v)
                if not values:
                    continue
                w = writers.get(run_id)
                if w is None:
                    w = writers[run_id] = EventFileWriter(
                        os.path.join(out_root, run_id, "tensorboard"), max_queue_size=1000
                    )
                summary = summary_pb2.Summary()
                for tag in sorted(values):
                    summary.value.extend(summary_v2.scalar_pb(tag, values[tag]).value)
                w.add_event(event_pb2.Event(wall_time=wall_time(rec), step=int(step), summary=summary))
                rows += 1
    for w in writers.values():
        w.close()
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
