"""Envs that fail on purpose: one copy raises (or hangs) in ``step`` or ``reset``.

Every episode lasts ``LENGTH`` steps with reward 1 per step (per agent), so every
completed episode's return is known; the observation ``[t, instance, episode]``
tells which instance of a copy and which of its episodes a row comes from.

env_config: ``run`` (a name that keeps the instance counts of one test apart),
``fail_worker`` and ``fail_copy`` (which worker and copy fail; 0 and 1),
``fail_in`` ("step" or "reset"), ``fail_at`` (the copy's own count of such calls
that fails; 16: the 6th step of its second episode), ``hang`` (None: raise;
"sleep": sleep ``sleep_s`` seconds; "spin": loop in Python for ever),
``failing_instances`` (how many instances of the copy fail: 1, so a rebuilt copy
behaves).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import ClassVar

import gymnasium as gym
import numpy as np

from hpcrl.env import MultiAgentEnv

LENGTH = 10
OBS = gym.spaces.Box(-1.0, 1000.0, (3,), np.float32)
ACT = gym.spaces.Discrete(2)


class Fault:
    """Counts a copy's calls and fails the one the env_config names."""

    made: ClassVar[Counter] = Counter()

    def __init__(self, context) -> None:
        key = (context.get("run"), context.worker_index, context.vector_index)
        Fault.made[key] += 1
        self.instance = Fault.made[key]
        self.armed = (
            context.worker_index == context.get("fail_worker", 0)
            and context.vector_index == context.get("fail_copy", 1)
            and self.instance <= context.get("failing_instances", 1)
        )
        self.method = context.get("fail_in", "step")
        self.at = context.get("fail_at", 16)
        self.hang = context.get("hang")
        self.sleep_s = context.get("sleep_s", 2.0)
        self.calls = Counter()

    def tick(self, method: str) -> None:
        self.calls[method] += 1
        if not (self.armed and method == self.method and self.calls[method] == self.at):
            return
        if self.hang == "sleep":
            time.sleep(self.sleep_s)
        elif self.hang == "spin":
            while True:
                pass
        else:
            raise RuntimeError(f"flaky env: {method} number {self.at} fails")


class FlakyEnv(gym.Env):
    """One agent; see the module docstring."""

    observation_space = OBS
    action_space = ACT

    def __init__(self, context) -> None:
        self.fault = Fault(context)
        self.t = self.episode = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.fault.tick("reset")
        self.t, self.episode = 0, self.episode + 1
        return self._obs(), {}

    def step(self, action):
        self.fault.tick("step")
        self.t += 1
        return self._obs(), 1.0, False, self.t >= LENGTH, {}

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.fault.instance, self.episode], np.float32)


class FlakyTeam(MultiAgentEnv):
    """Two agents "a" and "b", each rewarded 1 per step; see the module docstring."""

    possible_agents = ["a", "b"]
    observation_space = OBS
    action_space = ACT

    def __init__(self, context) -> None:
        super().__init__()
        self.env = FlakyEnv(context)

    def reset(self, *, seed=None, options=None):
        obs, _ = self.env.reset(seed=seed)
        return {"a": obs, "b": obs}, {}

    def step(self, action_dict):
        obs, _, _, truncated, _ = self.env.step(0)
        agents = list(action_dict)
        return (
            {a: obs for a in agents},
            {a: 1.0 for a in agents},
            {"__all__": False},
            {"__all__": truncated},
            {},
        )
