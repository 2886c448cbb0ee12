"""Python and numpy values as JSON, without pickle.

Env infos and other object columns are stored as one JSON document per row;
configs are stored as JSON text. Decoding is ``json.loads`` plus rebuilding
tagged numpy values, so loading can never run code.

Tagged forms (anything else is plain JSON):

- numpy array: ``{"__ndarray__": nested list, "dtype": "float32", "shape": [2, 3]}``
- numpy scalar: ``{"__numpy__": value, "dtype": "int64"}``
- tuple: ``{"__tuple__": [items]}``
- dict with keys that are not all strings: ``{"__items__": [[key, value], ...]}``

A value of another type (an arbitrary object) is stored as its ``repr``
string, with a warning once per type: it cannot be rebuilt without running
code.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np

_ARRAY = "__ndarray__"
_SCALAR = "__numpy__"
_TUPLE = "__tuple__"
_ITEMS = "__items__"
# numpy kinds stored as numbers: bool, signed and unsigned int, float.
NUMERIC_KINDS = "biuf"
_warned_types: set[str] = set()


def encode_value(value: Any) -> Any:
    """``value`` as plain JSON data (tagged where JSON has no equivalent).

    Example:
        >>> encode_value({"x": np.array([1, 2], dtype=np.int8), "t": (1, "a")})
        {'x': {'__ndarray__': [1, 2], 'dtype': 'int8', 'shape': [2]}, 't': {'__tuple__': [1, 'a']}}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in NUMERIC_KINDS or value.dtype.kind == "U":
            return {_ARRAY: value.tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
        if value.dtype == object:
            items = [encode_value(v) for v in value.ravel()]
            return {_ARRAY: items, "dtype": "object", "shape": list(value.shape)}
    elif isinstance(value, np.generic) and value.dtype.kind in NUMERIC_KINDS:
        return {_SCALAR: value.item(), "dtype": str(value.dtype)}
    elif isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: encode_value(v) for k, v in value.items()}
        return {_ITEMS: [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    elif isinstance(value, tuple):
        return {_TUPLE: [encode_value(v) for v in value]}
    elif isinstance(value, list):
        return [encode_value(v) for v in value]
    type_name = type(value).__name__
    if type_name not in _warned_types:
        _warned_types.add(type_name)
        warnings.warn(
            f"a {type_name} value is stored as its repr string: only numbers, strings, "
            "None, lists, tuples, dicts and numpy arrays are stored without pickle",
            stacklevel=2,
        )
    return repr(value)


def _decode_tagged(obj: dict[str, Any]) -> Any:
    if _ARRAY in obj:
        shape = tuple(obj["shape"])
        if obj["dtype"] == "object":
            array = np.empty(len(obj[_ARRAY]), dtype=object)
            array[:] = obj[_ARRAY]
            return array.reshape(shape)
        return np.array(obj[_ARRAY], dtype=np.dtype(obj["dtype"])).reshape(shape)
    if _SCALAR in obj:
        return np.dtype(obj["dtype"]).type(obj[_SCALAR])
    if _TUPLE in obj:
        return tuple(obj[_TUPLE])
    if _ITEMS in obj:
        return {_hashable(k): v for k, v in obj[_ITEMS]}
    return obj


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (see ``encode_value``)."""
    return json.dumps(encode_value(value), separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """The value ``dumps`` encoded.

    Example:
        >>> loads(dumps({"a": np.float32(1.5), "b": [None, True]}))
        {'a': np.float32(1.5), 'b': [None, True]}
    """
    return json.loads(text, object_hook=_decode_tagged)


def dumps_rows(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One JSON document per row: ``(bytes as uint8, end offset of each row)``.

    Rows that are the same object (as the shared empty info of a worker's
    rows) are encoded once.
    """
    if column.ndim == 1 and column.dtype == object and len(column):
        # The rows of a 1-D object array are the stored objects themselves, alive
        # while ``column`` is, so id() tells which rows are the same object.
        ids = np.fromiter(map(id, column), dtype=np.int64, count=len(column))
        _, first, which = np.unique(ids, return_index=True, return_inverse=True)
        encoded = [dumps(column[i]).encode() for i in first]
        lengths = np.array([len(e) for e in encoded], dtype=np.int64)[which]
        if len(encoded) == 1:
            data = encoded[0] * len(column)
        else:
            data = b"".join([encoded[i] for i in which.tolist()])
    else:
        parts = [dumps(row).encode() for row in column]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        data = b"".join(parts)
    return np.frombuffer(data, dtype=np.uint8), np.cumsum(lengths)


def loads_rows(data: np.ndarray | bytes, ends: np.ndarray, dtype: str = "object") -> np.ndarray:
    """The rows ``dumps_rows`` encoded: an object array (or a string array for
    ``dtype`` of kind ``U``), one element per row.

    Example:
        >>> rows = np.array([{"a": 1}, {}], dtype=object)
        >>> loads_rows(*dumps_rows(rows)).tolist()
        [{'a': 1}, {}]
    """
    raw = bytes(data)
    values = []
    start = 0
    for end in ends.tolist():
        values.append(loads(raw[start:end]))
        start = end
    if np.dtype(dtype).kind == "U":
        return np.array(values, dtype=dtype)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def json_safe(value: Any) -> Any:
    """Plain JSON data for a config or a record meant for people: numpy values
    as numbers and lists, 0-d tensors as numbers, non-finite floats as null, other
    objects as ``repr``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        return json_safe(value.item())  # e.g. a 0-d torch tensor
    return repr(value)
