"""CartPole without the velocities: a memory task for recurrent policies.

The observation keeps the cart position and the pole angle and drops both
velocities, so a feed-forward policy cannot tell which way the pole moves; a
recurrent one can infer it from consecutive observations. Importing this module
registers ``StatelessCartPole-v1`` with gymnasium, so configs name it as
``env: hpcrl.env.stateless_cartpole:StatelessCartPole-v1``.

Example:
    >>> env = gym.make("StatelessCartPole-v1")
    >>> obs, _ = env.reset(seed=0)
    >>> obs.shape
    (2,)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv

# The CartPole observation entries that stay: cart position and pole angle.
KEPT = np.array([0, 2])


class StatelessCartPole(gym.ObservationWrapper):
    """``CartPole-v1`` observing ``[x, theta]`` only."""

    def __init__(self, env: gym.Env | None = None, **kwargs: Any) -> None:
        super().__init__(env if env is not None else CartPoleEnv(**kwargs))
        high = self.env.observation_space.high[KEPT]
        self.observation_space = gym.spaces.Box(-high, high, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[KEPT]


def _make(**kwargs: Any) -> gym.Env:
    return StatelessCartPole(**kwargs)


if "StatelessCartPole-v1" not in gym.registry:
    gym.register(
        "StatelessCartPole-v1",
        entry_point=_make,
        max_episode_steps=500,
        reward_threshold=475.0,
    )
