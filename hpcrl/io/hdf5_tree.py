"""Nested state (dicts, lists, arrays, scalars) as an HDF5 group tree, without pickle.

A state tree is what ``Policy.get_state()``, ``RolloutWorker.get_state()`` and
``Trainer.get_state()`` return. ``write_tree`` stores it so that plain h5py
shows it as it is:

- a dict, list or tuple holding arrays is a group (attribute ``kind``: "dict", "list",
  "tuple"; list and tuple items are named "0", "1", ...; a dict with integer
  keys has the attribute ``int_keys``);
- a numeric or boolean numpy array (or torch tensor) is a dataset;
- an array of objects or strings is a group of kind "json_rows" holding one
  JSON document per element (``bytes``, ``ends``);
- every other child of a group (bool, int of any size, float, str, None,
  numpy scalar, and dicts, lists and tuples holding no arrays) is in one JSON
  attribute of the group, ``scalars`` (see ``hpcrl.io.json_values``).

``read_tree`` gives the same structure back (torch tensors come back as numpy
arrays). Reading parses JSON and copies arrays: it never runs code.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

from hpcrl.io.json_values import dumps_rows, encode_value, loads, loads_rows

# numpy kinds stored as datasets: bool, int, uint, float, bytes.
_DATASET_KINDS = "biufS"


def write_tree(group: h5py.Group, tree: dict[str, Any] | list | tuple) -> None:
    """Store ``tree``'s items under ``group`` (an h5py File or Group).

    Example:
        >>> import io
        >>> with h5py.File(io.BytesIO(), "w") as f:
        ...     write_tree(f, {"w": np.ones(2), "step": 3, "opt": {"betas": (0.9, 0.99)}})
        ...     read_tree(f)
        {'w': array([1., 1.]), 'step': 3, 'opt': {'betas': (0.9, 0.99)}}
    """
    kind, items = _items(tree)
    group.attrs["kind"] = kind
    if kind == "dict" and not all(isinstance(k, str) for k, _ in items):
        group.attrs["int_keys"] = True
    scalars: dict[str, Any] = {}
    for key, value in items:
        name = _name(key)
        value = _as_numpy(value)
        if isinstance(value, (dict, list, tuple)) and _holds_array(value):
            write_tree(group.create_group(name), value)
        elif isinstance(value, np.ndarray):
            _write_array(group, name, value)
        else:
            scalars[name] = encode_value(value)
    if scalars:
        group.attrs["scalars"] = json.dumps(scalars)


def read_tree(group: h5py.Group) -> Any:
    """The tree ``write_tree`` stored under ``group``."""
    kind = group.attrs.get("kind", "dict")
    if isinstance(kind, bytes):
        kind = kind.decode()
    if kind == "json_rows":
        return _read_json_rows(group)
    values: dict[str, Any] = {}
    for name, child in group.items():
        if isinstance(child, h5py.Dataset):
            values[name] = child[...]
        else:
            values[name] = read_tree(child)
    if "scalars" in group.attrs:
        values.update(loads(group.attrs["scalars"]))
    if kind in ("list", "tuple"):
        ordered = [values[str(i)] for i in range(len(values))]
        return ordered if kind == "list" else tuple(ordered)
    if group.attrs.get("int_keys", False):
        return {int(k): v for k, v in values.items()}
    return values


def _items(tree: Any) -> tuple[str, list[tuple[Any, Any]]]:
    if isinstance(tree, dict):
        return "dict", list(tree.items())
    if isinstance(tree, list):
        return "list", list(enumerate(tree))
    if isinstance(tree, tuple):
        return "tuple", list(enumerate(tree))
    raise TypeError(f"a state tree is a dict, list or tuple at its root, got {type(tree).__name__}")


def _holds_array(value: Any) -> bool:
    """Whether a container holds arrays (it is then a group; otherwise one JSON value)."""
    if isinstance(value, dict):
        return any(_holds_array(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_array(v) for v in value)
    return isinstance(_as_numpy(value), np.ndarray)


def _name(key: Any) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"state keys must be strings or ints, got {key!r}")
    name = str(key)
    if not name or "/" in name or name == ".":
        raise ValueError(f"state key {key!r} cannot name an HDF5 object (empty, '.' or has '/')")
    return name


def _as_numpy(value: Any) -> Any:
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def _write_array(group: h5py.Group, name: str, value: np.ndarray) -> None:
    if value.dtype.kind in _DATASET_KINDS:
        group.create_dataset(name, data=value)
        return
    if value.dtype.kind not in "OU":
        raise TypeError(f"cannot store array {name!r} of dtype {value.dtype} without pickle")
    rows = value.reshape(-1)
    data, ends = dumps_rows(rows)
    sub = group.create_group(name)
    sub.attrs["kind"] = "json_rows"
    sub.attrs["dtype"] = value.dtype.str if value.dtype.kind == "U" else "object"
    sub.attrs["shape"] = json.dumps(list(value.shape))
    sub.create_dataset("bytes", data=data)
    sub.create_dataset("ends", data=ends)


def _read_json_rows(group: h5py.Group) -> np.ndarray:
    dtype = group.attrs["dtype"]
    rows = loads_rows(group["bytes"][...], group["ends"][...], dtype)
    return rows.reshape(tuple(json.loads(group.attrs["shape"])))
