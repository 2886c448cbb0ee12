"""Episode metrics: per-env accumulation in workers, a smoothing window on the driver."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import numpy as np


class EpisodeStats:
    """Running return and length of each env's current episode (vectorised)."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self._completed_returns: list[np.ndarray] = []
        self._completed_lengths: list[np.ndarray] = []

    def step(self, rewards: np.ndarray, valid: np.ndarray, done: np.ndarray) -> None:
        """Add one vector step; ``done`` marks envs whose episode ended at it."""
        self.returns += np.where(valid, rewards, 0.0)
        self.lengths += valid
        if done.any():
            self._completed_returns.append(self.returns[done].copy())
            self._completed_lengths.append(self.lengths[done].copy())
            self.returns[done] = 0.0
            self.lengths[done] = 0

    def drop(self, envs: np.ndarray) -> None:
        """Forget the running episodes of ``envs`` (a mask), uncounted."""
        self.returns[envs] = 0.0
        self.lengths[envs] = 0

    def get_state(self) -> dict[str, Any]:
        """Running and completed (not yet popped) episodes, for checkpoints."""
        returns, lengths = self.pop_completed()
        self._completed_returns.append(returns)
        self._completed_lengths.append(lengths)
        return {
            "returns": self.returns.copy(),
            "lengths": self.lengths.copy(),
            "completed_returns": returns,
            "completed_lengths": lengths,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.returns = np.array(state["returns"], dtype=np.float64)
        self.lengths = np.array(state["lengths"], dtype=np.int64)
        self._completed_returns = [np.asarray(state["completed_returns"], dtype=np.float64)]
        self._completed_lengths = [np.asarray(state["completed_lengths"], dtype=np.int64)]

    def pop_completed(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns and lengths of episodes completed since the last call."""
        returns = (
            np.concatenate(self._completed_returns) if self._completed_returns else np.zeros(0)
        )
        lengths = (
            np.concatenate(self._completed_lengths)
            if self._completed_lengths
            else np.zeros(0, dtype=np.int64)
        )
        self._completed_returns.clear()
        self._completed_lengths.clear()
        return returns, lengths


class MetricsWindow:
    """The last ``size`` completed episodes over all workers, for result summaries."""

    def __init__(self, size: int = 100) -> None:
        if size < 1:
            raise ValueError(f"metrics_smoothing_episodes must be >= 1, got {size}")
        self.size = size
        self.returns: deque[float] = deque(maxlen=size)
        self.lengths: deque[int] = deque(maxlen=size)
        self.policy_returns: dict[str, deque[float]] = {}
        self.episodes_total = 0
        # Sub-envs rebuilt after a failure, over the whole run (recreate_failed_envs).
        self.env_restarts = 0

    def add(self, worker_metrics: Iterable[dict[str, Any]]) -> int:
        """Add the ``get_metrics()`` results of workers; returns episodes added."""
        added = 0
        for metrics in worker_metrics:
            self.returns.extend(float(r) for r in metrics["episode_returns"])
            self.lengths.extend(int(n) for n in metrics["episode_lengths"])
            for pid, returns in metrics.get("policy_returns", {}).items():
                window = self.policy_returns.setdefault(pid, deque(maxlen=self.size))
                window.extend(float(r) for r in returns)
            added += len(metrics["episode_returns"])
            self.env_restarts += int(metrics.get("num_env_restarts", 0))
        self.episodes_total += added
        return added

    def get_state(self) -> dict[str, Any]:
        """The window and the episode count, for checkpoints."""
        return {
            "returns": np.array(self.returns, dtype=np.float64),
            "lengths": np.array(self.lengths, dtype=np.int64),
            "policy_returns": {
                pid: np.array(window, dtype=np.float64)
                for pid, window in self.policy_returns.items()
            },
            "episodes_total": self.episodes_total,
            "env_restarts": self.env_restarts,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.returns.clear()
        self.lengths.clear()
        self.returns.extend(float(r) for r in state["returns"])
        self.lengths.extend(int(n) for n in state["lengths"])
        self.policy_returns = {
            pid: deque((float(r) for r in returns), maxlen=self.size)
            for pid, returns in state.get("policy_returns", {}).items()
        }
        self.episodes_total = int(state["episodes_total"])
        self.env_restarts = int(state.get("env_restarts", 0))

    def summary(self) -> dict[str, Any]:
        """Episode return and length summaries; with several agents, also
        ``policy_reward_mean/min/max``: ``{policy_id: value}`` over the returns of the
        agents each policy played in the window's episodes."""
        summary: dict[str, Any] = summarize_episodes(
            np.fromiter(self.returns, dtype=np.float64), self.lengths
        )
        if self.policy_returns:
            for stat, reduce in (("mean", np.mean), ("min", np.min), ("max", np.max)):
                summary[f"policy_reward_{stat}"] = {
                    pid: float(reduce(window))
                    for pid, window in sorted(self.policy_returns.items())
                    if window
                }
        return summary


def summarize_episodes(returns: np.ndarray, lengths: Iterable[int]) -> dict[str, float]:
    """Mean, min and max return and mean length of episodes (NaN for none)."""
    if len(returns) == 0:
        nan = float("nan")
        return {
            "episode_reward_mean": nan,
            "episode_reward_min": nan,
            "episode_reward_max": nan,
            "episode_len_mean": nan,
        }
    return {
        "episode_reward_mean": float(returns.mean()),
        "episode_reward_min": float(returns.min()),
        "episode_reward_max": float(returns.max()),
        "episode_len_mean": float(np.mean(lengths)),
    }
