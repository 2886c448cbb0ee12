"""Time-major step storage for a vector of envs, cut into per-env fragments.

Each vector step writes one row per env for every column into preallocated
[time, env] arrays: a contiguous copy per column, no per-env Python loop. A
``valid`` mask marks the rows that are real transitions (gymnasium's
next-step autoreset spends one step per finished episode on the reset; that
row is not a transition). ``take`` gathers the chosen rows in env-major
order, so each env's rows are contiguous in time, and keeps the rest for the
next fragment.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class FragmentBuffer:
    """Columns of shape [time, num_envs, ...] that grow along time as needed."""

    def __init__(self, num_envs: int, capacity: int) -> None:
        self.num_envs = num_envs
        self.capacity = max(1, capacity)
        self.columns: dict[str, np.ndarray] = {}
        self.valid = np.zeros((self.capacity, num_envs), dtype=bool)
        self.size = 0

    def add(self, step: dict[str, Any], valid: np.ndarray) -> None:
        """Store one vector step: ``step[key]`` has shape [num_envs, ...]."""
        if self.size == self.capacity:
            self._grow()
        t = self.size
        for key, value in step.items():
            column = self.columns.get(key)
            if column is None:
                column = self._new_column(key, np.asarray(value))
            column[t] = value
        self.valid[t] = valid
        self.size += 1

    def take(self, emit: np.ndarray) -> dict[str, np.ndarray]:
        """Rows where ``emit`` ([size, num_envs]) is set, env-major; the other valid
        rows move to the front for the next fragment."""
        # Flat time-major row numbers in env-major order: one contiguous gather
        # per column (several times faster than a boolean mask on a transposed view).
        env, t = np.nonzero(emit.T)
        rows = t * self.num_envs + env
        flat = self.size * self.num_envs
        out = {
            key: col[: self.size].reshape(flat, *col.shape[2:]).take(rows, axis=0)
            for key, col in self.columns.items()
        }
        carry = self.valid[: self.size] & ~emit
        self._keep(carry)
        return out

    def invalidate(self, key: str, envs: np.ndarray, values: np.ndarray) -> None:
        """Mark not valid the rows of each env in ``envs`` (a mask) whose ``key``
        column holds that env's entry of ``values``."""
        if self.size == 0 or key not in self.columns:
            return
        matching = self.columns[key][: self.size, envs] == values[envs]
        self.valid[: self.size, envs] &= ~matching

    def _keep(self, carry: np.ndarray) -> None:
        steps_with_carry = np.flatnonzero(carry.any(axis=1))
        if len(steps_with_carry) == 0:
            self.size = 0
            return
        start = int(steps_with_carry[0])
        kept = self.size - start
        for column in self.columns.values():
            column[:kept] = column[start : self.size]
        self.valid[:kept] = carry[start:]
        self.size = kept

    def get_state(self) -> dict[str, Any]:
        """The rows held over to the next fragment (for checkpoints)."""
        return {
            "valid": self.valid[: self.size].copy(),
            "columns": {key: column[: self.size].copy() for key, column in self.columns.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        valid = state["valid"]
        self.size = len(valid)
        self.capacity = max(self.capacity, self.size)
        self.valid = np.zeros((self.capacity, self.num_envs), dtype=bool)
        self.valid[: self.size] = valid
        self.columns = {}
        for key, rows in state["columns"].items():
            column = np.empty((self.capacity, *rows.shape[1:]), dtype=rows.dtype)
            column[: self.size] = rows
            self.columns[key] = column

    def _new_column(self, key: str, value: np.ndarray) -> np.ndarray:
        shape = (self.capacity, *value.shape)
        column = np.empty(shape, dtype=value.dtype)
        self.columns[key] = column
        return column

    def _grow(self) -> None:
        self.capacity *= 2
        for key, column in self.columns.items():
            grown = np.empty((self.capacity, *column.shape[1:]), dtype=column.dtype)
            grown[: self.size] = column[: self.size]
            self.columns[key] = grown
        valid = np.zeros((self.capacity, self.num_envs), dtype=bool)
        valid[: self.size] = self.valid[: self.size]
        self.valid = valid
