"""An env that records every observation it returns, for the observation-filter tests
(tests/evaluation, tests/dask and, under mpiexec, tests/mpi/filter_script.py).

``RecordingEnv`` appends each observation to a file of its own in
``env_config["record_dir"]`` (flushed at once), whatever process it runs in;
``recorded_observations(dir)`` reads them all back, so a test can compare a
trainer's merged filter with numpy's statistics of every observation seen.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

# Three numbers on very different scales: unnormalised, the second swamps the others.
LOC = np.array([5.0, -300.0, 0.01])
SCALE = np.array([1.0, 50.0, 0.001])


class RecordingEnv(gym.Env):
    """Gaussian observations around ``LOC``, episodes of 5 to 29 steps, reward 1 for
    action 1."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, env_config: dict[str, Any] | None = None) -> None:
        self.record_dir = (env_config or {}).get("record_dir")
        self._file: Any = None
        self.t = 0
        self.length = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        self.t = 0
        self.length = int(self.np_random.integers(5, 30))
        return self._observe(), {}

    def step(self, action: Any) -> tuple:
        self.t += 1
        return self._observe(), float(action), self.t >= self.length, False, {}

    def _observe(self) -> np.ndarray:
        obs = (LOC + SCALE * self.np_random.normal(size=3)).astype(np.float32)
        if self.record_dir:
            if self._file is None:
                name = f"obs-{os.getpid()}-{uuid.uuid4().hex}.bin"
                self._file = open(os.path.join(self.record_dir, name), "ab")  # noqa: SIM115
            self._file.write(obs.astype(np.float64).tobytes())
            self._file.flush()
        return obs

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def recorded_observations(record_dir: str | Path) -> np.ndarray:
    """Every observation the ``RecordingEnv``s writing to ``record_dir`` returned."""
    files = sorted(Path(record_dir).glob("obs-*.bin"))
    rows = [np.fromfile(f, dtype=np.float64).reshape(-1, 3) for f in files]
    return np.concatenate(rows) if rows else np.zeros((0, 3))


def check_merged_filter(trainer: Any, record_dir: str | Path) -> int:
    """Assert that the driver's filter holds numpy's count, mean and variance of every
    observation recorded, and that every remote worker runs with the same statistics
    (after a sync, with nothing sampled since); returns the count."""
    seen = recorded_observations(record_dir)
    running = trainer.get_policy().observation_filter.running
    assert running.count == len(seen) > 0, (running.count, len(seen))
    np.testing.assert_allclose(running.mean, seen.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(running.var, seen.var(axis=0), rtol=1e-7)
    for states in trainer.workers.call_remote("get_filter_states"):
        [state] = states.values()
        assert state["count"] == running.count
        np.testing.assert_array_equal(state["mean"], running.mean)
        np.testing.assert_array_equal(state["m2"], running.m2)
    return running.count
