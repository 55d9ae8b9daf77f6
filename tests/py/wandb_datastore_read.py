"""Reads a W&B `.wandb` transaction log with the W&B SDK's own reader and
prints each record as one JSON line, for tests/wandb_offline.rs.

The reader is `wandb.sdk.internal.datastore.DataStore` (`open_for_scan`,
then `scan_data` record by record), used as a library. wandb 0.30.0 removed
that module, so this script runs in the second test venv, .venv-datastore
(tests/requirements-datastore.txt: wandb 0.29.0, the last release with it);
each record is parsed with that wandb's `wandb_internal_pb2.Record`.
Both modules are loaded by wandb_reader_modules.py, which skips the
package's `__init__` (the whole SDK) that neither needs.

`DataStore` checks the file header, every chunk's CRC-32 (over the type byte
and the payload), the zero padding at block ends and the chunk-type order,
with `assert` statements: this script refuses to run under `python -O`.
Where `DataStore` stops quietly, at an end of file inside a record (after a
FIRST or MIDDLE chunk), this script fails too: the file must end right after
a record's last chunk. It reads up to the file's size and no further (see
`main`). Any error: message on stderr, exit status 1.

Usage: wandb_datastore_read.py FILE.wandb
Output lines: {"num", "type", "stream_id", "history": {"step", "items":
{key: value_json}} | "exit_code" | "summary"/"config": {key: value_json} |
"run": {...} | "metric": {"name", "glob_name", "step_metric", "step_sync",
"defined"} | "output_raw": {"stream", "line", "timestamp"} | "environment":
{the record as protobuf JSON} | "artifact": the ArtifactRecord as protobuf's
JSON mapping (field names as in the .proto)}
"""

import json
import os
import sys
import traceback

if not __debug__:
    sys.exit("wandb_datastore_read.py: DataStore checks CRCs with assert; run without -O")

try:
    from wandb_reader_modules import load

    pb, DataStore, WANDB_VERSION = load()
except ImportError as e:
    sys.exit(
        f"wandb_datastore_read.py: {e}: needs the .venv-datastore Python "
        "(wandb 0.29.0, tests/requirements-datastore.txt; scripts/test prepares it)"
    )


def items(seq):
    return {(i.key or "/".join(i.nested_key)): i.value_json for i in seq}


def describe(r):
    kind = r.WhichOneof("record_type")
    out = {"num": r.num, "type": kind, "stream_id": r._info.stream_id}
    if kind == "history":
        out["history"] = {"step": r.history.step.num, "items": items(r.history.item)}
    elif kind == "summary":
        out["summary"] = items(r.summary.update)
    elif kind == "config":
        out["config"] = items(r.config.update)
    elif kind == "metric":
        m = r.metric
        out["metric"] = {
            "name": m.name,
            "glob_name": m.glob_name,
            "step_metric": m.step_metric,
            "step_sync": m.options.step_sync,
            "defined": m.options.defined,
        }
    elif kind == "artifact":
        from google.protobuf.json_format import MessageToDict

        out["artifact"] = MessageToDict(r.artifact, preserving_proto_field_name=True)
    elif kind == "exit":
        out["exit_code"] = r.exit.exit_code
    elif kind == "output_raw":
        out["output_raw"] = {
            "stream": "stdout" if r.output_raw.output_type == 1 else "stderr",
            "line": r.output_raw.line,
            "timestamp": r.output_raw.timestamp.seconds + r.output_raw.timestamp.nanos / 1e9,
        }
    elif kind == "environment":
        from google.protobuf.json_format import MessageToDict

        out["environment"] = MessageToDict(r.environment)
    elif kind == "run":
        out["run"] = {
            "run_id": r.run.run_id,
            "project": r.run.project,
            "start_time": r.run.start_time.seconds,
            "host": r.run.host,
            "stream_id": r._info.stream_id,
        }
    return out


def main(path):
    size = os.path.getsize(path)
    ds = DataStore()
    ds.open_for_scan(path)  # checks the 7-byte file header
    try:
        # Stop at the end of the file rather than asking `scan_data` for
        # one more record: when the last record ends 1-6 bytes before a
        # block end, `scan_data` at EOF reads those bytes as block padding,
        # gets nothing and fails "invalid padding" (DataStore's own writer
        # leaves such files too: it pads only before the next record).
        while ds.get_offset() < size:
            start = ds.get_offset()
            data = ds.scan_data()
            if data is None:
                # DataStore returns None, quietly, where the file ends
                # after a FIRST or MIDDLE chunk (or in block padding):
                # not a whole record.
                raise ValueError(
                    f"file ends inside a record (record at offset {start}, "
                    f"file size {size})"
                )
            r = pb.Record()
            r.ParseFromString(data)
            print(json.dumps(describe(r)))
    finally:
        ds.close()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        main(sys.argv[1])
    except Exception as e:  # noqa: BLE001 - every failure is a failed read
        traceback.print_exc()
        sys.exit(f"wandb_datastore_read.py: {sys.argv[1]} (wandb {WANDB_VERSION}): "
                 f"{type(e).__name__}: {e}")
