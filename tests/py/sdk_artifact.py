"""How the real W&B SDK (0.31.0) logs a checkpoint as a model artifact.

Writes `model.pth` three times (contents A, A again, then B) and after
each write logs it as `run.log_model` names it: a `model` artifact
`run-<run id>-model.pth` holding the one file, alias `latest`, with
metadata. The second log has the first's content: W&B deduplicates it.
tests/wandb_sdk.rs runs it online against the stand-in and offline (then
`wandb sync`), and records what was sent into
tests/fixtures/wandb-sdk-artifacts.json (scripts/record-wandb-sdk).

Usage: sdk_artifact.py RUN_ID DISPLAY_NAME WORK_DIR
Environment: the W&B settings of docs/wandb-protocol.md section 7.2.
"""

import os
import sys

import wandb

assert wandb.__version__ == "0.31.0", wandb.__version__

CONTENTS = [b"checkpoint A\n" * 1000, b"checkpoint A\n" * 1000, b"checkpoint B\n" * 1000]


def main(run_id, display, work):
    run = wandb.init(project="mosaic-test", id=run_id, name=display)
    path = os.path.join(work, "model.pth")
    for i, content in enumerate(CONTENTS):
        with open(path, "wb") as f:
            f.write(content)
        art = wandb.Artifact(
            f"run-{run_id}-model.pth",
            type="model",
            metadata={"step": i * 64, "source_path": "checkpoints/model.pth", "size": len(content)},
        )
        art.add_file(path, name="model.pth")
        # No wait(): core saves the versions of one name one after the
        # other, in order, and the file was copied to the staging area.
        run.log_artifact(art)
    run.finish(exit_code=0)


if __name__ == "__main__":
    main(*sys.argv[1:4])
