"""The optimizer of the algorithms that learn by minibatch SGD on sampled batches."""

from __future__ import annotations

from typing import Any

from hpcrl.algorithms.trainer import make_sync_optimizer
from hpcrl.evaluation.postprocessing import Postprocessing
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.sync_samples_optimizer import SyncSamplesOptimizer


def make_sgd_optimizer(workers: WorkerSet, config: dict[str, Any]) -> SyncSamplesOptimizer:
    """``make_sync_optimizer`` with the algorithm's SGD keys: ``num_sgd_iter`` and
    ``sgd_minibatch_size`` (one whole-batch step where the algorithm has neither), and
    the advantages standardised per policy when ``standardize_advantages`` is set.

    PG, A2C, PPO and BC name it as their ``make_policy_optimizer``.
    """
    fields = (Postprocessing.ADVANTAGES,) if config.get("standardize_advantages") else ()
    return make_sync_optimizer(
        workers,
        config,
        num_sgd_iter=config.get("num_sgd_iter", 1),
        sgd_minibatch_size=config.get("sgd_minibatch_size", 0),
        standardize_fields=fields,
    )
