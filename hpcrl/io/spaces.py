"""gymnasium spaces as JSON (for file attributes), and back.

Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple are supported.
Other spaces are recorded by their ``repr`` and cannot be rebuilt from a file.
"""

from __future__ import annotations

import json
import math
from typing import Any

import gymnasium as gym
import numpy as np


def space_to_json(space: gym.Space) -> str:
    """The space as a JSON string.

    Example:
        >>> space_to_json(gym.spaces.Discrete(3))
        '{"type": "Discrete", "n": 3, "start": 0}'
    """
    return json.dumps(_describe(space))


def space_from_json(text: str) -> gym.Space:
    """The space ``space_to_json`` described.

    Example:
        >>> box = gym.spaces.Box(-np.inf, 1.0, (2,), np.float32)
        >>> space_from_json(space_to_json(box)) == box
        True
    """
    return _build(json.loads(text))


def _describe(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "low": _bound(space.low),
            "high": _bound(space.high),
            "shape": list(space.shape),
            "dtype": space.dtype.str,
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": space.dtype.str,
        }
    if isinstance(space, gym.spaces.MultiBinary):
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"type": "Dict", "spaces": {k: _describe(s) for k, s in space.spaces.items()}}
    if isinstance(space, gym.spaces.Tuple):
        return {"type": "Tuple", "spaces": [_describe(s) for s in space.spaces]}
    return {"type": "unsupported", "repr": repr(space)}


def _bound(values: np.ndarray) -> Any:
    """A bound array as JSON: one number when all entries are equal; non-finite
    numbers as the strings "inf", "-inf", "nan" (JSON has no such numbers)."""
    flat = values.ravel()
    if flat.size and np.all(flat == flat[0]):
        return _number(flat[0].item())
    return [_number(v) for v in flat.tolist()]


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


def _build(desc: dict[str, Any]) -> gym.Space:
    kind = desc.get("type")
    if kind == "Box":
        shape = tuple(desc["shape"])
        dtype = np.dtype(desc["dtype"])
        low, high = (_bound_array(desc[k], shape, dtype) for k in ("low", "high"))
        return gym.spaces.Box(low, high, shape, dtype)
    if kind == "Discrete":
        return gym.spaces.Discrete(desc["n"], start=desc.get("start", 0))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(
            np.array(desc["nvec"]), dtype=np.dtype(desc["dtype"]), start=np.array(desc["start"])
        )
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(desc["n"])
    if kind == "Dict":
        return gym.spaces.Dict({k: _build(v) for k, v in desc["spaces"].items()})
    if kind == "Tuple":
        return gym.spaces.Tuple([_build(v) for v in desc["spaces"]])
    raise ValueError(
        f"cannot rebuild the space {desc.get('repr', desc)!r} from its description: "
        "only Box, Discrete, MultiDiscrete, MultiBinary, Dict and Tuple are stored exactly"
    )


def _bound_array(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    values = value if isinstance(value, list) else [value]
    if dtype.kind in "biu":  # integer bounds are JSON integers, exact at any size
        array = np.array(values, dtype=dtype)
    else:
        array = np.array([float(v) for v in values], dtype=dtype)
    return array.reshape(shape) if isinstance(value, list) else np.full(shape, array[0], dtype)
