"""A worker that prints: plain lines and MOSAIC metric JSON lines to
stdout (`print`), CleanRL-style metric lines and warnings to stderr
(`logging`, MOSAIC's CleanRL format), for the tests of W&B's Logs tab
(tests/wandb_overview.rs). Run as init mode's CMD, or with its streams
redirected to a run's `logs/*.stdout.log` / `logs/*.stderr.log` as MOSAIC
runs workers.

Usage: console_worker.py RUN_ID FIRST COUNT
Prints lines for steps FIRST .. FIRST+COUNT-1.
"""

import json
import logging
import sys

logging.basicConfig(
    stream=sys.stderr,
    level=logging.INFO,
    format="%(asctime)s | %(levelname)-8s | %(name)s | %(message)s",
    datefmt="%Y-%m-%d %H:%M:%S",
)
log = logging.getLogger("__main__")


def main(run_id, first, count):
    for step in range(int(first), int(first) + int(count)):
        print(f"update {step}: collecting rollouts", flush=True)
        print(
            json.dumps(
                {"event": "metrics", "run_id": run_id, "global_step": step * 8, "loss": step / 10}
            ),
            flush=True,
        )
        log.info("global_step=%d, episodic_return=%.3f, length=%d", step * 8 + 4, step + 0.5, 10 + step)
        if step % 2:
            log.warning("slow env %d", step)


if __name__ == "__main__":
    main(*sys.argv[1:4])
