"""Fixtures of the replay tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h5py
import pytest

from hpcrl.io.hdf5_tree import read_tree, write_tree


@pytest.fixture
def hdf5_round_trip(tmp_path) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function that writes a state tree to an HDF5 file and reads it back."""
    count = 0

    def round_trip(state: dict[str, Any]) -> dict[str, Any]:
        nonlocal count
        count += 1
        path = tmp_path / f"replay_state_{count}.h5"
        with h5py.File(path, "w") as f:
            write_tree(f, state)
        with h5py.File(path, "r") as f:
            return read_tree(f)

    return round_trip
