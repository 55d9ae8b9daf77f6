"""Reads a W&B `.wandb` transaction log record by record and prints each
record as one JSON line, for tests/wandb_offline.rs.

wandb 0.30+ no longer ships a Python datastore reader (docs/wandb-protocol.md
section 7.1), so the framing is read by the ~25-line reader from the notes
(validated there against 0.31.0's own files); every record is parsed with
the installed wandb package's own `wandb_internal_pb2.Record`. Any framing
or checksum error, or a truncated tail, is an error: exit status 1.

Usage: wandb_read.py FILE.wandb
Output lines: {"num", "type", "history": {"step", "items": {key: value_json}}
| "exit_code" | "summary"/"config": {key: value_json} | "run": {...}}
"""

import json
import struct
import sys
import zlib

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768


def read_records(path):
    data = open(path, "rb").read()
    assert data[:7] == b":W&B\xe1\xbe\x00", data[:7]
    pos, buf = 7, None
    while pos < len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer padding
            assert data[pos:pos + left] == b"\0" * left, f"padding at {pos}"
            pos += left
            continue
        assert len(data) - pos >= 7, f"truncated chunk header at {pos}"
        crc, ln, typ = struct.unpack("<IHB", data[pos:pos + 7])
        payload = data[pos + 7:pos + 7 + ln]
        assert len(payload) == ln, f"truncated chunk at {pos}"
        assert zlib.crc32(bytes([typ]) + payload) == crc, f"bad checksum at {pos}"
        pos += 7 + ln
        if typ == 1:
            assert buf is None, f"FULL inside a record at {pos}"
            yield payload
        elif typ == 2:
            assert buf is None, f"FIRST inside a record at {pos}"
            buf = payload
        elif typ == 3:
            buf += payload
        elif typ == 4:
            yield buf + payload
            buf = None
        else:
            raise ValueError(f"chunk type {typ} at {pos}")
    assert buf is None, "file ends inside a record"


def items(seq):
    return {(i.key or "/".join(i.nested_key)): i.value_json for i in seq}


def main():
    for raw in read_records(sys.argv[1]):
        r = pb.Record()
        r.ParseFromString(raw)
        kind = r.WhichOneof("record_type")
        out = {"num": r.num, "type": kind, "stream_id": r._info.stream_id}
        if kind == "history":
            out["history"] = {"step": r.history.step.num, "items": items(r.history.item)}
        elif kind == "summary":
            out["summary"] = items(r.summary.update)
        elif kind == "config":
            out["config"] = items(r.config.update)
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
        elif kind == "run":
            out["run"] = {
                "run_id": r.run.run_id,
                "project": r.run.project,
                "start_time": r.run.start_time.seconds,
                "stream_id": r._info.stream_id,
            }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
