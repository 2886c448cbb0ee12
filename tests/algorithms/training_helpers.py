"""The bounded learning runs of the algorithm tests."""

from __future__ import annotations

from typing import Any


def train_until(trainer: Any, reward: float, max_timesteps: int) -> dict[str, Any]:
    """``trainer.train()`` until ``episode_reward_mean`` reaches ``reward`` or
    ``max_timesteps`` env steps are sampled; the last result."""
    while True:
        result = trainer.train()
        if result["episode_reward_mean"] >= reward or result["timesteps_total"] >= max_timesteps:
            return result
