"""Env registry and vector-env creation."""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

from hpcrl.env.atari import (
    is_atari_env_id,
    make_atari_env,
    make_atari_vector_env,
    registered_atari_id,
    require_ale,
)
from hpcrl.env.failures import FailurePolicy
from hpcrl.env.guarded_vector_env import GuardedVectorEnv
from hpcrl.env.multi_agent_env import MultiAgentEnv

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
    pettingzoo_creator = _pettingzoo_module_creator(env)
    if pettingzoo_creator is not None:
        return pettingzoo_creator
    if ":" in env:
        module, _, _ = env.partition(":")
        try:
            importlib.import_module(module)
        except Exception as err:  # an ImportError, or whatever the module raised
            raise ValueError(import_error_message(module, f"env {env!r}", err)) from err
    env_id = env.split(":", 1)[-1]
    if is_atari_env_id(env_id):
        require_ale(env_id)
        if registered_atari_id(env_id) in gym.registry:
            return env_id
    if env_id not in gym.registry:
        known = list(gym.registry) + list(_ENV_CREATORS)
        close = difflib.get_close_matches(env_id, known, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown env {env!r}: not registered with hpcrl.register_env and not a "
            f"gymnasium id{hint}"
        )
    return env_id


def newest_gymnasium_id(env: str) -> str | None:
    """The newest version gymnasium registers of an env id it no longer makes, or None.

    An id it no longer makes is one it does not register (``Pendulum-v0``, from gym)
    or registers only to raise that it moved (the mujoco-py ids, ``HalfCheetah-v2``).
    Names given to ``register_env``, ``module:EnvId`` forms and Atari ids are left alone.

    Example:
        >>> newest_gymnasium_id("Pendulum-v0"), newest_gymnasium_id("CartPole-v0")
        ('Pendulum-v1', None)
    """
    if env in _ENV_CREATORS or ":" in env or is_atari_env_id(env):
        return None
    from gymnasium.envs.registration import find_highest_version, get_env_id, parse_env_id

    try:
        namespace, name, version = parse_env_id(env)
    except gym.error.Error:
        return None
    spec = gym.registry.get(env)
    # gymnasium registers the mujoco-py versions with an entry point that raises
    # (_raise_mujoco_py_error).
    moved = spec is not None and getattr(spec.entry_point, "__name__", "").startswith("_raise")
    if version is None or (spec is not None and not moved):
        return None
    newest = find_highest_version(namespace, name)
    if newest is None or newest <= version:
        return None
    return get_env_id(namespace, name, newest)


def import_error_message(module: str, what: str, err: Exception) -> str:
    """One line on a module that failed to import for ``what`` (e.g. "env 'mymod:Env-v0'"):
    its error, and for an error other than ImportError the command showing the traceback."""
    reason = " ".join(str(err).split()) or "(no message)"
    if isinstance(err, ImportError):
        return f"cannot import module {module!r} for {what}: {reason}"
    return (
        f"cannot import module {module!r} for {what}: {type(err).__name__}: {reason} "
        f"(python -c 'import {module}' shows where)"
    )


def _pettingzoo_module_creator(env: str) -> EnvCreator | None:
    """For ``"pettingzoo.classic.tictactoe_v3"`` (any module path under ``pettingzoo``): a
    creator calling the module's ``parallel_env(**env_config)`` if it has one, else its
    ``env(**env_config)``."""
    if not env.startswith("pettingzoo."):
        return None
    from hpcrl.env.pettingzoo_env import require_pettingzoo

    require_pettingzoo()
    try:
        module = importlib.import_module(env)
    except ImportError as err:
        raise ValueError(f"cannot import the PettingZoo env module {env!r}: {err}") from err
    make = getattr(module, "parallel_env", None) or getattr(module, "env", None)
    if make is None:
        raise ValueError(f"PettingZoo module {env!r} has neither parallel_env() nor env()")
    return lambda env_config: make(**dict(env_config))


def make_worker_envs(
    env: str | EnvCreator,
    num_envs: int,
    context: EnvContext,
    vectorization_mode: str = "auto",
    *,
    preprocessor_pref: str | None = "deepmind",
    atari_preprocessing: dict[str, Any] | None = None,
    failures: FailurePolicy | None = None,
) -> gym.vector.VectorEnv | list[MultiAgentEnv]:
    """A rollout worker's envs: a gymnasium VectorEnv of ``num_envs`` copies of a
    single-agent env (``make_vector_env``), or a list of ``num_envs`` copies of a
    multi-agent env (a ``MultiAgentEnv``; PettingZoo envs are wrapped as one).

    ``preprocessor_pref`` and ``atari_preprocessing`` (the config keys) apply to
    Atari ids only (``hpcrl.env.atari``).

    With ``failures`` that catch sub-env failures (``recreate_failed_envs``,
    ``env_step_timeout_s``), a single-agent env is a ``GuardedVectorEnv``, whose
    copies hpcrl calls and rebuilds one by one: ``"auto"`` then makes the copies one
    by one even where the env has a batched implementation (CartPole's vector entry
    point, ale-py's AtariVectorEnv), and ``"vector_entry_point"``, ``"async"`` or a
    creator returning a VectorEnv are errors (those step their copies together, and
    cannot rebuild one). Multi-agent copies are guarded by their sampler.
    """
    _check_counts(num_envs, vectorization_mode)
    creator = resolve_env_creator(env)
    guarded = failures if failures is not None and failures.guarded else None
    if isinstance(creator, str):
        if guarded is not None:
            return _guarded_gym_vector_env(
                creator,
                num_envs,
                dict(context),
                vectorization_mode,
                preprocessor_pref,
                atari_preprocessing,
                guarded,
            )
        return _make_gym_vector_env(
            creator,
            num_envs,
            dict(context),
            vectorization_mode,
            preprocessor_pref,
            atari_preprocessing,
        )
    first = creator(context)
    multi_agent = as_multi_agent_env(first)
    if multi_agent is None:
        return _vectorize(creator, first, num_envs, context, vectorization_mode, guarded)
    copies = [multi_agent]
    for index in range(1, num_envs):
        copies.append(as_multi_agent_env(creator(context.copy_with(vector_index=index))))
    return copies


def make_multi_agent_copy(env: str | EnvCreator, context: EnvContext, index: int) -> MultiAgentEnv:
    """Copy ``index`` of a multi-agent env, made as ``make_worker_envs`` makes it (to
    rebuild one that failed)."""
    creator = resolve_env_creator(env)
    made = as_multi_agent_env(creator(context.copy_with(vector_index=index)))
    if made is None:
        raise TypeError(f"the creator of the multi-agent env {env!r} returned a single-agent env")
    return made


def as_multi_agent_env(env: Any) -> MultiAgentEnv | None:
    """``env`` as a MultiAgentEnv (PettingZoo envs wrapped), or None for a gymnasium env."""
    if isinstance(env, MultiAgentEnv):
        return env
    from hpcrl.env.pettingzoo_env import is_pettingzoo_env, wrap_pettingzoo

    if is_pettingzoo_env(env):
        return wrap_pettingzoo(env)
    return None


def make_vector_env(
    env: str | EnvCreator,
    num_envs: int,
    context: EnvContext,
    vectorization_mode: str = "auto",
    *,
    preprocessor_pref: str | None = "deepmind",
    atari_preprocessing: dict[str, Any] | None = None,
) -> gym.vector.VectorEnv:
    """A gymnasium VectorEnv of ``num_envs`` copies of ``env``.

    ``vectorization_mode="auto"`` uses the env's own batched implementation
    (its ``vector_entry_point``) when it has one, else a ``SyncVectorEnv``;
    ``"async"`` runs each env in a subprocess. A creator that returns a
    VectorEnv is used as it is (its ``num_envs`` must match). Atari ids are made
    by ``hpcrl.env.atari.make_atari_vector_env`` with ``preprocessor_pref`` and
    ``atari_preprocessing``.
    """
    _check_counts(num_envs, vectorization_mode)
    creator = resolve_env_creator(env)
    if isinstance(creator, str):
        return _make_gym_vector_env(
            creator,
            num_envs,
            dict(context),
            vectorization_mode,
            preprocessor_pref,
            atari_preprocessing,
        )
    first = creator(context)
    if as_multi_agent_env(first) is not None:
        raise TypeError(
            f"the env creator returned {type(first).__name__}, a multi-agent env; a vector "
            "env needs a single-agent gymnasium Env (multi-agent envs run in a RolloutWorker)"
        )
    return _vectorize(creator, first, num_envs, context, vectorization_mode)


def _check_counts(num_envs: int, vectorization_mode: str) -> None:
    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"vectorization_mode={vectorization_mode!r}; expected one of {VECTORIZATION_MODES}"
        )
    if num_envs < 1:
        raise ValueError(f"num_envs_per_worker must be >= 1, got {num_envs}")


def _vectorize(
    creator: EnvCreator,
    first: Any,
    num_envs: int,
    context: EnvContext,
    vectorization_mode: str,
    guarded: FailurePolicy | None = None,
) -> gym.vector.VectorEnv:
    if isinstance(first, gym.vector.VectorEnv):
        if guarded is not None:
            raise ValueError(
                f"{_GUARD_KEYS} need copies that hpcrl calls one by one, but the env "
                f"creator returns a {type(first).__name__}, which steps its copies together; "
                "return a single gymnasium Env from the creator, or leave both keys unset"
            )
        if first.num_envs != num_envs:
            raise ValueError(
                f"the env creator returned a VectorEnv with {first.num_envs} envs but "
                f"num_envs_per_worker is {num_envs}; make them agree"
            )
        return first
    if not isinstance(first, gym.Env):
        raise TypeError(
            f"env creator returned {type(first).__name__}, expected a gymnasium Env or "
            "VectorEnv, a hpcrl.env.MultiAgentEnv or a PettingZoo env"
        )
    made = [first]

    def factory(index: int) -> Callable[[], gym.Env]:
        if index == 0:
            return lambda: made.pop() if made else creator(context)
        return lambda: creator(context.copy_with(vector_index=index))

    fns = [factory(i) for i in range(num_envs)]
    if guarded is not None:
        if vectorization_mode in ("vector_entry_point", "async"):
            first.close()
            _check_guarded_mode(vectorization_mode)  # raises, naming the fix
        return GuardedVectorEnv(fns, guarded)
    if vectorization_mode == "async":
        first.close()
        made.clear()
        return gym.vector.AsyncVectorEnv(fns)
    return gym.vector.SyncVectorEnv(fns)


def _make_gym_vector_env(
    env_id: str,
    num_envs: int,
    kwargs: dict[str, Any],
    mode: str,
    preprocessor_pref: str | None,
    atari_preprocessing: dict[str, Any] | None,
) -> gym.vector.VectorEnv:
    if is_atari_env_id(env_id):
        return make_atari_vector_env(
            env_id, num_envs, kwargs, mode, preprocessor_pref, atari_preprocessing
        )
    spec = gym.spec(env_id)
    if mode == "auto":
        mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
    if mode == "vector_entry_point" and spec.vector_entry_point is None:
        raise ValueError(f"env {env_id!r} has no vector_entry_point; use 'sync' or 'async'")
    return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode, **kwargs)


_GUARD_KEYS = "recreate_failed_envs and env_step_timeout_s"


def _check_guarded_mode(mode: str) -> None:
    why = {
        "vector_entry_point": "steps all copies in one call",
        "async": "(gymnasium's AsyncVectorEnv) cannot rebuild one of its subprocesses",
    }.get(mode)
    if why is not None:
        raise ValueError(
            f"{_GUARD_KEYS} need copies that hpcrl calls and rebuilds one by one, but "
            f"vectorization_mode={mode!r} {why}; use 'sync' or 'auto' (which then makes the "
            "copies one by one), or leave both keys unset"
        )


def _guarded_gym_vector_env(
    env_id: str,
    num_envs: int,
    kwargs: dict[str, Any],
    mode: str,
    preprocessor_pref: str | None,
    atari_preprocessing: dict[str, Any] | None,
    failures: FailurePolicy,
) -> GuardedVectorEnv:
    """``num_envs`` copies of a gymnasium id, each made by ``gym.make`` (Atari ids: by
    ``make_atari_env``, gymnasium's preprocessing wrappers) and guarded."""
    _check_guarded_mode(mode)
    if is_atari_env_id(env_id):
        make_one = functools.partial(
            make_atari_env, env_id, kwargs, preprocessor_pref, atari_preprocessing
        )
    else:
        make_one = functools.partial(gym.make, env_id, **kwargs)
    return GuardedVectorEnv([make_one] * num_envs, failures)
