"""Evaluating a policy: complete episodes in fresh envs, returns and lengths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.env.action_normalization import normalize_vector_actions
from hpcrl.env.atari import atari_preprocessing_options, uses_deepmind_preprocessing
from hpcrl.env.registry import EnvContext, make_vector_env
from hpcrl.evaluation.metrics import summarize_episodes
from hpcrl.evaluation.reward_clipping import reward_clipper
from hpcrl.policy.policy import Policy

_FIX = "play it on the env it was trained on"


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
    stepped together, each running its first episode to its end). An Atari game is
    preprocessed as the policy's config says (``preprocessor_pref``,
    ``atari_preprocessing``); the returns are the game's own, never clipped. The
    policy's observation filter normalises the observations, frozen: it is not
    updated.

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
    envs = _evaluation_envs(policy, env, num_episodes, env_config)
    try:
        _check_spaces(policy, envs, env)
        obs, _ = envs.reset(seed=seed)
        state = [
            np.repeat(np.asarray(s)[None], num_episodes, axis=0) for s in policy.get_initial_state()
        ]
        returns = np.zeros(num_episodes, dtype=np.float64)
        lengths = np.zeros(num_episodes, dtype=np.int64)
        running = np.ones(num_episodes, dtype=bool)
        # A recurrent model may read the previous action and reward (clipped as in
        # training).
        clip = reward_clipper(
            policy.config.get("clip_rewards"),
            clip_by_default=uses_deepmind_preprocessing(
                env, policy.config.get("preprocessor_pref", "deepmind")
            ),
        )
        space = envs.single_action_space
        prev_actions = np.zeros((num_episodes, *space.shape), dtype=space.dtype)
        prev_rewards = np.zeros(num_episodes, dtype=np.float32)
        while running.any():
            actions, state, _ = policy.compute_actions(
                policy.observation_filter(obs, update=False),
                state,
                prev_actions,
                prev_rewards,
                explore=explore,
            )
            prev_actions = actions
            if isinstance(space, gym.spaces.Box):
                actions = np.clip(actions, space.low, space.high)
            obs, rewards, terminated, truncated, _ = envs.step(actions)
            prev_rewards = np.asarray(rewards if clip is None else clip(rewards), np.float32)
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


def check_policy_fits_env(
    policy: Policy,
    env: str | Callable[..., Any],
    env_config: dict[str, Any] | None = None,
    fix: str = _FIX,
) -> None:
    """Raise ValueError when ``env`` (as ``evaluate_policy`` makes it) observes or acts in
    spaces of another layout than ``policy`` was made for (their bounds aside); the
    message ends with ``fix``."""
    envs = _evaluation_envs(policy, env, 1, env_config)
    try:
        _check_spaces(policy, envs, env, fix)
    finally:
        envs.close()


def _evaluation_envs(
    policy: Policy, env: Any, num_envs: int, env_config: dict[str, Any] | None
) -> gym.vector.VectorEnv:
    envs = make_vector_env(
        env,
        num_envs,
        EnvContext(env_config or {}),
        "auto",
        preprocessor_pref=policy.config.get("preprocessor_pref", "deepmind"),
        atari_preprocessing=atari_preprocessing_options(policy.config),
    )
    return normalize_vector_actions(envs, bool(policy.config.get("normalize_actions", False)))


def _check_spaces(policy: Policy, envs: gym.vector.VectorEnv, env: Any, fix: str = _FIX) -> None:
    given = (envs.single_observation_space, envs.single_action_space)
    expected = (policy.observation_space, policy.action_space)
    if [_layout(space) for space in given] != [_layout(space) for space in expected]:
        (obs, act), (policy_obs, policy_act) = (
            [_describe(s) for s in p] for p in (given, expected)
        )
        raise ValueError(
            f"env {env!r} observes {obs} and acts in {act}, but the policy was made to "
            f"observe {policy_obs} and act in {policy_act}: {fix}"
        )


def _describe(space: gym.Space) -> str:
    """A space in a few words: a Box by its shape (its bounds may be long arrays)."""
    return f"Box{space.shape}" if isinstance(space, gym.spaces.Box) else repr(space)


def _layout(space: gym.Space) -> Any:
    """What a policy depends on in a space: its kind, shape and number of choices."""
    if isinstance(space, gym.spaces.Dict):
        return {key: _layout(sub) for key, sub in space.spaces.items()}
    if isinstance(space, gym.spaces.Tuple):
        return tuple(_layout(sub) for sub in space.spaces)
    choices = getattr(space, "n", None), getattr(space, "nvec", None)
    return type(space).__name__, space.shape, repr(choices)


def evaluate_policies(
    policies: dict[str, Policy],
    env: str | Callable[..., Any],
    num_episodes: int,
    *,
    policy_mapping_fn: Any = None,
    env_config: dict[str, Any] | None = None,
    seed: int | None = None,
    explore: bool = False,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes of a multi-agent ``env`` with ``policies`` (policy
    id -> Policy, e.g. every policy of a trainer checkpoint), agents mapped to them by
    ``policy_mapping_fn`` (a function or ``"module:function"``; None: every agent to
    ``"default_policy"``). Each policy's observation filter normalises its agents'
    observations, frozen: it is not updated.

    Returns:
        ``{"episode_returns", "episode_lengths", "policy_returns": {policy_id: array}}``
        plus ``episode_reward_mean/min/max`` and ``episode_len_mean``; an episode's
        return is the sum over its agents.
    """
    from hpcrl.evaluation.rollout_worker import RolloutWorker

    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    first = next(iter(policies.values()))
    config = {
        "env_config": env_config or {},
        "num_envs_per_worker": num_episodes,
        "rollout_fragment_length": 1,
        "batch_mode": "complete_episodes",
        "seed": seed,
        "multiagent": {
            "policies": {
                pid: (type(p), p.observation_space, p.action_space, dict(p.config))
                for pid, p in policies.items()
            },
            "policy_mapping_fn": policy_mapping_fn,
            "policies_to_train": [],
        },
    }
    worker = RolloutWorker(env, type(first), config)
    worker.update_observation_filters = False
    try:
        if not worker.multi_agent:
            raise ValueError(
                f"{env!r} is a single-agent env; evaluate one policy with evaluate_policy"
            )
        for pid, policy in policies.items():
            worker.get_policy(pid).set_state(policy.get_state(include_optimizer=False))
            worker.get_policy(pid).config["explore"] = explore
        returns, lengths, per_policy = [], [], {}
        while len(returns) < num_episodes:
            worker.sample()
            metrics = worker.get_metrics()
            returns.extend(metrics["episode_returns"])
            lengths.extend(metrics["episode_lengths"])
            for pid, values in metrics["policy_returns"].items():
                per_policy.setdefault(pid, []).extend(values)
    finally:
        worker.stop()
    returns_array = np.asarray(returns[:num_episodes], dtype=np.float64)
    lengths = lengths[:num_episodes]
    return {
        "episode_returns": returns_array,
        "episode_lengths": np.asarray(lengths, dtype=np.int64),
        "policy_returns": {pid: np.asarray(v, dtype=np.float64) for pid, v in per_policy.items()},
        **summarize_episodes(returns_array, lengths),
    }
