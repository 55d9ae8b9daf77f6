"""Logs rows with the real W&B SDK (0.31.0) the way the agent ships them:
`run.define_metric("*", step_metric="global_step")`, then one
`run.log({...values, "global_step": step})` per row, so `_step` counts the
rows and the worker's step is a value. tests/wandb_sdk.rs runs it against
the stand-in (online) and offline, and records what the SDK sent into
tests/fixtures/wandb-sdk-steps.json (scripts/record-wandb-sdk).

Usage: sdk_steps.py ROWS.jsonl RUN_ID DISPLAY_NAME
ROWS.jsonl: lines {"step": int, "values": {key: number | "NaN" | ...}}.
Environment: the W&B settings of docs/wandb-protocol.md section 7.2.
"""

import json
import sys

import wandb

assert wandb.__version__ == "0.31.0", wandb.__version__


def value(v):
    return float(v) if isinstance(v, str) else v


def main(rows, run_id, display):
    run = wandb.init(project="mosaic-test", id=run_id, name=display)
    run.define_metric("*", step_metric="global_step")
    for line in open(rows):
        row = json.loads(line)
        if "step" not in row:
            continue
        values = {k: value(v) for k, v in row["values"].items()}
        values["global_step"] = row["step"]
        run.log(values)
    run.finish(exit_code=0)


if __name__ == "__main__":
    main(*sys.argv[1:4])
