"""The env the scripts under mpiexec make fail: CartPole that raises on one worker."""

from __future__ import annotations

import gymnasium as gym


class FailingCartPole(gym.Wrapper):
    """CartPole that raises on worker ``fail_on_worker`` (env_config) after
    ``fail_after`` of its own steps (30 unless set)."""

    def __init__(self, context):
        super().__init__(gym.make("CartPole-v1"))
        self.fail = context.worker_index == context.get("fail_on_worker", -1)
        self.fail_after = context.get("fail_after", 30)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.fail and self.steps > self.fail_after:
            raise RuntimeError(f"env failure on worker {self.fail}")
        return self.env.step(action)
