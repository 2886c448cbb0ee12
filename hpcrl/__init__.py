"""hpcrl: reinforcement learning at HPC scale, with RLlib's abstractions and no Ray.

The public names are imported on first use, so ``import hpcrl`` is fast and
never imports torch, mpi4py or dask by itself.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Policy": "hpcrl.policy.policy",
    "TorchPolicy": "hpcrl.policy.torch_policy",
    "build_torch_policy": "hpcrl.policy.policy_template",
    "SampleBatch": "hpcrl.policy.sample_batch",
    "MultiAgentBatch": "hpcrl.policy.sample_batch",
    "concat_samples": "hpcrl.policy.sample_batch",
    "DEFAULT_POLICY_ID": "hpcrl.policy.sample_batch",
    "ModelCatalog": "hpcrl.models.catalog",
    "TorchModel": "hpcrl.models.torch_model",
    "register_env": "hpcrl.env.registry",
    "EnvContext": "hpcrl.env.registry",
    "MultiAgentEnv": "hpcrl.env.multi_agent_env",
    "make_multi_agent": "hpcrl.env.multi_agent_env",
    "PolicySpec": "hpcrl.evaluation.policy_specs",
    "LossOutput": "hpcrl.policy.loss_output",
    "RolloutWorker": "hpcrl.evaluation.rollout_worker",
    "WorkerSet": "hpcrl.evaluation.worker_set",
    "Postprocessing": "hpcrl.evaluation.postprocessing",
    "compute_advantages": "hpcrl.evaluation.postprocessing",
    "PolicyOptimizer": "hpcrl.optimizers.policy_optimizer",
    "SyncSamplesOptimizer": "hpcrl.optimizers.sync_samples_optimizer",
    "AsyncGradientsOptimizer": "hpcrl.optimizers.async_gradients_optimizer",
    "Trainer": "hpcrl.algorithms.trainer",
    "build_trainer": "hpcrl.algorithms.trainer_template",
    "with_common_config": "hpcrl.algorithms.config",
    "COMMON_CONFIG": "hpcrl.algorithms.config",
    "PGTrainer": "hpcrl.algorithms.pg",
    "A2CTrainer": "hpcrl.algorithms.a2c",
    "A3CTrainer": "hpcrl.algorithms.a3c",
    "PPOTrainer": "hpcrl.algorithms.ppo",
    "BCTrainer": "hpcrl.algorithms.bc",
    "get_trainer_class": "hpcrl.algorithms.registry",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
