"""RLlib's ``normalize_actions``: policies act in [-1, 1], envs get their own range.

With ``normalize_actions: true`` a single-agent env whose actions are a Box with
finite bounds is wrapped in gymnasium's vector ``RescaleAction``: the policy's
action space becomes [-1, 1] in every dimension (so ``clip_actions`` clips to
it and a Gaussian's scale needs no tuning per env), and each action is mapped
linearly onto ``[low, high]`` before the env sees it. Discrete actions and
unbounded Boxes are left as they are, as RLlib leaves them.

Example:
    >>> import gymnasium as gym
    >>> env = normalize_vector_actions(gym.make_vec("Pendulum-v1", num_envs=2), True)
    >>> env.single_action_space
    Box(-1.0, 1.0, (1,), float32)
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def _rescaled_space(space: Any) -> np.ndarray | None:
    """[-1, 1] bounds for a bounded Box not already in it, else None."""
    if not isinstance(space, gym.spaces.Box):
        return None
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        return None
    if np.all(space.low == -1) and np.all(space.high == 1):
        return None
    return np.ones(space.shape, dtype=space.dtype)


def normalize_env_actions(env: gym.Env, enabled: bool) -> gym.Env:
    """The same for one gymnasium env (ES and ARS play whole episodes in one)."""
    ones = _rescaled_space(env.action_space) if enabled else None
    return env if ones is None else gym.wrappers.RescaleAction(env, -ones, ones)


def normalize_vector_actions(env: Any, enabled: bool) -> Any:
    """``env`` (a gymnasium VectorEnv) acting in [-1, 1] when ``enabled`` and its
    actions are a bounded Box; otherwise ``env`` itself.

    Raises:
        ValueError: ``enabled`` for a multi-agent env (a list of env copies).
    """
    if not enabled:
        return env
    if isinstance(env, list):
        raise ValueError(
            "normalize_actions is supported for single-agent envs; for a multi-agent env "
            "rescale each agent's actions in the env (or set normalize_actions: false)"
        )
    ones = _rescaled_space(env.single_action_space)
    return env if ones is None else gym.wrappers.vector.RescaleAction(env, -ones, ones)
