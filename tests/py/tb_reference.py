#!/usr/bin/env python3
"""Write the event file TensorBoard's own writer makes for given rows.

    tb_reference.py ROWS_JSON OUT_DIR LIKE_FILE

ROWS_JSON holds [{"step": int, "wall_time": float, "values": {tag: float
or "NaN"/"Infinity"/"-Infinity"}}, ...]. The file is written with
tensorboard.summary.writer.event_file_writer.EventFileWriter, each row as
one Event whose summary is summary_v2.scalar_pb per tag (sorted by tag),
which is how TensorBoard's own scalar summary is built without TensorFlow.
The writer stamps its file_version record with time.time(); it is made to
read the wall time of the first record of LIKE_FILE (the file under test),
so that the two files can be compared byte for byte; and the writer's
name in that record's source_metadata is made the agent's
("mosaic-shipper"), since it names the program, not the format. Prints the
path of the file written.
"""
import json
import os
import sys
import time
from unittest import mock

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.scalar import summary_v2
from tensorboard.summary.writer.event_file_writer import EventFileWriter


def value(v):
    return float(v) if isinstance(v, str) else v


def main():
    rows_path, out_dir, like = sys.argv[1:4]
    rows = json.load(open(rows_path))
    first = next(iter(event_file_loader.LegacyEventFileLoader(like).Load()))
    assert first.HasField("file_version"), first
    assert first.source_metadata.writer == "mosaic-shipper", first
    real = event_pb2.SourceMetadata
    with mock.patch.object(time, "time", return_value=first.wall_time), mock.patch.object(
        event_pb2, "SourceMetadata", lambda writer: real(writer="mosaic-shipper")
    ):
        writer = EventFileWriter(out_dir)
    for row in rows:
        summary = summary_pb2.Summary()
        for tag in sorted(row["values"]):
            summary.value.extend(summary_v2.scalar_pb(tag, value(row["values"][tag])).value)
        writer.add_event(
            event_pb2.Event(wall_time=row["wall_time"], step=row["step"], summary=summary)
        )
    writer.close()
    (name,) = [n for n in os.listdir(out_dir) if "tfevents" in n]
    print(os.path.join(out_dir, name))


if __name__ == "__main__":
    main()
