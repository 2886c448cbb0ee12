"""build_trainer: a Trainer subclass from a policy, a config and hook functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hpcrl.algorithms.config import COMMON_CONFIG
from hpcrl.algorithms.trainer import Trainer
from hpcrl.policy.policy import Policy
from hpcrl.policy.policy_template import make_built_class


def build_trainer(
    name: str,
    default_policy: type[Policy],
    *,
    default_config: dict[str, Any] | None = None,
    get_policy_class: Callable[[dict[str, Any]], type[Policy] | None] | None = None,
    make_policy_optimizer: Callable[..., Any] | None = None,
    validate_config: Callable[[dict[str, Any]], None] | None = None,
    before_init: Callable[[Trainer], None] | None = None,
    after_init: Callable[[Trainer], None] | None = None,
    before_train_step: Callable[[Trainer], None] | None = None,
    after_optimizer_step: Callable[[Trainer, dict[str, Any]], None] | None = None,
    after_train_result: Callable[[Trainer, dict[str, Any]], None] | None = None,
    mixins: Sequence[type] = (),
) -> type[Trainer]:
    """Build a Trainer class.

    Args:
        name: the algorithm's name (shown in results and errors).
        default_policy: the Policy class its workers use.
        default_config: every config key the trainer accepts, with defaults
            (None: the common config, ``hpcrl.algorithms.config.COMMON_CONFIG``).
        get_policy_class: ``f(config)`` returning another policy class, or None
            for ``default_policy``.
        make_policy_optimizer: ``f(workers, config) -> PolicyOptimizer``
            (default: ``make_sync_optimizer(workers, config)``, one whole-batch
            step per ``train_batch_size`` steps, on data-parallel learners when
            ``num_learners > 1`` or ``num_gpus_per_learner > 0``).
        validate_config: ``f(config)``; raise ValueError for bad combinations.
        before_init, after_init, before_train_step: ``f(trainer)``.
        after_optimizer_step: ``f(trainer, fetches)`` after every optimizer step.
        after_train_result: ``f(trainer, result)``; may add keys to the result.
        mixins: classes placed before ``Trainer`` in the bases.

    The class has ``with_updates(**overrides)``, which builds it again with
    some of these arguments replaced.

    Example:
        >>> from hpcrl.algorithms.pg import PGTorchPolicy, DEFAULT_CONFIG
        >>> MyPG = build_trainer("MyPG", PGTorchPolicy, default_config=DEFAULT_CONFIG)
        >>> MyPG.with_updates(name="Other")._name
        'Other'
    """
    build_args = dict(locals())
    if default_config is None:
        default_config = COMMON_CONFIG
    namespace: dict[str, Any] = {
        "_name": name,
        "_default_config": default_config,
        "_policy": default_policy,
        "__doc__": f"The {name} algorithm. Config keys and defaults: ``{name}.DEFAULT_CONFIG``.",
    }
    if get_policy_class is not None:
        namespace["get_policy_class"] = lambda self, config: (
            get_policy_class(config) or default_policy
        )
    if make_policy_optimizer is not None:
        namespace["make_policy_optimizer"] = lambda self, workers, config: make_policy_optimizer(
            workers, config
        )
    if validate_config is not None:
        namespace["validate_config"] = lambda self, config: validate_config(config)
    for hook_name, hook in (
        ("before_init", before_init),
        ("after_init", after_init),
        ("before_train_step", before_train_step),
        ("after_optimizer_step", after_optimizer_step),
        ("after_train_result", after_train_result),
    ):
        if hook is not None:
            namespace[hook_name] = _as_method(hook)

    namespace["DEFAULT_CONFIG"] = default_config
    return make_built_class(name, (*mixins, Trainer), namespace, build_trainer, build_args)


def _as_method(hook: Callable[..., Any]) -> Callable[..., Any]:
    def method(self: Trainer, *args: Any) -> Any:
        return hook(self, *args)

    method.__name__ = getattr(hook, "__name__", "hook")
    return method
