"""How a batch's columns map to HDF5 datasets: shared by the writer and the reader.

A column is a numpy array with one row per step, or a dict / tuple of such
columns (observations of Dict and Tuple spaces). In a policy's group:

- a numeric or boolean array is one dataset, resizable along rows;
- a dict or tuple is a group (attribute ``kind``: "dict" or "tuple"; tuple
  items are named "0", "1", ...) of columns;
- an array of objects or strings (``infos``) is a group of kind "json_rows":
  ``bytes`` holds one JSON document per element (``hpcrl.io.json_values``),
  ``ends`` the end offset of each element in ``bytes``, counted from the start
  of the batch the element belongs to; attributes ``dtype`` and ``row_shape``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from hpcrl.io.json_values import NUMERIC_KINDS, dumps_rows, loads_rows


@dataclass
class Leaf:
    """One dataset's part of a batch.

    Attributes:
        path: dataset path inside the policy group ("obs", "infos/bytes").
        array: the values to append.
        per_row: True when ``array`` has one entry per batch row (``bytes`` has not).
        json_ends: True for the ``ends`` of a json_rows column (stored as
            offsets into the whole ``bytes`` dataset, so shifted on append).
    """

    path: str
    array: np.ndarray
    per_row: bool = True
    json_ends: bool = False


def flatten_columns(
    columns: dict[str, Any],
) -> tuple[list[Leaf], list[tuple[str, dict[str, Any]]]]:
    """The leaves (datasets) and groups (path, attributes) of a batch's columns.

    Example:
        >>> infos = np.array([{}, {"a": 1}], dtype=object)
        >>> leaves, groups = flatten_columns({"obs": {"x": np.zeros((2, 3))}, "infos": infos})
        >>> [(leaf.path, leaf.array.shape) for leaf in leaves]
        [('obs/x', (2, 3)), ('infos/bytes', (9,)), ('infos/ends', (2, 1))]
        >>> [(path, attrs["kind"]) for path, attrs in groups]
        [('obs', 'dict'), ('infos', 'json_rows')]
    """
    leaves: list[Leaf] = []
    groups: list[tuple[str, dict[str, Any]]] = []
    for name, value in columns.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(
                f"column name {name!r} cannot name an HDF5 dataset: use a non-empty "
                "string without '/'"
            )
        _flatten(name, value, leaves, groups)
    return leaves, groups


def _flatten(
    path: str, value: Any, leaves: list[Leaf], groups: list[tuple[str, dict[str, Any]]]
) -> None:
    if isinstance(value, dict):
        groups.append((path, {"kind": "dict"}))
        for key, item in value.items():
            _flatten(f"{path}/{key}", item, leaves, groups)
        return
    if isinstance(value, tuple):
        groups.append((path, {"kind": "tuple"}))
        for index, item in enumerate(value):
            _flatten(f"{path}/{index}", item, leaves, groups)
        return
    array = np.asarray(value)
    if array.dtype.kind in NUMERIC_KINDS:
        leaves.append(Leaf(path, array))
        return
    if array.dtype.kind not in "OU" or array.ndim == 0:
        raise TypeError(
            f"column {path!r} has dtype {array.dtype} and shape {array.shape}; store numbers, "
            "booleans, strings or objects (JSON) with one row per step"
        )
    data, ends = dumps_rows(array.reshape(-1))
    row_shape = list(array.shape[1:])
    dtype = array.dtype.str if array.dtype.kind == "U" else "object"
    groups.append((path, {"kind": "json_rows", "dtype": dtype, "row_shape": json.dumps(row_shape)}))
    leaves.append(Leaf(f"{path}/bytes", data, per_row=False))
    leaves.append(Leaf(f"{path}/ends", ends.reshape(len(array), -1), json_ends=True))


def read_columns(group: h5py.Group, start: int, end: int) -> dict[str, Any]:
    """Rows ``start:end`` of every column in a policy group, in the written order."""
    columns = {name: _read(group[name], start, end) for name in group}
    order = json.loads(group.attrs.get("columns", "[]"))
    ordered = {name: columns.pop(name) for name in order if name in columns}
    ordered.update(columns)
    return ordered


def _read(node: h5py.Group | h5py.Dataset, start: int, end: int) -> Any:
    if isinstance(node, h5py.Dataset):
        return node[start:end]
    kind = node.attrs["kind"]
    if kind == "dict":
        return {name: _read(child, start, end) for name, child in node.items()}
    if kind == "tuple":
        return tuple(_read(node[str(i)], start, end) for i in range(len(node)))
    ends = node["ends"][start:end]
    flat_ends = ends.reshape(-1)
    first = int(node["ends"][start - 1, -1]) if start > 0 else 0
    last = int(flat_ends[-1]) if len(flat_ends) else first
    data = node["bytes"][first:last]
    rows = loads_rows(data, flat_ends - first, node.attrs["dtype"])
    return rows.reshape((end - start, *json.loads(node.attrs["row_shape"])))
