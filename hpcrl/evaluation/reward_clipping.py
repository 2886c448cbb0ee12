"""Reward clipping (RLlib's ``clip_rewards``): the policies learn from clipped rewards,
the episode metrics keep the env's own."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

# Clips an array of rewards, or one reward.
RewardClip = Callable[[np.ndarray], np.ndarray]


def reward_clipper(clip_rewards: bool | float | None, clip_by_default: bool) -> RewardClip | None:
    """The clipping ``clip_rewards`` asks for; None for none.

    Args:
        clip_rewards: None (``clip_by_default`` decides), True (the sign of the
            reward, as DQN clips Atari rewards), a number c > 0 (clip to [-c, c])
            or False (never).
        clip_by_default: clip to the sign when ``clip_rewards`` is None (hpcrl
            does for Atari ids with the deepmind preprocessing).

    Raises:
        ValueError: any other ``clip_rewards``.

    Example:
        >>> reward_clipper(2.0, False)(np.array([5.0, -3.0, 1.5]))
        array([ 2. , -2. ,  1.5])
        >>> reward_clipper(None, True)(np.array([5.0, -3.0, 0.0]))
        array([ 1., -1.,  0.])
    """
    if clip_rewards is None:
        clip_rewards = clip_by_default
    if clip_rewards is False:
        return None
    if clip_rewards is True:
        return np.sign
    if isinstance(clip_rewards, numbers.Real) and clip_rewards > 0:  # bools were handled
        bound = float(clip_rewards)
        return lambda rewards: np.clip(rewards, -bound, bound)
    raise ValueError(
        "config key 'clip_rewards' must be None (clip Atari rewards to their sign), True (the "
        f"sign), False (never) or a number c > 0 (clip to [-c, c]), got {clip_rewards!r}"
    )
