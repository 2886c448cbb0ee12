"""Env state snapshots, so that a restored run continues its episodes exactly.

``snapshot_env(env)`` walks a (vector) env: the vector env, its wrappers and
its sub-envs (``env`` and ``envs`` attributes). From each it records the
instance attributes that are numpy arrays, Python scalars, strings, lists,
tuples, dicts and deques of those, and random generators
(``np.random.Generator`` bit-generator states, ``np.random.RandomState``).
It skips what cannot change while stepping (spaces, ``spec``, callables,
classes, enums, and the ``env_fns`` a vector env was built from).
``restore_env(env, snapshot)`` writes them back into a freshly made env of
the same construction.

An object may instead define both ``get_state()`` (returning such a tree)
and ``set_state(state)``; its own methods are then used for it and what is
below it.

The snapshot is exact when everything that holds state is of those kinds:
gymnasium's classic-control and toy-text envs, their batched
``vector_entry_point`` versions, ``SyncVectorEnv`` and the standard
wrappers (``TimeLimit``, ``OrderEnforcing``, ``PassiveEnvChecker``,
``RecordEpisodeStatistics``...), and ``MultiAgentEnv``s built of those
(``make_multi_agent``). An env holding anything else (an
``AsyncVectorEnv``'s subprocess pipes, a physics engine's world object, a
renderer's window) is not snapshotted: ``snapshot_env`` says which attribute
stopped it, and a restored worker starts fresh episodes there.
"""

from __future__ import annotations

import enum
import functools
import types
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

_ENV = "__env__"
_ENVS = "__envs__"
_OWN = "__own_state__"
_GENERATOR = "__generator__"
_RANDOM_STATE = "__random_state__"
_DEQUE = "__deque__"
_ARRAY_KINDS = "biufUS"
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")
# A vector env's ``env_fns``, what built its copies: input to its construction, not
# stepping state (gymnasium 1.2's ``make_vec`` keeps a spent generator there, 1.4 a list).
_BUILT_FROM_ENV_FNS = (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)
_CONSTANT_TYPES = (
    gym.Space,
    gym.envs.registration.EnvSpec,
    type,
    enum.Enum,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    functools.partial,
)


class _NotRecordable(Exception):
    """An attribute holds something the snapshot cannot store."""


def snapshot_env(env: Any) -> dict[str, Any]:
    """``{"exact": True, "state": tree}``, or ``{"exact": False, "reason": why}``.

    Example:
        >>> env = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
        >>> _ = env.reset(seed=0)
        >>> snapshot = snapshot_env(env)
        >>> after = env.step(np.array([0, 1]))[0]
        >>> again = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")
        >>> restore_env(again, snapshot)
        True
        >>> bool(np.array_equal(again.step(np.array([0, 1]))[0], after))
        True
    """
    try:
        return {"exact": True, "state": _capture(env, type(env).__name__)}
    except _NotRecordable as err:
        return {"exact": False, "reason": str(err)}


def restore_env(env: Any, snapshot: dict[str, Any]) -> bool:
    """Put a snapshot's state into ``env``; False (``env`` unchanged) when the
    snapshot is not exact or ``env`` is not built like the snapshotted one."""
    if not snapshot.get("exact"):
        return False
    try:
        current = _capture(env, type(env).__name__)
    except _NotRecordable:
        return False
    if _shape_of(current) != _shape_of(snapshot["state"]):
        return False
    _restore(env, snapshot["state"])
    return True


def _is_env(value: Any) -> bool:
    from hpcrl.env.multi_agent_env import MultiAgentEnv

    return isinstance(value, (gym.Env, gym.vector.VectorEnv, MultiAgentEnv))


def _has_own_state(obj: Any) -> bool:
    return callable(getattr(obj, "get_state", None)) and callable(getattr(obj, "set_state", None))


def _capture(obj: Any, where: str) -> dict[str, Any]:
    if _has_own_state(obj):
        return {_OWN: obj.get_state()}
    state: dict[str, Any] = {}
    skip_env_fns = isinstance(obj, _BUILT_FROM_ENV_FNS)
    for name, value in vars(obj).items():
        path = f"{where}.{name}"
        if skip_env_fns and name == "env_fns":
            continue
        if _is_env(value):
            state[name] = {_ENV: _capture(value, path)}
        elif isinstance(value, (list, tuple)) and value and all(_is_env(v) for v in value):
            state[name] = {_ENVS: [_capture(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        elif not _is_constant(value):
            state[name] = _value(value, path)
    return state


def _is_constant(value: Any) -> bool:
    """Things stepping does not change: spaces, the spec, functions, classes, enums."""
    if isinstance(value, (list, tuple)) and value and all(_is_constant(v) for v in value):
        return True
    return isinstance(value, _CONSTANT_TYPES)


def _value(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str, np.generic)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in _ARRAY_KINDS:
            raise _NotRecordable(f"{path} is an array of dtype {value.dtype}")
        return value.copy()
    if isinstance(value, np.random.Generator):
        return {_GENERATOR: value.bit_generator.state}
    if isinstance(value, np.random.RandomState):
        return {_RANDOM_STATE: list(value.get_state())}
    if isinstance(value, deque):
        return {
            _DEQUE: [_value(v, f"{path}[{i}]") for i, v in enumerate(value)],
            "maxlen": value.maxlen,
        }
    if type(value) in (list, tuple):
        return type(value)(_value(v, f"{path}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict) and all(_is_key(k) for k in value):
        # Constant entries (an enum in ``metadata``) stay out; restoring updates the
        # dict in place, so they are kept.
        return {k: _value(v, f"{path}[{k!r}]") for k, v in value.items() if not _is_constant(v)}
    raise _NotRecordable(f"{path} holds a {type(value).__module__}.{type(value).__qualname__}")


def _is_key(key: Any) -> bool:
    if isinstance(key, str):
        return bool(key) and "/" not in key and key != "."
    return isinstance(key, int) and not isinstance(key, bool)


def _shape_of(state: Any) -> Any:
    """The structure of a snapshot (names and nesting of envs), for compatibility."""
    if isinstance(state, dict):
        if _ENVS in state:
            return (_ENVS, tuple(_shape_of(s) for s in state[_ENVS]))
        if _ENV in state:
            return (_ENV, _shape_of(state[_ENV]))
        return tuple(sorted((k, _shape_of(v)) for k, v in state.items() if _holds_env(v)))
    return None


def _holds_env(value: Any) -> bool:
    return isinstance(value, dict) and (_ENV in value or _ENVS in value)


def _restore(obj: Any, state: dict[str, Any]) -> None:
    if _OWN in state:
        obj.set_state(state[_OWN])
        return
    attributes = vars(obj)
    for name, saved in state.items():
        if name not in attributes:  # only attributes the object has: nothing new is set
            continue
        current = attributes[name]
        if isinstance(saved, dict) and _ENV in saved:
            _restore(current, saved[_ENV])
        elif isinstance(saved, dict) and _ENVS in saved:
            for env, env_state in zip(current, saved[_ENVS]):
                _restore(env, env_state)
        else:
            setattr(obj, name, _rebuild(saved, current))


def _rebuild(saved: Any, current: Any) -> Any:
    if isinstance(saved, dict) and _GENERATOR in saved:
        state = saved[_GENERATOR]
        if state["bit_generator"] not in _BIT_GENERATORS:
            raise ValueError(f"unknown bit generator {state['bit_generator']!r} in an env snapshot")
        if not (
            isinstance(current, np.random.Generator)
            and current.bit_generator.state["bit_generator"] == state["bit_generator"]
        ):
            current = np.random.Generator(getattr(np.random, state["bit_generator"])())
        current.bit_generator.state = state
        return current
    if isinstance(saved, dict) and _RANDOM_STATE in saved:
        current = current if isinstance(current, np.random.RandomState) else np.random.RandomState()
        current.set_state(tuple(saved[_RANDOM_STATE]))
        return current
    if isinstance(saved, dict) and _DEQUE in saved:
        return deque((_rebuild(v, None) for v in saved[_DEQUE]), maxlen=saved["maxlen"])
    if isinstance(saved, np.ndarray):
        if (
            isinstance(current, np.ndarray)
            and current.shape == saved.shape
            and current.dtype == saved.dtype
        ):
            current[...] = saved  # in place: other objects may hold the same array
            return current
        return saved
    if isinstance(saved, (list, tuple)):
        return type(saved)(_rebuild(v, None) for v in saved)
    if isinstance(saved, dict):
        target = current if isinstance(current, dict) else {}
        for key, value in saved.items():
            target[key] = _rebuild(value, target.get(key))
        return target
    return saved
