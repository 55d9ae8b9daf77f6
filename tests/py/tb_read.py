#!/usr/bin/env python3
"""Read a TensorBoard logdir with TensorBoard's own loaders; print JSON.

    tb_read.py LOGDIR [--scalars-only]

Two views, so that a test sees both what TensorBoard shows and every
record that is on disk:

- "series": what the plugin event multiplexer (TensorBoard's legacy data
  path, with its data_compat/dataclass_compat migrations) holds for each
  run and tag, keeping everything: [step, wall_time, f32 bits of the value].
- "raw": every event of every event file, read with EventFileLoader:
  per run, the number of file_version events and of summary values, and
  the event file names.

--scalars-only leaves out the tags of other plugins (a worker's text and
histogram summaries) instead of failing on them.

Values are reported as the bits of the float32 TensorBoard holds, so the
caller can compare exactly (and see NaN and infinities) without a JSON
number round trip.
"""
import json
import os
import struct
import sys

from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.backend.event_processing import plugin_event_multiplexer as pem
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def main():
    logdir = sys.argv[1]
    scalars_only = "--scalars-only" in sys.argv[2:]
    mux = pem.EventMultiplexer(
        size_guidance=pea.STORE_EVERYTHING_SIZE_GUIDANCE,
        tensor_size_guidance={"scalars": 0},
    )
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    out = {"series": {}, "metadata": {}, "raw": {}}
    for run, tags in sorted(mux.Runs().items()):
        series = out["series"][run] = {}
        meta = out["metadata"][run] = {}
        for tag in sorted(tags.get("tensors", [])):
            md = mux.SummaryMetadata(run, tag)
            if scalars_only and md.plugin_data.plugin_name != "scalars":
                continue
            meta[tag] = {
                "plugin": md.plugin_data.plugin_name,
                "data_class": summary_pb2.DataClass.Name(md.data_class),
            }
            points = []
            for ev in mux.Tensors(run, tag):
                arr = tensor_util.make_ndarray(ev.tensor_proto)
                if arr.shape != () or arr.dtype.name != "float32":
                    raise SystemExit("%s/%s: not a float32 scalar: %r" % (run, tag, arr))
                points.append([ev.step, ev.wall_time, f32_bits(float(arr.item()))])
            series[tag] = points
    for root, _dirs, files in os.walk(logdir):
        names = sorted(f for f in files if "tfevents" in f)
        if not names:
            continue
        run = os.path.relpath(root, logdir)
        versions, values, events = [], 0, 0
        for name in names:
            loader = event_file_loader.LegacyEventFileLoader(os.path.join(root, name))
            for ev in loader.Load():
                events += 1
                if ev.HasField("file_version"):
                    versions.append(ev.file_version)
                values += len(ev.summary.value)
        out["raw"][run] = {
            "files": names,
            "file_versions": versions,
            "events": events,
            "values": values,
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
