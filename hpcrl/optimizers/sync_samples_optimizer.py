"""SyncSamplesOptimizer: broadcast weights, all sample, gather, learn centrally."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.policy_optimizer import (
    PolicyOptimizer,
    collect_samples,
    do_minibatch_sgd,
    standardize_fields,
)
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID, SampleBatch


class SyncSamplesOptimizer(PolicyOptimizer):
    """Synchronous sampling, central learning (PG, A2C, simple PPO).

    Each ``step``: broadcast the local worker's weights; every remote worker
    samples a fragment (the local worker does when there are none), repeated
    until ``train_batch_size`` rows are in; concatenate; learn on the local
    worker with ``num_sgd_iter`` epochs of minibatches of
    ``sgd_minibatch_size`` rows (0: the whole batch at once).

    Args:
        workers: the WorkerSet.
        train_batch_size: minimum rows per step.
        num_sgd_iter: epochs over the batch.
        sgd_minibatch_size: rows per SGD step (0: the whole batch).
        standardize_fields: columns scaled to zero mean, unit variance before
            learning (e.g. ``("advantages",)``).
    """

    def __init__(
        self,
        workers: WorkerSet,
        train_batch_size: int = 1,
        num_sgd_iter: int = 1,
        sgd_minibatch_size: int = 0,
        standardize_fields: tuple[str, ...] | list[str] = (),
    ) -> None:
        super().__init__(workers)
        self.train_batch_size = train_batch_size
        self.num_sgd_iter = num_sgd_iter
        self.sgd_minibatch_size = sgd_minibatch_size
        self.standardize_fields = tuple(standardize_fields)
        self.learner_stats: dict[str, Any] = {}
        local = workers.local_worker()
        self._rng = np.random.default_rng(local.seed)

    def save(self) -> dict[str, Any]:
        """Counters, and the state of the minibatch-order generator."""
        return {**super().save(), "rng": self._rng.bit_generator.state}

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        if "rng" in data:
            self._rng.bit_generator.state = data["rng"]

    def step(self) -> dict[str, Any]:
        with self._timed("sync_weights"):
            self.workers.sync_weights()
        with self._timed("sample"):
            samples = collect_samples(self.workers, self.train_batch_size)
        with self._timed("learn"):
            standardize_fields(samples, self.standardize_fields)
            stats = self.learn_on_samples(samples)
        self.learner_stats = {DEFAULT_POLICY_ID: stats}
        self.num_steps_sampled += samples.count
        self.num_steps_trained += samples.count * self.num_sgd_iter
        return self.learner_stats

    def learn_on_samples(self, samples: SampleBatch) -> dict[str, Any]:
        """``num_sgd_iter`` epochs of minibatch SGD on the local worker's policy;
        returns its learner stats (``DataParallelOptimizer`` learns elsewhere)."""
        return do_minibatch_sgd(
            samples,
            self.workers.local_worker().get_policy(),
            self.num_sgd_iter,
            self.sgd_minibatch_size,
            self._rng,
        )

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "learner": self.learner_stats}
