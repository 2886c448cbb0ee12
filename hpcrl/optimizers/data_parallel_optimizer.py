"""DataParallelOptimizer: gather samples, learn on K data-parallel learners, broadcast weights."""

from __future__ import annotations

from typing import Any

from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.learners.learner_group import LearnerGroup, trained_policy_specs
from hpcrl.optimizers.sync_samples_optimizer import SyncSamplesOptimizer
from hpcrl.policy.sample_batch import SampleBatch


class DataParallelOptimizer(SyncSamplesOptimizer):
    """Synchronous sampling, data-parallel learning (``num_learners > 1`` or GPUs).

    Each ``step`` is ``SyncSamplesOptimizer``'s (broadcast weights to the
    rollout workers, gather ``train_batch_size`` rows, standardise the named
    columns once over the whole batch, before it is split) with the learning
    done by a ``LearnerGroup``: the learners get the driver policy's state
    (weights, ``kl_coeff``, learning rate), one contiguous shard of the batch
    each, and run ``num_sgd_iter`` epochs of minibatch SGD with one gradient
    all-reduce per minibatch (the driver's ``minibatch_sgd``, on a shard); the
    new weights come back from learner 0. Every policy in ``policies_to_train``
    has its copy on every learner. The
    driver's policy is the one the trainer adapts (``after_optimizer_step``)
    and checkpoints; each learner keeps its own optimizer state, identical on
    all of them, which ``save``/``restore`` carry in the checkpoint.

    Args:
        workers: the WorkerSet; its backend also runs the learners.
        train_batch_size: minimum rows per step.
        num_sgd_iter: epochs over the batch.
        sgd_minibatch_size: rows per global SGD minibatch, split across the learners
            (0: the whole batch).
        standardize_fields: columns scaled to zero mean, unit variance before learning.
        num_learners: learners in the group.
        num_gpus_per_learner: 0 (CPU) or 1.
        learner_backend: "auto" (NCCL when every learner has a GPU, else gloo),
            "nccl" or "gloo".
        learner_timeout_s: seconds a learner waits for the others before failing.

    Example:
        >>> from hpcrl.algorithms.ppo import PPOTorchPolicy
        >>> opt = DataParallelOptimizer.make(
        ...     "CartPole-v1", PPOTorchPolicy, worker_config={"rollout_fragment_length": 64},
        ...     train_batch_size=64, sgd_minibatch_size=32, num_learners=1)
        >>> "kl" in opt.step()["default_policy"]["learner_stats"]
        True
        >>> opt.stop()
        >>> opt.workers.stop()
    """

    def __init__(
        self,
        workers: WorkerSet,
        train_batch_size: int = 1,
        num_sgd_iter: int = 1,
        sgd_minibatch_size: int = 0,
        standardize_fields: tuple[str, ...] | list[str] = (),
        num_learners: int = 2,
        num_gpus_per_learner: int = 0,
        learner_backend: str = "auto",
        learner_timeout_s: float = 300.0,
    ) -> None:
        super().__init__(
            workers, train_batch_size, num_sgd_iter, sgd_minibatch_size, standardize_fields
        )
        self.learners = LearnerGroup(
            self.backend,
            trained_policy_specs(workers.local_worker()),
            num_learners=num_learners,
            num_gpus_per_learner=num_gpus_per_learner,
            learner_backend=learner_backend,
            timeout_s=learner_timeout_s,
        )

    def learn_on_samples(self, batches: dict[str, SampleBatch]) -> dict[str, Any]:
        local = self.workers.local_worker()
        # The learners keep their own optimizer state.
        self.learners.set_policy_state(
            {pid: local.get_policy(pid).get_state(include_optimizer=False) for pid in batches}
        )
        fetches = self.learners.learn(
            batches,
            self.num_sgd_iter,
            self.sgd_minibatch_size,
            self._rng,
            {pid: local.get_policy(pid).sequence_lengths(b) for pid, b in batches.items()},
        )
        for pid, weights in self.learners.get_weights().items():
            if pid in batches:
                local.get_policy(pid).set_weights(weights)
        self.timers["learner_sgd"] += self.learners.timings["sgd_s"]
        self.timers["learner_allreduce"] += self.learners.timings["allreduce_s"]
        return fetches

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "num_learners": self.learners.num_learners,
            "learner_backend": self.learners.process_group_backend,
        }

    def save(self) -> dict[str, Any]:
        """Counters, minibatch-order generator, and the learners' optimizer state
        (the driver's policy, which checkpoints hold, does not learn)."""
        data = super().save()
        data["learner_optimizer_state"] = self.learners.call("get_optimizer_state", first=True)[0]
        return data

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        if "learner_optimizer_state" in data:
            self.learners.call("set_optimizer_state", data["learner_optimizer_state"])

    def stop(self) -> None:
        self.learners.stop()
