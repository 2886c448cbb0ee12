"""A3C: asynchronous advantage actor-critic.

Mnih et al. 2016. The loss and postprocessing are A2C's (policy loss + value
loss - entropy bonus, GAE advantages); what differs is the communication:
every remote worker samples a fragment and computes gradients on it, and the
driver applies them as they arrive, sending fresh weights back to that worker
only (``AsyncGradientsOptimizer``).

Example:
    >>> from hpcrl.algorithms.a3c import A3CTrainer
    >>> with A3CTrainer({"grads_per_step": 10}, env="CartPole-v1") as trainer:
    ...     result = trainer.train()
    >>> result["timesteps_total"] >= 10 * 20 * 4, "staleness_max" in result["info"]
    (True, True)
"""

from __future__ import annotations

from typing import Any

from hpcrl.algorithms.a2c import DEFAULT_CONFIG as A2C_CONFIG
from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.algorithms.a2c import validate_config as validate_a2c_config
from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.learners.learner_group import uses_learner_group
from hpcrl.optimizers.async_gradients_optimizer import AsyncGradientsOptimizer

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        **A2C_CONFIG,
        # Remote workers computing gradients (at least 1: the driver only applies them).
        "num_workers": 2,
        "rollout_fragment_length": 20,
        "num_envs_per_worker": 4,
        "lr": 1e-3,
        # Gradients applied per optimizer step (one train() call runs at least one step).
        "grads_per_step": 100,
    }
)

A3CTorchPolicy = A2CTorchPolicy.with_updates(
    name="A3CTorchPolicy", get_default_config=lambda: DEFAULT_CONFIG
)


def validate_config(config: dict[str, Any]) -> None:
    validate_a2c_config(config)
    if config["num_workers"] is not None and config["num_workers"] < 1:
        raise ValueError(
            f"A3C needs num_workers >= 1 (gradients are computed on remote workers), "
            f"got num_workers={config['num_workers']}; set num_workers to 1 or more, "
            f"or use A2C to sample on the driver"
        )
    if uses_learner_group(config):
        raise ValueError(
            "A3C applies gradients on the driver as they arrive and has no data-parallel "
            f"learners; got num_learners={config['num_learners']}, num_gpus_per_learner="
            f"{config['num_gpus_per_learner']}: leave them at 1 and 0, or use A2C or PPO"
        )


def make_async_optimizer(workers: WorkerSet, config: dict[str, Any]) -> AsyncGradientsOptimizer:
    """AsyncGradientsOptimizer applying ``grads_per_step`` gradients per step."""
    return AsyncGradientsOptimizer(workers, grads_per_step=config["grads_per_step"])


A3CTrainer = build_trainer(
    "A3C",
    A3CTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_async_optimizer,
    validate_config=validate_config,
)
