"""build_torch_policy: a TorchPolicy subclass from plain functions."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from hpcrl.policy.torch_policy import TorchPolicy


def build_torch_policy(
    name: str,
    loss_fn: Callable[..., Any],
    *,
    get_default_config: Callable[[], dict[str, Any]] | None = None,
    stats_fn: Callable[..., dict[str, Any]] | None = None,
    postprocess_fn: Callable[..., Any] | None = None,
    extra_action_out_fn: Callable[..., dict[str, Any]] | None = None,
    extra_grad_process_fn: Callable[..., dict[str, Any]] | None = None,
    extra_learn_fetches_fn: Callable[..., dict[str, Any]] | None = None,
    optimizer_fn: Callable[..., Any] | None = None,
    make_model: Callable[..., Any] | None = None,
    action_sampler_fn: Callable[..., Any] | None = None,
    action_distribution_fn: Callable[..., Any] | None = None,
    before_init: Callable[..., None] | None = None,
    after_init: Callable[..., None] | None = None,
    before_loss_init: Callable[..., None] | None = None,
    mixins: Sequence[type] = (),
) -> type[TorchPolicy]:
    """Build a ``TorchPolicy`` subclass whose hooks are the given functions.

    Every function takes the policy as its first argument:

    - ``loss_fn(policy, model, dist_class, train_batch)``: a scalar tensor or a
      ``LossOutput`` (named terms reported as learner stats; per-row outputs,
      e.g. TD errors, returned beside them by ``learn_on_batch``).
    - ``stats_fn(policy, train_batch) -> dict``: more learner stats (added to the
      loss's named terms).
    - ``postprocess_fn(policy, sample_batch, other_agent_batches, episode)``.
    - ``extra_action_out_fn(policy, input_dict, state_batches, model, action_dist)
      -> dict`` of per-row tensors stored as batch columns.
    - ``extra_grad_process_fn(policy, optimizer, loss) -> dict``: after backward.
    - ``extra_learn_fetches_fn(policy) -> dict`` of per-row tensors after the loss
      (e.g. TD errors the loss kept on the policy), returned by ``learn_on_batch``
      like ``LossOutput.per_row``.
    - ``optimizer_fn(policy, config) -> torch optimizer``.
    - ``make_model(policy, obs_space, action_space, config) -> TorchModel``.
    - ``action_sampler_fn(policy, model, input_dict, state, explore, timestep)
      -> (actions, logp or None, state_out)``: replaces distribution sampling.
    - ``action_distribution_fn(policy, model, input_dict, state, seq_lens,
      explore, timestep) -> (dist_inputs, dist_class, state_out)``.
    - ``before_init``, ``after_init``, ``before_loss_init``:
      ``f(policy, obs_space, action_space, config)``.
    - ``get_default_config() -> dict``: defaults under the user's config.
    - ``mixins``: classes placed before ``TorchPolicy`` in the bases.

    The class has ``with_updates(**overrides)`` that builds it again with some
    arguments replaced.

    Example:
        >>> def pg_loss(policy, model, dist_class, batch):
        ...     logits, _ = model({"obs": batch["obs"]}, [], None)
        ...     logp = dist_class(logits, model).logp(batch["actions"])
        ...     return -(logp * batch["advantages"]).mean()
        >>> MyPG = build_torch_policy("MyPG", loss_fn=pg_loss)
        >>> Other = MyPG.with_updates(name="Other")
    """
    build_args = dict(locals())
    namespace: dict[str, Any] = {"__doc__": f"Torch policy {name!r} built by build_torch_policy."}

    def __init__(self, observation_space, action_space, config):  # noqa: N807
        if before_init is not None:
            before_init(self, observation_space, action_space, config)
        TorchPolicy.__init__(self, observation_space, action_space, config)
        if after_init is not None:
            after_init(self, self.observation_space, self.action_space, self.config)

    namespace["__init__"] = __init__
    namespace["loss"] = lambda self, model, dist_class, batch: loss_fn(
        self, model, dist_class, batch
    )
    if get_default_config is not None:
        namespace["get_default_config"] = classmethod(lambda cls: dict(get_default_config()))
    if stats_fn is not None:
        namespace["stats"] = lambda self, train_batch: stats_fn(self, train_batch)
    if postprocess_fn is not None:
        namespace["postprocess_trajectory"] = (
            lambda self, sample_batch, other_agent_batches=None, episode=None: postprocess_fn(
                self, sample_batch, other_agent_batches, episode
            )
        )
    if extra_action_out_fn is not None:
        namespace["extra_action_out"] = extra_action_out_fn
    if extra_grad_process_fn is not None:
        namespace["extra_grad_process"] = extra_grad_process_fn
    if extra_learn_fetches_fn is not None:
        namespace["extra_learn_fetches"] = lambda self: extra_learn_fetches_fn(self)
    if optimizer_fn is not None:
        namespace["optimizer"] = lambda self: optimizer_fn(self, self.config)
    if make_model is not None:
        namespace["make_model"] = lambda self: make_model(
            self, self.observation_space, self.action_space, self.config
        )
    if action_sampler_fn is not None:
        namespace["action_sampler_fn"] = action_sampler_fn
    if action_distribution_fn is not None:
        namespace["action_distribution_fn"] = action_distribution_fn
    if before_loss_init is not None:
        namespace["before_loss_init"] = lambda self: before_loss_init(
            self, self.observation_space, self.action_space, self.config
        )

    return make_built_class(name, (*mixins, TorchPolicy), namespace, build_torch_policy, build_args)


def make_built_class(
    name: str,
    bases: tuple[type, ...],
    namespace: dict[str, Any],
    build: Callable[..., type],
    build_args: dict[str, Any],
) -> type:
    """The class a ``build_*`` function returns: its ``with_updates(**changes)``
    builds it again with some of ``build_args`` changed, and it is named after the
    module that called ``build``, so it pickles by reference when bound there under
    the same name."""

    def with_updates(cls: type, **overrides: Any) -> type:
        unknown = set(overrides) - set(build_args)
        if unknown:
            raise TypeError(
                f"with_updates got unknown arguments {sorted(unknown)}; "
                f"valid ones are {sorted(build_args)}"
            )
        return build(**{**build_args, **overrides})

    namespace["with_updates"] = classmethod(with_updates)
    cls = type(name, bases, namespace)
    cls.__module__ = sys._getframe(2).f_globals.get("__name__", cls.__module__)
    cls.__qualname__ = name
    return cls
