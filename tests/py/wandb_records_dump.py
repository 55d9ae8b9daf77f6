"""Prints every record of a W&B `.wandb` transaction log as one JSON line,
whole (protobuf's MessageToDict, field names as in the .proto), read with
the SDK's own reader: `wandb.sdk.internal.datastore.DataStore` of wandb
0.29.0, the last release that ships it (.venv-datastore). Where
tests/py/wandb_datastore_read.py prints the fields the agent's offline
tests check, this one prints all of them, for the records the system
metrics and sync tests look at (stats, output_raw, environment, files).

Usage: wandb_records_dump.py FILE.wandb
Output lines: {"type": <record_type member>, "record": {...}}
"""

import json
import sys

if not __debug__:
    sys.exit("wandb_records_dump.py: DataStore checks CRCs with assert; run without -O")

from google.protobuf.json_format import MessageToDict
from wandb_reader_modules import load

pb, DataStore, _ = load()


def main(path):
    ds = DataStore()
    ds.open_for_scan(path)
    # Bounded by the file: scan_data returns None at its end.
    while True:
        data = ds.scan_data()
        if data is None:
            break
        r = pb.Record()
        r.ParseFromString(data)
        t = r.WhichOneof("record_type")
        rec = MessageToDict(r, preserving_proto_field_name=True)
        print(json.dumps({"type": t, "record": rec.get(t, {})}))


if __name__ == "__main__":
    main(sys.argv[1])
