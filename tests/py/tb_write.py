#!/usr/bin/env python3
"""Write event files with the real writers, and say what they hold.

    tb_write.py TB_ROOT EXPECTED_JSON

TB_ROOT plays a run's tensorboard/ directory. Written there:

- tb_writer/: TensorBoard's own EventFileWriter (no TensorFlow, no torch),
  events built from tensorboard.compat.proto: TF 1.x simple_value scalars;
  tensor scalars from tensorboard.plugins.scalar.summary_v2.scalar_pb
  (DT_FLOAT, metadata on every value); tensors made by
  tensorboard.util.tensor_util.make_tensor_proto from numpy float64 and
  float16 values (DT_DOUBLE double_val, DT_HALF half_val) and by hand in
  tensor_content (as TensorFlow's C++ writer stores them), with the
  scalars plugin's metadata on the first value of the tag only; several
  values in one event; a text and a histogram summary (not scalars).
- tbx_run/: tensorboardX's SummaryWriter: add_scalar (simple_value; one
  with a display_name, i.e. metadata without plugin data), add_scalars
  (one sub-directory writer per key: tbx_run/<main_tag>/<key>/), add_text,
  add_histogram.

EXPECTED_JSON gets {"dirs": {dir relative to TB_ROOT: {"points": [[metric,
tag, step, wall_time, value, precision], ...], "ignored": n}}}, in file
order, where value is repr(float) ("nan", "inf", "-0.0", ...), precision is
the width the writer stored ("f32", "f64" or "f16"; value is then the value
given to the writer, or for f16 the value numpy rounded it to), metric is
the name W&B's TensorBoard sync gives the point (see
src/source/tfevents/naming.rs) and ignored counts the summary values that
are not scalars. Every directory holds one event file.
"""
import json
import math
import os
import sys

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_v2
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_v2
from tensorboard.plugins.text import summary_v2 as text_v2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util
from tensorboardX import SummaryWriter

WALL = 1_773_107_642.0
VALUES = [0.5, 1.0 / 3.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e40, 3.4e38, 1e-45, -123456.789]

expected = {}


def expect(d, metric, tag, step, wall_time, value, precision):
    expected.setdefault(d, {"points": [], "ignored": 0})["points"].append(
        [metric, tag, step, wall_time, repr(float(value)), precision]
    )


def ignore(d, n=1):
    expected.setdefault(d, {"points": [], "ignored": 0})["ignored"] += n


def scalars_metadata():
    return scalar_metadata.create_summary_metadata(display_name="", description="")


def tb_writer(root):
    d = "tb_writer"
    w = EventFileWriter(os.path.join(root, d))
    for step, v in enumerate(VALUES):
        wall = WALL + step / 8.0
        s = summary_pb2.Summary()
        # TF 1.x form, as torch's add_scalar writes it.
        s.value.add(tag="charts/episodic_return", simple_value=v)
        expect(d, "charts/episodic_return", "charts/episodic_return", step, wall, v, "f32")
        # TF 2 form: TensorBoard's own scalar summary (metadata on each value).
        s.value.extend(scalar_v2.scalar_pb("losses/value_loss", v).value)
        expect(d, "losses/value_loss", "losses/value_loss", step, wall, v, "f32")
        # DT_DOUBLE in double_val, metadata on the first value only.
        value = s.value.add(tag="double/x", tensor=tensor_util.make_tensor_proto(np.float64(v)))
        assert value.tensor.dtype == 2 and list(value.tensor.double_val), value
        if step == 0:
            value.metadata.CopyFrom(scalars_metadata())
        expect(d, "double/x", "double/x", step, wall, v, "f64")
        # DT_HALF in half_val.
        h = np.float16(v)
        value = s.value.add(tag="half/x", tensor=tensor_util.make_tensor_proto(h))
        assert list(value.tensor.half_val), value
        if step == 0:
            value.metadata.CopyFrom(scalars_metadata())
        expect(d, "half/x", "half/x", step, wall, float(h), "f16")
        # tensor_content, little-endian, as TensorFlow's C++ writer stores it.
        for tag, dtype, raw, precision in [
            ("content/f32", 1, np.float32(v).astype("<f4").tobytes(), "f32"),
            ("content/f64", 2, np.float64(v).astype("<f8").tobytes(), "f64"),
        ]:
            t = tensor_pb2.TensorProto(
                dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(), tensor_content=raw
            )
            value = s.value.add(tag=tag, tensor=t)
            if step == 0:
                value.metadata.CopyFrom(scalars_metadata())
            expect(d, tag, tag, step, wall, v, precision)
        if step % 3 == 0:
            s.value.extend(text_v2.text_pb("notes", "step %d" % step).value)
            s.value.extend(histogram_v2.histogram_pb("weights", np.arange(step + 1.0)).value)
            ignore(d, 2)
        w.add_event(event_pb2.Event(wall_time=wall, step=step, summary=s))
    w.close()


def tbx(root):
    d = "tbx_run"
    w = SummaryWriter(logdir=os.path.join(root, d))
    for step, v in enumerate(VALUES):
        wall = WALL + 100 + step
        w.add_scalar("ray/tune/episode_reward_mean", v, step * 10, walltime=wall)
        expect(d, "ray/tune/episode_reward_mean", "ray/tune/episode_reward_mean", step * 10, wall, v, "f32")
        if step == 1:
            w.add_scalar("described", v, step * 10, walltime=wall, display_name="A described scalar")
            expect(d, "described", "described", step * 10, wall, v, "f32")
        main = "Train-Episode-Rewards/rank_0"
        envs = {"env-0": v, "env-1": -v if not math.isnan(v) else 7.0}
        w.add_scalars(main, envs, step * 10, walltime=wall)
        for key, x in envs.items():
            sub = d + "/" + main + "/" + key
            expect(sub, sub[len(d) + 1 :] + "/" + main, main, step * 10, wall, x, "f32")
        if step % 4 == 0:
            w.add_text("hyperparameters", "|param|value|", step * 10, walltime=wall)
            w.add_histogram("actions", np.arange(5.0) * step, step * 10, walltime=wall)
            ignore(d, 2)
    w.close()


def main():
    root, out = sys.argv[1:3]
    tb_writer(root)
    tbx(root)
    with open(out, "w") as f:
        json.dump({"dirs": expected}, f, indent=1)


if __name__ == "__main__":
    main()
