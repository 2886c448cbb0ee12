"""A SyncVectorEnv whose copies are called one by one, each one's failure caught.

Used by rollout workers instead of gymnasium's ``SyncVectorEnv`` when
``recreate_failed_envs`` or ``env_step_timeout_s`` is set (``hpcrl.env.failures``).
It steps like ``SyncVectorEnv`` with next-step autoreset; when a copy fails
and is rebuilt, its entry of that step is the rebuilt copy's first
observation (reward 0, neither terminated nor truncated) and ``failed``
marks it, so that the sampler drops the episode the copy was playing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import deepcopy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import concatenate, iterate

from hpcrl.env.failures import EnvCall, FailurePolicy, GuardedEnvs


class GuardedVectorEnv(gym.vector.SyncVectorEnv):
    """``SyncVectorEnv`` over ``env_fns`` with each copy's failures caught (``policy``).

    Attributes:
        failed: after ``step()``, the copies that failed in it and were rebuilt.
        any_failed: whether any did.

    Example:
        >>> from hpcrl.env.failures import FailurePolicy
        >>> env = GuardedVectorEnv([lambda: gym.make("CartPole-v1")] * 2,
        ...                        FailurePolicy(recreate=True))
        >>> _ = env.reset(seed=0)
        >>> _ = env.step(np.array([0, 1]))
        >>> env.any_failed, env.pop_restarts()
        (False, 0)
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], policy: FailurePolicy) -> None:
        super().__init__(env_fns)
        guarded = GuardedEnvs(self.envs, lambda index: env_fns[index](), policy)
        # Held as bound methods: env snapshots (hpcrl.io.env_state) skip callables, so
        # the guard's thread does not stop this env from being snapshotted.
        self._call = guarded.call
        self._close_envs = guarded.close
        self.pop_restarts = guarded.pop_restarts
        self.failed = np.zeros(self.num_envs, dtype=bool)
        self.any_failed = False
        self._episode_steps = np.zeros(self.num_envs, dtype=np.int64)

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset every copy (``seed``: None, an int for copy 0, counting up, or a list);
        ``options`` go to each copy as they are."""
        if options is not None and "reset_mask" in options:
            raise ValueError(
                "GuardedVectorEnv resets every copy: options['reset_mask'] is not supported; "
                "reset them all (leave reset_mask out)"
            )
        if seed is None or isinstance(seed, int):
            seeds = [None if seed is None else seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        calls = [
            EnvCall(i, "reset", kwargs={"seed": s, "options": options}) for i, s in enumerate(seeds)
        ]
        outcomes, _ = self._call(calls)
        infos: dict[str, Any] = {}
        for i, (obs, info) in enumerate(outcomes):
            self._env_obs[i] = obs
            infos = self._add_info(infos, info, i)
        self._terminations[:] = self._truncations[:] = self._autoreset_envs[:] = False
        self._episode_steps[:] = 0
        self.failed[:] = False
        self.any_failed = False
        self._observations = concatenate(
            self.single_observation_space, self._env_obs, self._observations
        )
        return deepcopy(self._observations) if self.copy else self._observations, infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        resetting = self._autoreset_envs
        calls = [
            EnvCall(i, "reset") if resetting[i] else EnvCall(i, "step", (a,), None, steps)
            for i, (a, steps) in enumerate(
                zip(iterate(self.action_space, actions), self._episode_steps.tolist())
            )
        ]
        outcomes, rebuilt = self._call(calls)
        starting = resetting if rebuilt is None else resetting | rebuilt
        infos: dict[str, Any] = {}
        for i, outcome in enumerate(outcomes):
            if starting[i]:
                self._env_obs[i], info = outcome
                self._rewards[i] = 0.0
                self._terminations[i] = self._truncations[i] = False
            else:
                (
                    self._env_obs[i],
                    self._rewards[i],
                    self._terminations[i],
                    self._truncations[i],
                    info,
                ) = outcome
            infos = self._add_info(infos, info, i)
        self._episode_steps += 1
        self._episode_steps[starting] = 0
        if rebuilt is not None or self.any_failed:
            self.failed = rebuilt if rebuilt is not None else np.zeros(self.num_envs, dtype=bool)
        self.any_failed = rebuilt is not None
        self._observations = concatenate(
            self.single_observation_space, self._env_obs, self._observations
        )
        self._autoreset_envs = self._terminations | self._truncations
        return (
            deepcopy(self._observations) if self.copy else self._observations,
            np.copy(self._rewards),
            np.copy(self._terminations),
            np.copy(self._truncations),
            infos,
        )

    def close_extras(self, **kwargs: Any) -> None:
        self._close_envs()
