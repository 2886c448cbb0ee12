"""PettingZoo envs as hpcrl MultiAgentEnvs.

PettingZoo has two APIs: Parallel envs step every live agent at once, AEC
("agent environment cycle") envs step one agent at a time. Each gets an
adapter that speaks hpcrl's dict API (``MultiAgentEnv``);
``wrap_pettingzoo`` picks the right one.

PettingZoo is an optional extra: nothing here imports it until a PettingZoo
env is handed in (``is_pettingzoo_env`` only looks at ``sys.modules``), and
``require_pettingzoo`` says how to install it where it is missing.

Both adapters end the episode the same way: when the env has no agents left
after a step, ``terminateds["__all__"]`` is true if every agent that finished
in that step was terminated, and ``truncateds["__all__"]`` is true otherwise
(some agent was cut off by a time limit, or the env dropped its agents without
saying why), so a learner bootstraps exactly when the episode was cut short.
Observations pass through unchanged, including the
``{"observation": ..., "action_mask": ...}`` dicts of PettingZoo's classic
games; the model reads the mask.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import gymnasium as gym

from hpcrl.env.multi_agent_env import ALL_AGENTS, MultiAgentEnv

_PETTINGZOO_MISSING = (
    'pettingzoo is an optional extra of hpcrl; install it with pip install "hpcrl[pettingzoo]"'
)


def require_pettingzoo() -> ModuleType:
    """Import and return ``pettingzoo``, or say how to install it.

    Raises:
        ImportError: pettingzoo is not installed.
    """
    try:
        import pettingzoo
    except ImportError as error:
        raise ImportError(_PETTINGZOO_MISSING) from error
    return pettingzoo


def is_pettingzoo_env(env: Any) -> bool:
    """Whether ``env`` is a PettingZoo AEC or Parallel env (wrappers included).

    Imports nothing: an object of a PettingZoo class can only exist once
    pettingzoo has been imported, so where it is not in ``sys.modules`` the
    answer is False.

    Example:
        >>> is_pettingzoo_env(gym.make("CartPole-v1"))
        False
    """
    return _pettingzoo_kind(env) is not None


def wrap_pettingzoo(env: Any) -> MultiAgentEnv:
    """``env`` as a ``MultiAgentEnv``: PettingZoo AEC and Parallel envs get their
    adapter, a ``MultiAgentEnv`` is returned as it is.

    Raises:
        TypeError: ``env`` is neither.
    """
    if isinstance(env, MultiAgentEnv):
        return env
    kind = _pettingzoo_kind(env)
    if kind == "aec":
        return AECPettingZooEnv(env)
    if kind == "parallel":
        return ParallelPettingZooEnv(env)
    raise TypeError(
        f"wrap_pettingzoo needs a PettingZoo AECEnv or ParallelEnv, or an hpcrl "
        f"MultiAgentEnv; got {type(env).__name__}. A single-agent gymnasium env needs no "
        "wrapping."
    )


def _pettingzoo_kind(env: Any) -> str | None:
    """``"aec"``, ``"parallel"``, or None when ``env`` is not a PettingZoo env."""
    module = sys.modules.get("pettingzoo.utils.env")
    if module is None:
        return None
    if isinstance(env, module.AECEnv):
        return "aec"
    if isinstance(env, module.ParallelEnv):
        return "parallel"
    return None


def _episode_end_flags(over: bool, ended_terminated: list[bool]) -> tuple[bool, bool]:
    """``(terminateds["__all__"], truncateds["__all__"])`` for a step.

    ``ended_terminated`` holds, per agent that finished in the step, whether it
    was terminated (rather than truncated).
    """
    if not over:
        return False, False
    terminated = bool(ended_terminated) and all(ended_terminated)
    return terminated, not terminated


class _PettingZooAdapter(MultiAgentEnv):
    """What both adapters share: the wrapped env, its agents, spaces and close."""

    _kind = ""
    _other_adapter = ""

    def __init__(self, env: Any) -> None:
        super().__init__()
        kind = _pettingzoo_kind(env)
        if kind != self._kind:
            found = f"a PettingZoo {kind} env" if kind else type(env).__name__
            raise TypeError(
                f"{type(self).__name__} wraps a PettingZoo {self._kind} env, got {found}; "
                f"use {self._other_adapter}, or wrap_pettingzoo(env), which picks the adapter"
            )
        self.env = env

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env})"

    @property
    def possible_agents(self) -> list[Any]:
        """The env's ``possible_agents``; empty for envs that make agents as they go."""
        return list(getattr(self.env, "possible_agents", None) or [])

    def get_observation_space(self, agent_id: Any) -> gym.Space:
        return self.env.observation_space(agent_id)

    def get_action_space(self, agent_id: Any) -> gym.Space:
        return self.env.action_space(agent_id)

    def close(self) -> None:
        self.env.close()

    def _check_not_over(self) -> None:
        if not self.env.agents:
            raise RuntimeError(
                f"{type(self).__name__}.step called with no agents left in {self.env}: the "
                "episode is over; call reset() first"
            )


class ParallelPettingZooEnv(_PettingZooAdapter):
    """A PettingZoo Parallel env as a ``MultiAgentEnv``.

    ``reset`` and ``step`` pass through, with ``"__all__"`` added to
    ``terminateds`` and ``truncateds``. The episode is over once the env has
    no agents left after a step, or every agent stepped is terminated or
    truncated; ``"__all__"`` is then terminated if all of them were
    terminated, truncated otherwise. An agent that finishes is reported with
    its final observation and its flag and does not act again; agents the env
    adds mid-episode appear in the observation dict. Rewards become floats.

    Args:
        env: a PettingZoo ``ParallelEnv`` (wrappers included).

    Example:
        >>> import pytest
        >>> rps = pytest.importorskip("pettingzoo.classic.rps.rps")  # needs pygame
        >>> env = ParallelPettingZooEnv(rps.parallel_env(max_cycles=2))
        >>> obs, infos = env.reset(seed=0)
        >>> sorted(obs), env.get_action_space("player_0")
        (['player_0', 'player_1'], Discrete(3))
        >>> obs, rewards, terminateds, truncateds, infos = env.step({"player_0": 0, "player_1": 1})
        >>> rewards, truncateds["__all__"]
        ({'player_0': -1.0, 'player_1': 1.0}, False)
        >>> truncateds = env.step({"player_0": 2, "player_1": 2})[3]
        >>> truncateds
        {'player_0': True, 'player_1': True, '__all__': True}
    """

    _kind = "parallel"
    _other_adapter = "AECPettingZooEnv"

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, dict]]:
        obs, infos = self.env.reset(seed=seed, options=options)
        return dict(obs), dict(infos)

    def step(
        self, action_dict: dict[Any, Any]
    ) -> tuple[dict, dict[Any, float], dict[Any, bool], dict[Any, bool], dict[Any, dict]]:
        self._check_not_over()
        obs, rewards, terminateds, truncateds, infos = self.env.step(action_dict)
        terminateds, truncateds = dict(terminateds), dict(truncateds)
        stepped = terminateds.keys() | truncateds.keys()
        ended = [a for a in stepped if terminateds.get(a) or truncateds.get(a)]
        over = not self.env.agents or (bool(stepped) and len(ended) == len(stepped))
        terminateds[ALL_AGENTS], truncateds[ALL_AGENTS] = _episode_end_flags(
            over, [bool(terminateds.get(a)) for a in ended]
        )
        rewards = {agent: float(reward) for agent, reward in rewards.items()}
        return dict(obs), rewards, terminateds, truncateds, dict(infos)


class AECPettingZooEnv(_PettingZooAdapter):
    """A turn-based PettingZoo AEC env as a ``MultiAgentEnv``.

    Observations: ``reset`` gives the observation of the agent selected to
    act. ``step(action_dict)`` needs exactly one action, for that agent; it
    applies it, then advances past every agent that is terminated or
    truncated (PettingZoo makes each take a ``None`` step before it leaves).
    Each such agent is reported with its final observation, its info and its
    ``terminateds``/``truncateds`` flag, so the learner sees how its episode
    ended, and does not act again. The walk stops at the next agent to act,
    whose observation (flags False) is in the dict too. So the observation
    dict holds one agent, except where agents finish: at the end of a game it
    holds every agent still in the game, each flagged.

    Rewards: every ``env.step`` this adapter calls (the move, then each
    ``None`` step) leaves that call's rewards in ``env.rewards``; they are
    added up per agent. ``rewards`` thus holds, for every agent present in
    ``env.rewards`` after any of those calls, what it received during this
    ``step``, whether or not it acted or has an observation: in a turn-based
    game the reward for a move often comes with another agent's move (the
    loser's -1 in tic-tac-toe arrives with the winner's move), and the learner
    credits it to that agent's last action. Summed over an episode, an agent's
    rewards equal the sum of ``env.last()`` rewards over ``env.agent_iter()``
    (PettingZoo's own count), given an env that, as PettingZoo's API says,
    keeps in ``env.rewards`` only what the last step gave. Rewards at reset
    are not reported (PettingZoo envs give none).

    ``"__all__"`` is true once ``env.agents`` is empty.

    Args:
        env: a PettingZoo ``AECEnv`` (wrappers included).

    Example:
        >>> import pytest
        >>> tictactoe = pytest.importorskip("pettingzoo.classic.tictactoe.tictactoe")
        >>> env = AECPettingZooEnv(tictactoe.env())
        >>> obs, infos = env.reset(seed=0)
        >>> list(obs), sorted(obs["player_1"])  # the mask goes to the model
        (['player_1'], ['action_mask', 'observation'])
        >>> for square in [0, 3, 1, 4]:  # two moves each, one agent at a time
        ...     obs = env.step({next(iter(obs)): square})[0]
        >>> obs, rewards, terminateds, truncateds, infos = env.step({"player_1": 2})
        >>> rewards  # player_1 fills squares 0, 1, 2: the first column
        {'player_1': 1.0, 'player_2': -1.0}
        >>> sorted(obs), terminateds
        (['player_1', 'player_2'], {'player_2': True, 'player_1': True, '__all__': True})
    """

    _kind = "aec"
    _other_adapter = "ParallelPettingZooEnv"

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, dict]]:
        self.env.reset(seed=seed, options=options)
        agent = self.env.agent_selection
        observation, _, _, _, info = self.env.last()
        return {agent: observation}, {agent: info}

    def step(
        self, action_dict: dict[Any, Any]
    ) -> tuple[dict, dict[Any, float], dict[Any, bool], dict[Any, bool], dict[Any, dict]]:
        self._check_not_over()
        agent = self.env.agent_selection
        if set(action_dict) != {agent}:
            raise ValueError(
                f"{type(self).__name__}.step needs one action, for {agent!r} (the agent in the "
                f"last observation dict that is not done); got actions for {list(action_dict)}"
            )
        rewards: dict[Any, float] = {}
        self.env.step(action_dict[agent])
        self._add_rewards(rewards)
        obs, terminateds, truncateds, infos = {}, {}, {}, {}
        ended_terminated = []
        while self.env.agents:
            agent = self.env.agent_selection
            obs[agent], _, terminated, truncated, infos[agent] = self.env.last()
            terminateds[agent], truncateds[agent] = bool(terminated), bool(truncated)
            if not (terminated or truncated):
                break
            ended_terminated.append(bool(terminated))
            self.env.step(None)
            self._add_rewards(rewards)
        terminateds[ALL_AGENTS], truncateds[ALL_AGENTS] = _episode_end_flags(
            not self.env.agents, ended_terminated
        )
        return obs, rewards, terminateds, truncateds, infos

    def _add_rewards(self, rewards: dict[Any, float]) -> None:
        for agent, reward in self.env.rewards.items():
            rewards[agent] = rewards.get(agent, 0.0) + float(reward)
