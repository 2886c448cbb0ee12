"""SyncReplayOptimizer: sample, add to a replay buffer, learn from replayed batches."""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcrl.evaluation.rollout_worker import count_steps
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer, collect_samples
from hpcrl.policy.loss_output import LEARNER_STATS_KEY
from hpcrl.policy.sample_batch import MultiAgentBatch
from hpcrl.policy.schedules import PiecewiseSchedule
from hpcrl.replay import BATCH_INDEXES, MultiAgentReplayBuffer

TD_ERROR = "td_error"


class ReplayPlan:
    """Pure bookkeeping of a replay ratio: how many train batches are due after each
    round of sampling, and when the target networks are due for an update.

    ``training_intensity`` (rows trained per row sampled) gives
    ``sampled * intensity / train_batch_size`` batches per round, the fraction
    carried over to the next round; None gives one batch per round (RLlib's
    ``train_batch_size`` per ``rollout_fragment_length``).

    Example:
        >>> plan = ReplayPlan(learning_starts=10, train_batch_size=4, training_intensity=2.0)
        >>> plan.batches_due(8, total_sampled=8), plan.batches_due(3, total_sampled=11)
        (0, 1)
        >>> plan.batches_due(3, total_sampled=14)
        2
    """

    def __init__(
        self,
        learning_starts: int,
        train_batch_size: int,
        training_intensity: float | None = None,
        target_network_update_freq: int = 0,
    ) -> None:
        if train_batch_size < 1:
            raise ValueError(f"train_batch_size must be >= 1, got {train_batch_size}")
        if training_intensity is not None and training_intensity <= 0:
            raise ValueError(
                f"training_intensity must be > 0 (rows trained per row sampled) or None, got "
                f"{training_intensity}"
            )
        self.learning_starts = learning_starts
        self.train_batch_size = train_batch_size
        self.training_intensity = training_intensity
        self.target_network_update_freq = target_network_update_freq
        self.owed = 0.0
        self.last_target_update = 0

    def batches_due(self, sampled: int, total_sampled: int) -> int:
        """Train batches to run after a round that sampled ``sampled`` steps, bringing
        the total to ``total_sampled``."""
        if total_sampled < self.learning_starts:
            return 0
        if self.training_intensity is None:
            return 1
        self.owed += sampled * self.training_intensity / self.train_batch_size
        due = int(self.owed)
        self.owed -= due
        return due

    def target_update_due(self, total_sampled: int) -> bool:
        """Whether ``target_network_update_freq`` steps passed since the last update
        (recorded as done when True is returned)."""
        if total_sampled - self.last_target_update < self.target_network_update_freq:
            return False
        self.last_target_update = total_sampled
        return True


class SyncReplayOptimizer(PolicyOptimizer):
    """Synchronous sampling into a replay buffer on the driver (DQN, SimpleQ, SAC, TD3).

    Each ``step``: broadcast the local worker's weights (when there are remote
    workers); every remote worker samples one fragment (the local worker does
    when there are none); the rows of every policy in ``policies_to_train`` go
    into that policy's buffer. From ``learning_starts`` steps on, train
    batches of ``train_batch_size`` rows are replayed (one per round, or as
    ``training_intensity`` asks), each learned on by its policy; with a
    prioritised buffer the loss's per-row ``td_error`` updates the
    priorities, and importance weights go to the loss as the ``weights``
    column. Every ``target_network_update_freq`` sampled steps, each trained
    policy's ``update_target()`` runs (``num_target_updates`` counts them).

    Args:
        workers: the WorkerSet.
        learning_starts: steps sampled before the first train batch.
        buffer_size: rows each policy's buffer holds.
        prioritized_replay: a prioritised buffer (Schaul et al. 2016) instead of
            a uniform one.
        prioritized_replay_alpha: how much priorities count (0: uniform).
        prioritized_replay_beta: importance-sampling exponent at the start...
        final_prioritized_replay_beta: ...and after the annealing steps.
        prioritized_replay_beta_annealing_timesteps: sampled steps over which
            beta moves linearly to its final value.
        prioritized_replay_eps: added to ``|td_error|`` for a priority (by the buffer).
        train_batch_size: rows per replayed batch.
        training_intensity: rows trained per row sampled (None: one batch per round).
        target_network_update_freq: sampled steps between target updates (0: every round).
        store_buffer_in_checkpoints: whether ``save()`` holds the buffers.
    """

    def __init__(
        self,
        workers: WorkerSet,
        learning_starts: int = 1000,
        buffer_size: int = 50_000,
        prioritized_replay: bool = False,
        prioritized_replay_alpha: float = 0.6,
        prioritized_replay_beta: float = 0.4,
        final_prioritized_replay_beta: float = 0.4,
        prioritized_replay_beta_annealing_timesteps: int = 20_000,
        prioritized_replay_eps: float = 1e-6,
        train_batch_size: int = 32,
        training_intensity: float | None = None,
        target_network_update_freq: int = 500,
        store_buffer_in_checkpoints: bool = True,
    ) -> None:
        super().__init__(workers)
        local = workers.local_worker()
        self.prioritized = prioritized_replay
        self.plan = ReplayPlan(
            learning_starts, train_batch_size, training_intensity, target_network_update_freq
        )
        self.beta = PiecewiseSchedule(
            [
                [0, prioritized_replay_beta],
                [
                    max(1, prioritized_replay_beta_annealing_timesteps),
                    final_prioritized_replay_beta,
                ],
            ]
        )
        self.buffer = MultiAgentReplayBuffer(
            buffer_size,
            prioritized=prioritized_replay,
            alpha=prioritized_replay_alpha,
            eps=prioritized_replay_eps,
            seed=local.seed,
        )
        self.store_buffer_in_checkpoints = store_buffer_in_checkpoints
        self.num_target_updates = 0
        self.learner_stats: dict[str, Any] = {}

    def step(self) -> dict[str, Any]:
        local = self.workers.local_worker()
        if self.workers.remote_workers():
            with self._timed("sync_weights"):
                self.workers.sync_weights()
        with self._timed("sample"):
            samples = collect_samples(self.workers, 1)
        sampled = count_steps(samples, local.count_steps_by)
        self.num_steps_sampled += sampled
        with self._timed("replay_add"):
            self.buffer.add(MultiAgentBatch(local.trainable_batches(samples), sampled))
        fetches: dict[str, Any] = {}
        for _ in range(self.plan.batches_due(sampled, self.num_steps_sampled)):
            fetches = self._learn_on_replay(local)
        if self.plan.target_update_due(self.num_steps_sampled):
            local.foreach_trainable_policy(update_target)
            self.num_target_updates += 1
        return fetches

    def _learn_on_replay(self, local: Any) -> dict[str, Any]:
        beta = self.beta.value(self.num_steps_sampled) if self.prioritized else None
        with self._timed("replay_sample"):
            replayed = self.buffer.sample(self.plan.train_batch_size, beta=beta)
        with self._timed("learn"):
            fetches = local.learn_on_batch(replayed)
        if self.prioritized:
            updates = {}
            for pid, result in fetches.items():
                if TD_ERROR not in result:
                    raise ValueError(
                        f"prioritised replay needs the loss of policy {pid!r} to return a "
                        f"per-row {TD_ERROR!r} (LossOutput.per_row); it returned "
                        f"{sorted(result)}"
                    )
                # The buffer adds prioritized_replay_eps to each |TD error| itself.
                priorities = np.abs(result[TD_ERROR])
                updates[pid] = (replayed.policy_batches[pid][BATCH_INDEXES], priorities)
            self.buffer.update_priorities(updates)
        self.learner_stats = {pid: r[LEARNER_STATS_KEY] for pid, r in fetches.items()}
        self.num_steps_trained += sum(b.count for b in replayed.policy_batches.values())
        return fetches

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "num_target_updates": self.num_target_updates,
            "replay_buffer_rows": {
                pid: self.buffer.num_rows(pid) for pid in self.buffer.policy_buffers
            },
            "learner": self.learner_stats,
        }

    def save(self) -> dict[str, Any]:
        """Counters, the replay plan and (with ``store_buffer_in_checkpoints``) the
        buffers: rows, ring positions, priority trees and sampling generators."""
        data = {
            **super().save(),
            "num_target_updates": self.num_target_updates,
            "replay_owed": self.plan.owed,
            "last_target_update": self.plan.last_target_update,
        }
        if self.store_buffer_in_checkpoints:
            data["buffer"] = self.buffer.get_state()
        return data

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        self.num_target_updates = int(data["num_target_updates"])
        self.plan.owed = float(data["replay_owed"])
        self.plan.last_target_update = int(data["last_target_update"])
        if "buffer" in data:
            self.buffer.set_state(data["buffer"])


def update_target(policy: Any, policy_id: str) -> None:
    """``foreach_trainable_policy`` function: the policy's target networks updated,
    if it has any."""
    update = getattr(policy, "update_target", None)
    if update is not None:
        update()
