"""Envs: the registry, vector-env creation, MultiAgentEnv, the PettingZoo adapters,
Atari games with DeepMind's preprocessing (``hpcrl.env.atari``) and failing sub-envs
(``hpcrl.env.failures``)."""

from __future__ import annotations

from hpcrl.env.failures import EnvError
from hpcrl.env.multi_agent_env import MultiAgentEnv
from hpcrl.env.registry import EnvContext, make_vector_env, make_worker_envs, register_env

__all__ = [
    "EnvContext",
    "EnvError",
    "MultiAgentEnv",
    "make_vector_env",
    "make_worker_envs",
    "register_env",
]
