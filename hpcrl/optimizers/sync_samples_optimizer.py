"""SyncSamplesOptimizer: broadcast weights, all sample, gather, learn centrally."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcrl.evaluation.rollout_worker import count_steps
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer, collect_samples
from hpcrl.policy.loss_output import LEARNER_STATS_KEY
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.sgd import minibatch_sgd, plan_minibatches, standardize_fields


class SyncSamplesOptimizer(PolicyOptimizer):
    """Synchronous sampling, central learning (PG, A2C, simple PPO).

    Each ``step``: broadcast the local worker's weights; every remote worker
    samples a fragment (the local worker does when there are none), repeated
    until ``train_batch_size`` steps are in; concatenate; learn each policy in
    ``policies_to_train`` on its rows, on the local worker, with
    ``num_sgd_iter`` epochs of minibatches of ``sgd_minibatch_size`` rows (0:
    the whole batch at once; ``hpcrl.policy.sgd.minibatch_sgd``).

    ``step()`` returns, per trained policy id, ``{"learner_stats": ...}`` and
    the loss's per-row outputs over that policy's rows.

    Args:
        workers: the WorkerSet.
        train_batch_size: minimum steps per step (env or agent steps, as
            ``count_steps_by`` in the ``multiagent`` config says).
        num_sgd_iter: epochs over the batch.
        sgd_minibatch_size: rows per SGD step (0: the whole batch).
        standardize_fields: columns scaled to zero mean, unit variance before
            learning (e.g. ``("advantages",)``), per policy.
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
        local = self.workers.local_worker()
        with self._timed("sync_weights"):
            self.workers.sync_weights()
        with self._timed("sample"):
            samples = collect_samples(self.workers, self.train_batch_size)
        with self._timed("learn"):
            batches = local.trainable_batches(samples)
            for batch in batches.values():
                standardize_fields(batch, self.standardize_fields)
            fetches = self.learn_on_samples(batches)
        self.learner_stats = {pid: f[LEARNER_STATS_KEY] for pid, f in fetches.items()}
        self.num_steps_sampled += count_steps(samples, local.count_steps_by)
        self.num_steps_trained += sum(b.count for b in batches.values()) * self.num_sgd_iter
        return fetches

    def learn_on_samples(self, batches: dict[str, SampleBatch]) -> dict[str, Any]:
        """``num_sgd_iter`` epochs of minibatch SGD on each of the local worker's
        policies, on its rows; returns ``minibatch_sgd``'s result per policy id
        (``DataParallelOptimizer`` learns elsewhere)."""
        local = self.workers.local_worker()
        fetches = {}
        for pid, batch in batches.items():
            policy = local.get_policy(pid)
            [epochs] = plan_minibatches(
                [batch.count],
                self.num_sgd_iter,
                self.sgd_minibatch_size,
                self._rng,
                policy.sequence_lengths(batch),
            )
            fetches[pid] = minibatch_sgd(policy, batch, epochs)
        return fetches

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "learner": self.learner_stats}
