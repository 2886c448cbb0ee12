"""The process-wide random generators (Python, numpy, torch) as plain data."""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np


def process_rng_state() -> dict[str, Any]:
    """States of ``random``, ``np.random`` and (if imported) torch's CPU generator.

    Example:
        >>> state = process_rng_state()
        >>> a = np.random.random()
        >>> set_process_rng_state(state)
        >>> np.random.random() == a
        True
    """
    version, internal, gauss_next = random.getstate()
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": np.array(internal, dtype=np.int64)},
        "numpy": {
            "name": name,
            "keys": keys,
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    if gauss_next is not None:
        state["python"]["gauss_next"] = gauss_next
    torch = sys.modules.get("torch")
    if torch is not None:
        state["torch"] = torch.get_rng_state().numpy()
    return state


def set_process_rng_state(state: dict[str, Any]) -> None:
    """Restore ``process_rng_state()``."""
    python = state["python"]
    internal = tuple(int(v) for v in np.asarray(python["state"]))
    random.setstate((int(python["version"]), internal, python.get("gauss_next")))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            np.asarray(numpy_state["keys"], dtype=np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    if "torch" in state:
        import torch

        torch.set_rng_state(torch.from_numpy(np.asarray(state["torch"], dtype=np.uint8).copy()))
