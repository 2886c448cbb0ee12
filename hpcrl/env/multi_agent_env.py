"""MultiAgentEnv: RLlib's dict API for envs with several agents.

Every call speaks in dicts keyed by agent id. Only the agents that appear in
an observation dict act on the next step, so turn-based games give one
agent's observation at a time, and agents may join (first appear) or leave
(``terminateds[agent]`` or ``truncateds[agent]`` true) mid-episode. The
special key ``"__all__"`` in ``terminateds``/``truncateds`` ends the episode
for every agent.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

ALL_AGENTS = "__all__"


class MultiAgentEnv:
    """An env of several agents, stepped with a dict of actions.

    Subclasses implement ``reset`` and ``step`` and say which spaces each
    agent has, in one of three ways (looked up by ``get_observation_space``
    and ``get_action_space``):

    - ``observation_spaces`` / ``action_spaces``: dicts keyed by agent id;
    - ``observation_space`` / ``action_space`` as a ``gym.spaces.Dict`` keyed
      by agent id;
    - ``observation_space`` / ``action_space`` as one space all agents share.

    ``possible_agents`` lists every agent id that can ever appear (used to find
    the spaces of policies whose spaces are left to the env).

    Example:
        >>> import numpy as np
        >>> class TwoCoins(MultiAgentEnv):
        ...     possible_agents = ["a", "b"]
        ...     observation_space = gym.spaces.Box(0, 1, (1,))
        ...     action_space = gym.spaces.Discrete(2)
        ...     def reset(self, *, seed=None, options=None):
        ...         return {a: np.zeros(1, np.float32) for a in self.possible_agents}, {}
        ...     def step(self, action_dict):
        ...         obs = {a: np.ones(1, np.float32) for a in action_dict}
        ...         rewards = {a: float(act) for a, act in action_dict.items()}
        ...         return obs, rewards, {"__all__": True}, {"__all__": False}, {}
        >>> env = TwoCoins()
        >>> env.step({"a": 1, "b": 0})[1], env.get_action_space("b")
        ({'a': 1.0, 'b': 0.0}, Discrete(2))
    """

    possible_agents: list[Any] = []
    observation_spaces: dict[Any, gym.Space] | None = None
    action_spaces: dict[Any, gym.Space] | None = None
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None

    def __init__(self) -> None:
        """Nothing to set up; subclasses call it as RLlib's envs do (``super().__init__()``)."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Any], dict[Any, dict]]:
        """Start an episode: ``(obs_dict, info_dict)`` of the agents that act first."""
        raise NotImplementedError(f"{type(self).__name__} must implement reset")

    def step(
        self, action_dict: dict[Any, Any]
    ) -> tuple[dict, dict[Any, float], dict[Any, bool], dict[Any, bool], dict[Any, dict]]:
        """Apply the actions of the agents that were given an observation.

        Returns:
            ``(obs, rewards, terminateds, truncateds, infos)``, each keyed by
            agent id; ``terminateds`` and ``truncateds`` also hold ``"__all__"``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement step")

    def get_observation_space(self, agent_id: Any) -> gym.Space:
        """The observation space of ``agent_id``."""
        return _space_of(self, agent_id, "observation")

    def get_action_space(self, agent_id: Any) -> gym.Space:
        """The action space of ``agent_id``."""
        return _space_of(self, agent_id, "action")

    def get_agent_ids(self) -> list[Any]:
        """Every agent id that can appear (``possible_agents``, else the keys of the
        per-agent spaces)."""
        if self.possible_agents:
            return list(self.possible_agents)
        spaces = self.observation_spaces
        if spaces is None and isinstance(self.observation_space, gym.spaces.Dict):
            spaces = self.observation_space.spaces
        return list(spaces or ())

    def close(self) -> None:
        """Release what the env holds."""


def _space_of(env: MultiAgentEnv, agent_id: Any, kind: str) -> gym.Space:
    per_agent = getattr(env, f"{kind}_spaces", None)
    if per_agent:
        if agent_id not in per_agent:
            raise KeyError(
                f"{type(env).__name__}.{kind}_spaces has no agent {agent_id!r}; it has "
                f"{sorted(map(str, per_agent))}"
            )
        return per_agent[agent_id]
    space = getattr(env, f"{kind}_space", None)
    if space is None:
        raise ValueError(
            f"{type(env).__name__} declares no {kind} space: set {kind}_spaces (a dict per "
            f"agent id) or {kind}_space, or give the policies their spaces in "
            "config['multiagent']['policies']"
        )
    if isinstance(space, gym.spaces.Dict) and agent_id in space.spaces:
        return space.spaces[agent_id]
    return space


def make_multi_agent(env: str | Any) -> type[MultiAgentEnv]:
    """A MultiAgentEnv class of independent copies of a single-agent gymnasium env.

    RLlib's ``make_multi_agent``: ``MultiAgentCartPole = make_multi_agent("CartPole-v1")``;
    ``MultiAgentCartPole({"num_agents": 4})`` holds agents ``0..3``, each its own
    copy of the env. An agent leaves when its copy's episode ends; the episode
    ends (``"__all__"``) when every agent has left. ``reset(seed=s)`` seeds copy
    ``i`` with ``s + i``.

    Args:
        env: a gymnasium id, or a creator ``f(env_config) -> gym.Env``.

    Example:
        >>> MultiAgentCartPole = make_multi_agent("CartPole-v1")
        >>> env = MultiAgentCartPole({"num_agents": 2})
        >>> obs, _ = env.reset(seed=0)
        >>> sorted(obs), env.get_action_space(1)
        ([0, 1], Discrete(2))
    """

    def make_one(config: dict[str, Any]) -> gym.Env:
        if isinstance(env, str):
            return gym.make(env, **{k: v for k, v in config.items() if k != "num_agents"})
        return env(config)

    class MultiAgentWrapper(MultiAgentEnv):
        def __init__(self, config: dict[str, Any] | None = None) -> None:
            super().__init__()
            config = {} if config is None else config  # an EnvContext stays one
            num_agents = int(config.get("num_agents", 1))
            # Named "envs" (and "done" a list) so that hpcrl.io.env_state snapshots them.
            self.envs = [make_one(config) for _ in range(num_agents)]
            self.possible_agents = list(range(num_agents))
            self.observation_space = self.envs[0].observation_space
            self.action_space = self.envs[0].action_space
            self.done = [False] * num_agents

        def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
            self.done = [False] * len(self.envs)
            obs, infos = {}, {}
            for i, copy in enumerate(self.envs):
                obs[i], infos[i] = copy.reset(
                    seed=None if seed is None else seed + i, options=options
                )
            return obs, infos

        def step(self, action_dict: dict[int, Any]):
            obs, rewards, terminateds, truncateds, infos = {}, {}, {}, {}, {}
            for i, action in action_dict.items():
                obs[i], rewards[i], terminateds[i], truncateds[i], infos[i] = self.envs[i].step(
                    action
                )
                self.done[i] = bool(terminateds[i] or truncateds[i])
            over = all(self.done)
            terminateds["__all__"] = over and all(terminateds.get(i, True) for i in action_dict)
            truncateds["__all__"] = over and not terminateds["__all__"]
            return obs, rewards, terminateds, truncateds, infos

        def close(self) -> None:
            for copy in self.envs:
                copy.close()

    name = env if isinstance(env, str) else getattr(env, "__name__", "Env")
    MultiAgentWrapper.__name__ = MultiAgentWrapper.__qualname__ = "MultiAgent" + "".join(
        c for c in name.split("-")[0] if c.isalnum()
    )
    return MultiAgentWrapper
