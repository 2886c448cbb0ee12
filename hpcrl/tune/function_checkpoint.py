"""Checkpoints of function trials: a state dict as HDF5, metadata as JSON.

``tune.save_checkpoint(state)`` writes ``<trial>/checkpoint_NNNNNN/`` (``NNNNNN``:
the reports so far) holding ``checkpoint.json`` (format ``hpcrl.function_checkpoint``,
iteration, time) and ``state.h5`` (the state tree, see ``hpcrl.io.hdf5_tree``: arrays as
datasets, other values as JSON). Like a trainer checkpoint, it is written
under a temporary name and renamed when complete; loading never runs code.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from typing import Any

import h5py

from hpcrl.io.hdf5_tree import read_tree, write_tree

# The name trainer checkpoints use, so hpcrl.io.checkpoint lists and prunes these too.
CHECKPOINT_JSON = "checkpoint.json"
FUNCTION_CHECKPOINT_FORMAT = "hpcrl.function_checkpoint"
STATE_FILE = "state.h5"


def save_function_checkpoint(
    trial_dir: str, state: dict[str, Any], iteration: int, time_total_s: float
) -> str:
    """Write ``state`` as ``trial_dir/checkpoint_<iteration>/``; returns its path."""
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint takes a dict of state, got {type(state).__name__}")
    name = f"checkpoint_{iteration:06d}"
    final = os.path.join(trial_dir, name)
    temporary = os.path.join(trial_dir, f".{name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    with h5py.File(os.path.join(temporary, STATE_FILE), "w") as f:
        write_tree(f, state)
    meta = {
        "format": FUNCTION_CHECKPOINT_FORMAT,
        "iteration": iteration,
        "time_total_s": time_total_s,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    with open(os.path.join(temporary, CHECKPOINT_JSON), "w") as f:
        json.dump(meta, f, indent=2)
    if os.path.exists(final):  # saved again at the same iteration
        shutil.rmtree(final)
    os.replace(temporary, final)
    return final


def load_function_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state, meta)`` of a function checkpoint."""
    with open(os.path.join(path, CHECKPOINT_JSON)) as f:
        meta = json.load(f)
    if meta.get("format") != FUNCTION_CHECKPOINT_FORMAT:
        raise ValueError(f"{path!r} is not a function checkpoint (format {meta.get('format')!r})")
    with h5py.File(os.path.join(path, STATE_FILE), "r") as f:
        state = read_tree(f)
    return state, meta


def checkpoint_iteration(path: str) -> int:
    """The iteration a checkpoint (a trainer's or a function's) was written at."""
    meta_path = os.path.join(path, CHECKPOINT_JSON)
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(f"{path!r} is not a checkpoint: it has no {CHECKPOINT_JSON}")
    with open(meta_path) as f:
        return int(json.load(f)["iteration"])
