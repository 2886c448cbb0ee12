"""The ``multiagent`` config: which policies a worker holds and which agent uses which.

RLlib's shape::

    "multiagent": {
        "policies": {policy_id: (policy_cls or None, obs_space or None,
                                 act_space or None, config_overrides)},
        "policy_mapping_fn": fn(agent_id, episode, worker, **kwargs) -> policy_id,
        "policies_to_train": [policy_id, ...] or None (all),
        "count_steps_by": "env_steps" | "agent_steps",
    }

``policies`` may also be a list of ids (each a policy of the trainer's class
with the env's spaces). In YAML and on the command line a class or a
mapping function is a ``"module:name"`` string.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, NamedTuple

import gymnasium as gym

from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID

COUNT_STEPS_BY = ("env_steps", "agent_steps")

MULTIAGENT_DEFAULTS: dict[str, Any] = {
    "policies": {},
    "policy_mapping_fn": None,
    "policies_to_train": None,
    "count_steps_by": "env_steps",
}


class PolicySpec(NamedTuple):
    """One entry of ``config["multiagent"]["policies"]`` (None: decided for you)."""

    policy_class: type[Policy] | None = None
    observation_space: gym.Space | None = None
    action_space: gym.Space | None = None
    config: dict[str, Any] = {}


def default_policy_mapping_fn(agent_id: Any, episode: Any = None, worker: Any = None, **kw: Any):
    """Every agent to ``"default_policy"`` (the mapping when none is configured)."""
    return DEFAULT_POLICY_ID


def agent_id_as_policy_id(agent_id: Any, episode: Any = None, worker: Any = None, **kw: Any):
    """Each agent to the policy named like it (``str(agent_id)``): one policy per agent,
    e.g. ``"policy_mapping_fn": "hpcrl.evaluation.policy_specs:agent_id_as_policy_id"``
    with ``"policies": ["player_0", "player_1"]``."""
    return str(agent_id)


def check_multiagent_config(multiagent: Any) -> dict[str, Any]:
    """The ``multiagent`` config with defaults filled in, policies as ``PolicySpec``s and
    ``"module:name"`` strings imported.

    Raises:
        ValueError: an unknown key, a policy id that is not a string, a malformed
            policy entry, an unknown id in ``policies_to_train``, a bad ``count_steps_by``.

    Example:
        >>> spec = check_multiagent_config({"policies": {"p0": (None, None, None, {})}})
        >>> spec["policies"]["p0"].config, spec["count_steps_by"]
        ({}, 'env_steps')
    """
    if multiagent is None:
        multiagent = {}
    if not isinstance(multiagent, dict):
        raise ValueError(f"config['multiagent'] must be a dict, got {multiagent!r}")
    unknown = set(multiagent) - set(MULTIAGENT_DEFAULTS)
    if unknown:
        from hpcrl.algorithms.config import unknown_key_message

        raise ValueError(
            unknown_key_message("multiagent key", sorted(unknown)[0], MULTIAGENT_DEFAULTS)
        )
    merged = {**MULTIAGENT_DEFAULTS, **multiagent}
    merged["policies"] = _policy_specs(merged["policies"])
    valid = sorted(merged["policies"]) or [DEFAULT_POLICY_ID]
    to_train = merged["policies_to_train"]
    if to_train is not None:
        if isinstance(to_train, str) or not isinstance(to_train, (list, tuple, set)):
            raise ValueError(
                "multiagent policies_to_train must be a list of policy ids or None, got "
                f"{to_train!r}"
            )
        for pid in to_train:
            if pid not in valid:
                raise ValueError(
                    f"policies_to_train names {pid!r}, which is not a policy; valid ids are {valid}"
                )
        merged["policies_to_train"] = list(to_train)
    if merged["count_steps_by"] not in COUNT_STEPS_BY:
        raise ValueError(
            f"multiagent count_steps_by={merged['count_steps_by']!r}; expected one of "
            f"{COUNT_STEPS_BY}"
        )
    fn = merged["policy_mapping_fn"]
    if fn is not None:
        merged["policy_mapping_fn"] = (
            import_object(fn, "policy_mapping_fn") if isinstance(fn, str) else fn
        )
        if not callable(merged["policy_mapping_fn"]):
            raise ValueError(f"multiagent policy_mapping_fn must be callable, got {fn!r}")
    return merged


def _policy_specs(policies: Any) -> dict[str, PolicySpec]:
    if isinstance(policies, (list, tuple, set)):
        policies = {pid: PolicySpec() for pid in policies}
    if not isinstance(policies, dict):
        raise ValueError(
            f"multiagent policies must be a dict of policy id -> (class, obs_space, act_space, "
            f"config) or a list of ids, got {policies!r}"
        )
    specs = {}
    for pid, entry in policies.items():
        if not isinstance(pid, str):
            raise ValueError(
                f"policy id {pid!r} is a {type(pid).__name__}; policy ids must be strings "
                f"(e.g. {str(pid)!r})"
            )
        if entry is None:
            entry = PolicySpec()
        if not isinstance(entry, (tuple, list)) or len(entry) != 4:
            raise ValueError(
                f"multiagent policies[{pid!r}] must be (policy_cls or None, obs_space or None, "
                f"act_space or None, config dict), got {entry!r}"
            )
        cls, obs_space, act_space, overrides = entry
        if isinstance(cls, str):
            cls = import_object(cls, f"the class of policy {pid!r}")
        if cls is not None and not (isinstance(cls, type) and issubclass(cls, Policy)):
            raise ValueError(f"policy {pid!r}: {cls!r} is not a Policy subclass")
        for space in (obs_space, act_space):
            if space is not None and not isinstance(space, gym.Space):
                raise ValueError(
                    f"policy {pid!r}: spaces must be gymnasium spaces or None, got {space!r}"
                )
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError(
                f"policy {pid!r}: its config overrides must be a dict, got {overrides!r}"
            )
        specs[pid] = PolicySpec(cls, obs_space, act_space, dict(overrides or {}))
    return specs


def import_object(path: str, what: str) -> Any:
    """The object named by ``"module:name"`` (``"module.name"`` also works)."""
    module, sep, name = path.partition(":")
    if not sep:
        module, _, name = path.rpartition(".")
    if not module or not name:
        raise ValueError(f"{what} {path!r} must be written 'module:name'")
    try:
        target: Any = importlib.import_module(module)
    except Exception as err:  # an ImportError, or whatever the module raised
        from hpcrl.env.registry import import_error_message

        raise ValueError(import_error_message(module, f"{what} {path!r}", err)) from err
    for part in name.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module!r} has no {name!r} (for {what} {path!r})")
        target = getattr(target, part)
    return target


def resolve_policy_specs(
    policies: dict[str, PolicySpec],
    default_class: type[Policy],
    agent_spaces: Callable[[str], tuple[gym.Space, gym.Space] | None],
) -> dict[str, PolicySpec]:
    """Every spec with its class and spaces: None class -> ``default_class``; None
    spaces -> ``agent_spaces(policy_id)`` (the env's spaces of the agents mapped to it).

    Raises:
        ValueError: a policy whose spaces are neither given nor found in the env.
    """
    resolved = {}
    for pid, spec in policies.items():
        obs_space, act_space = spec.observation_space, spec.action_space
        if obs_space is None or act_space is None:
            found = agent_spaces(pid)
            if found is None:
                raise ValueError(
                    f"policy {pid!r} has no spaces and the env gives none for it (no agent of "
                    "the env maps to it): give its spaces in config['multiagent']['policies']"
                )
            obs_space = obs_space or found[0]
            act_space = act_space or found[1]
        resolved[pid] = PolicySpec(
            spec.policy_class or default_class, obs_space, act_space, spec.config
        )
    return resolved
