"""How the real W&B SDK (0.31.0) logs versions that the small-file
recording (sdk_artifact.py) does not show.

Mode `multipart`: one checkpoint of 2 GiB and more, which core uploads in
parts (`S3MinMultiUploadSize`, core/pkg/artifacts/multipart.go). The
file is sparse, quick to make and almost all zeros, with a marker line at
the start of every 100 MiB part so that the parts differ:
`mosaic part <n>\n` at offset (n - 1) * 100 MiB, n = 1, 2, ...; its size
is LARGE_SIZE. tests/wandb_artifacts.rs makes the same file to compare
the agent's requests with the recorded ones.

Mode `directory`: a checkpoint directory of three files (one in a
subdirectory) logged as one version with `add_dir`, as a trainer's
`checkpoint_000010/` would be.

Each is logged as a `model` artifact named as `run.log_model` names it,
alias `latest`. tests/wandb_sdk.rs runs it online against the stand-in
and records what was sent into tests/fixtures/wandb-sdk-artifacts-large.json
(scripts/record-wandb-sdk).

Usage: sdk_artifact_large.py MODE RUN_ID DISPLAY_NAME WORK_DIR
Environment: the W&B settings of docs/wandb-protocol.md section 7.2.
"""

import os
import sys

import wandb

assert wandb.__version__ == "0.31.0", wandb.__version__

MIB = 1 << 20
PART = 100 * MIB
LARGE_SIZE = (2 << 30) + 3 * MIB + 7


def make_large(path):
    with open(path, "wb") as f:
        n = 1
        while (n - 1) * PART < LARGE_SIZE:
            f.seek((n - 1) * PART)
            f.write(b"mosaic part %d\n" % n)
            n += 1
        f.truncate(LARGE_SIZE)


def make_directory(path):
    os.makedirs(os.path.join(path, "state"), exist_ok=True)
    with open(os.path.join(path, "policy.pt"), "wb") as f:
        f.write(b"policy weights\n" * 500)
    with open(os.path.join(path, "optimizer.pt"), "wb") as f:
        f.write(b"optimizer state\n" * 300)
    with open(os.path.join(path, "state", "rng.pkl"), "wb") as f:
        f.write(b"rng state\n" * 10)


def main(mode, run_id, display, work):
    run = wandb.init(project="mosaic-test", id=run_id, name=display)
    if mode == "multipart":
        path = os.path.join(work, "big.pth")
        make_large(path)
        art = wandb.Artifact(
            f"run-{run_id}-big.pth",
            type="model",
            metadata={"step": 0, "source_path": "checkpoints/big.pth", "size": LARGE_SIZE},
        )
        art.add_file(path, name="big.pth")
    elif mode == "directory":
        path = os.path.join(work, "checkpoint_000010")
        make_directory(path)
        art = wandb.Artifact(
            f"run-{run_id}-checkpoint_000010",
            type="model",
            metadata={"step": 10, "source_path": "checkpoints/checkpoint_000010"},
        )
        art.add_dir(path)
    else:
        raise SystemExit(f"unknown mode {mode}")
    run.log_artifact(art)
    run.finish(exit_code=0)


if __name__ == "__main__":
    main(*sys.argv[1:5])
