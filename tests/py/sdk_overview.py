"""What the real W&B SDK (0.31.0) sends for a run's Overview and Logs
tabs: the run's metadata (`wandb-metadata.json`, `_wandb` in the config)
and its console output.

Prints LINES lines, alternately to stdout and stderr (stderr lines say
"err"), around one logged row, then finishes with exit code 0.
tests/wandb_sdk.rs runs it online against the stand-in and offline, with
the SDK's console capture (`WANDB_CONSOLE=wrap`) and metadata on, and
records what was sent into tests/fixtures/wandb-sdk-overview.json
(scripts/record-wandb-sdk).

Usage: sdk_overview.py RUN_ID DISPLAY_NAME LINES [ARGS...]
(ARGS are ignored: they show up as the program's arguments.)
Environment: the W&B settings of docs/wandb-protocol.md section 7.2.
"""

import sys

import wandb

assert wandb.__version__ == "0.31.0", wandb.__version__


def main(run_id, display, lines):
    run = wandb.init(project="mosaic-test", id=run_id, name=display)
    run.define_metric("*", step_metric="global_step")
    for i in range(int(lines)):
        if i % 2:
            print(f"console err {i}", file=sys.stderr, flush=True)
        else:
            print(f"console out {i}", flush=True)
        if i == 1:
            run.log({"charts/episodic_return": 1.5, "global_step": 64})
    run.finish(exit_code=0)


if __name__ == "__main__":
    main(*sys.argv[1:4])
