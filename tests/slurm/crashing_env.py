"""CrashingCartPole-v0: CartPole whose every step raises, registered on import.

The requeue tests name it as ``--env crashing_env:CrashingCartPole-v0``, with
this file copied to the job's working directory, which hpcrl train imports from.
"""

from __future__ import annotations

import gymnasium as gym


class CrashingCartPole(gym.Wrapper):
    def __init__(self, **kwargs) -> None:
        super().__init__(gym.make("CartPole-v1"))

    def step(self, action):
        raise RuntimeError("CrashingCartPole crashes on every step")


gym.register("CrashingCartPole-v0", entry_point=CrashingCartPole)
