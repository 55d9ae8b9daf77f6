"""A run of the real W&B SDK (0.31.0) that lives long enough for the SDK's
system monitor to sample (its default interval, 15 s), with console output
and the SDK's own files (wandb-metadata.json, requirements.txt): what the
System, Logs and Overview tabs show. tests/wandb_sdk.rs runs it online
against the stand-in and offline, and records what was sent and written
into tests/fixtures/wandb-sdk-system.json and the SDK-written offline
directory tests/fixtures/wandb-sdk-offline/ (scripts/record-wandb-sdk).

Usage: sdk_system.py RUN_ID DISPLAY_NAME LIVE_SECS
Environment: the W&B settings of docs/wandb-protocol.md section 7.2, with
stats, console capture and metadata left on (their defaults).
"""

import sys
import time

import wandb

assert wandb.__version__ == "0.31.0", wandb.__version__


def main(run_id, display, live_secs):
    run = wandb.init(
        project="mosaic-test",
        id=run_id,
        name=display,
        config={"learning_rate": 0.00025, "env_id": "CartPole-v1"},
    )
    run.define_metric("*", step_metric="global_step")
    print("global_step=64, episodic_return=11.0", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    start = time.time()
    step = 0
    # Bounded: at most live_secs + 1 seconds of rows, one every second.
    while time.time() - start < float(live_secs):
        run.log({"charts/episodic_return": step + 0.5, "global_step": step * 64})
        step += 1
        time.sleep(1.0)
    print("done", flush=True)
    run.finish(exit_code=0)


if __name__ == "__main__":
    main(*sys.argv[1:4])
