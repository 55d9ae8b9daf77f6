"""How the real W&B SDK (0.31.0) ends a run, for the state W&B shows.

Logs a few rows, then either `run.finish(exit_code=CODE)` (a worker that
finished, CODE 0, or failed, CODE non-zero) or kills its own process with
SIGKILL (a worker that died: nothing more is sent, and the server marks
the run crashed when its heartbeats stop). tests/wandb_sdk.rs runs it
against the stand-in and records what was sent into
tests/fixtures/wandb-sdk-state.json (scripts/record-wandb-sdk).

Usage: sdk_state.py RUN_ID DISPLAY_NAME (exit CODE | sigkill GO_FILE)
sigkill waits (at most a minute) for GO_FILE, which the test creates once
the rows are on the stand-in, then kills itself.
Environment: the W&B settings of docs/wandb-protocol.md section 7.2.
"""

import os
import signal
import sys
import time

import wandb

assert wandb.__version__ == "0.31.0", wandb.__version__


def main(run_id, display, how, arg):
    run = wandb.init(project="mosaic-test", id=run_id, name=display)
    run.define_metric("*", step_metric="global_step")
    for step in range(3):
        run.log({"charts/episodic_return": step + 0.5, "global_step": step * 64})
    if how == "exit":
        run.finish(exit_code=int(arg))
    elif how == "sigkill":
        for _ in range(600):
            if os.path.exists(arg):
                break
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise SystemExit("how: exit CODE | sigkill GO_FILE")


if __name__ == "__main__":
    main(*sys.argv[1:5])
