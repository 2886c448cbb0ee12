"""Env registry and vector-env creation."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

EnvCreator = Callable[["EnvContext"], Any]

_ENV_CREATORS: dict[str, EnvCreator] = {}

VECTORIZATION_MODES = ("auto", "vector_entry_point", "sync", "async")


class EnvContext(dict):
    """The ``env_config`` dict handed to an env creator, plus where the env runs.

    Attributes:
        worker_index: 0 for the driver's local worker, 1..N for remote workers.
        vector_index: index of this env within the worker's vector of envs.
        num_workers: number of remote workers.
    """

    def __init__(
        self,
        env_config: dict[str, Any],
        worker_index: int = 0,
        vector_index: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(env_config)
        self.worker_index = worker_index
        self.vector_index = vector_index
        self.num_workers = num_workers

    def copy_with(self, **changes: int) -> EnvContext:
        fields = {
            "worker_index": self.worker_index,
            "vector_index": self.vector_index,
            "num_workers": self.num_workers,
        }
        fields.update(changes)
        return EnvContext(dict(self), **fields)


def register_env(name: str, creator: EnvCreator) -> None:
    """Register ``creator(env_config) -> gym.Env | gym.vector.VectorEnv`` under ``name``.

    Example:
        >>> register_env("corridor", lambda cfg: gym.make("CartPole-v1"))
    """
    if not callable(creator):
        raise TypeError(f"register_env({name!r}, ...) needs a callable creator, got {creator!r}")
    _ENV_CREATORS[name] = creator


def registered_envs() -> list[str]:
    return sorted(_ENV_CREATORS)


def resolve_env_creator(env: str | EnvCreator) -> EnvCreator | str:
    """A registered creator, a callable as given, or a checked gymnasium id.

    Raises:
        ValueError: an id neither registered nor known to gymnasium (with
            the closest known names).
    """
    if callable(env):
        return env
    if not isinstance(env, str):
        raise TypeError(f"env must be a name or a creator function, got {env!r}")
    if env in _ENV_CREATORS:
        return _ENV_CREATORS[env]
    if ":" in env:
        module, _, _ = env.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"cannot import module {module!r} for env {env!r}: {err}") from err
    env_id = env.split(":", 1)[-1]
    if env_id not in gym.registry:
        known = list(gym.registry) + list(_ENV_CREATORS)
        close = difflib.get_close_matches(env_id, known, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown env {env!r}: not registered with hpcrl.register_env and not a "
            f"gymnasium id{hint}"
        )
    return env_id


def make_vector_env(
    env: str | EnvCreator,
    num_envs: int,
    context: EnvContext,
    vectorization_mode: str = "auto",
) -> gym.vector.VectorEnv:
    """A gymnasium VectorEnv of ``num_envs`` copies of ``env``.

    ``vectorization_mode="auto"`` uses the env's own batched implementation
    (its ``vector_entry_point``) when it has one, else a ``SyncVectorEnv``;
    ``"async"`` runs each env in a subprocess. A creator that returns a
    VectorEnv is used as it is (its ``num_envs`` must match).
    """
    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"vectorization_mode={vectorization_mode!r}; expected one of {VECTORIZATION_MODES}"
        )
    if num_envs < 1:
        raise ValueError(f"num_envs_per_worker must be >= 1, got {num_envs}")
    creator = resolve_env_creator(env)
    if isinstance(creator, str):
        return _make_gym_vector_env(creator, num_envs, dict(context), vectorization_mode)
    first = creator(context)
    if isinstance(first, gym.vector.VectorEnv):
        if first.num_envs != num_envs:
            raise ValueError(
                f"the env creator returned a VectorEnv with {first.num_envs} envs but "
                f"num_envs_per_worker is {num_envs}; make them agree"
            )
        return first
    if not isinstance(first, gym.Env):
        raise TypeError(f"env creator returned {type(first).__name__}, expected a gymnasium Env")
    made = [first]

    def factory(index: int) -> Callable[[], gym.Env]:
        if index == 0:
            return lambda: made.pop() if made else creator(context)
        return lambda: creator(context.copy_with(vector_index=index))

    fns = [factory(i) for i in range(num_envs)]
    if vectorization_mode == "async":
        first.close()
        made.clear()
        return gym.vector.AsyncVectorEnv(fns)
    return gym.vector.SyncVectorEnv(fns)


def _make_gym_vector_env(
    env_id: str, num_envs: int, kwargs: dict[str, Any], mode: str
) -> gym.vector.VectorEnv:
    spec = gym.spec(env_id)
    if mode == "auto":
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
    if mode == "vector_entry_point" and spec.vector_entry_point is None:
        raise ValueError(f"env {env_id!r} has no vector_entry_point; use 'sync' or 'async'")
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, **kwargs)
