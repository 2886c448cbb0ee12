"""Evaluating a policy: complete episodes in fresh envs, returns and lengths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.env.registry import EnvContext, make_vector_env
from hpcrl.evaluation.metrics import summarize_episodes
from hpcrl.policy.policy import Policy


def evaluate_policy(
    policy: Policy,
    env: str | Callable[..., Any],
    num_episodes: int,
    *,
    env_config: dict[str, Any] | None = None,
    seed: int | None = None,
    explore: bool = False,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes of ``policy`` on ``env`` (one env per episode,
    stepped together, each running its first episode to its end).

    Returns:
        ``{"episode_returns": array, "episode_lengths": array}`` plus their
        ``episode_reward_mean/min/max`` and ``episode_len_mean``.

    Example:
        >>> from hpcrl.algorithms.pg import PGTorchPolicy
        >>> space = gym.make("CartPole-v1")
        >>> policy = PGTorchPolicy(space.observation_space, space.action_space, {"seed": 0})
        >>> evaluate_policy(policy, "CartPole-v1", 3, seed=0)["episode_returns"].shape
        (3,)
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    envs = make_vector_env(env, num_episodes, EnvContext(env_config or {}), "auto")
    try:
        obs, _ = envs.reset(seed=seed)
        state = [
            np.repeat(np.asarray(s)[None], num_episodes, axis=0) for s in policy.get_initial_state()
        ]
        returns = np.zeros(num_episodes, dtype=np.float64)
        lengths = np.zeros(num_episodes, dtype=np.int64)
        running = np.ones(num_episodes, dtype=bool)
        while running.any():
            actions, state, _ = policy.compute_actions(obs, state, explore=explore)
            if isinstance(envs.single_action_space, gym.spaces.Box):
                space = envs.single_action_space
                actions = np.clip(actions, space.low, space.high)
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            returns += np.where(running, rewards, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
    finally:
        envs.close()
    return {
        "episode_returns": returns,
        "episode_lengths": lengths,
        **summarize_episodes(returns, lengths),
    }
