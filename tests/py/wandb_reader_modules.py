"""W&B's own `.wandb` reader and record classes, without `import wandb`.

The readers under tests/py/ need two modules of the SDK:
`wandb.sdk.internal.datastore` (the `DataStore` reader) and
`wandb.proto.wandb_internal_pb2` (the `Record` message). Importing them
the usual way first runs `wandb/__init__.py`, which imports the whole SDK:
about 3 s of CPU per process, and the suite starts such a reader dozens of
times. Neither module needs any of it (datastore.py imports only the
standard library, the protobuf modules only protobuf and each other), so
the parent packages are registered here as plain packages over the
installed directories, and the two modules are then imported from the
installed files unchanged: the same code as `import wandb` would run.
"""

import importlib.metadata
import importlib.util
import os
import sys
import types


def load():
    """Returns (wandb_internal_pb2, DataStore, wandb's version)."""
    spec = importlib.util.find_spec("wandb")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("wandb is not installed in this Python")
    root = spec.submodule_search_locations[0]
    for name, sub in (("wandb", ""), ("wandb.sdk", "sdk"), ("wandb.sdk.internal", "sdk/internal")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [os.path.join(root, sub)]
            sys.modules[name] = package
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    return wandb_internal_pb2, DataStore, importlib.metadata.version("wandb")
