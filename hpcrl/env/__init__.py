"""Envs: the registry, vector-env creation, MultiAgentEnv, the PettingZoo adapters and
Atari games with DeepMind's preprocessing (``hpcrl.env.atari``)."""

from __future__ import annotations

from hpcrl.env.multi_agent_env import MultiAgentEnv
from hpcrl.env.registry import EnvContext, make_vector_env, make_worker_envs, register_env

__all__ = ["EnvContext", "MultiAgentEnv", "make_vector_env", "make_worker_envs", "register_env"]
