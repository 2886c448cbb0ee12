"""ReplayShard: one part of a distributed replay buffer, run as an actor (Ape-X)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch
from hpcrl.policy.schedules import PiecewiseSchedule
from hpcrl.replay.multi_agent_replay_buffer import MultiAgentReplayBuffer


class ReplayShard:
    """A ``MultiAgentReplayBuffer`` of ``capacity`` rows per policy, as an actor.

    The driver adds the batches routed to this shard (with the priorities their
    workers computed), asks for replayed train batches (``replay``, streamed),
    and sends back the priorities the learner found for them. Beta (the
    importance-sampling exponent) is annealed by the rows this shard has taken
    in times ``num_shards``: an estimate of all rows sampled.

    Args:
        capacity: rows per policy held by this shard.
        num_shards: shards in all (for beta's annealing).
        prioritized: prioritised (proportional) buffers instead of uniform ones.
        alpha, eps: the prioritised buffers' parameters.
        beta, final_beta, beta_annealing_timesteps: beta moves linearly from
            ``beta`` to ``final_beta`` over that many sampled steps.
        seed: base seed of the sampling generators.

    Example:
        >>> shard = ReplayShard(capacity=100, num_shards=1, seed=0)
        >>> shard.add(SampleBatch({"obs": np.zeros((8, 2), np.float32)}))
        8
        >>> batch = shard.replay(4)
        >>> batch.policy_batches["default_policy"].count
        4
    """

    def __init__(
        self,
        capacity: int,
        num_shards: int = 1,
        prioritized: bool = True,
        alpha: float = 0.6,
        eps: float = 1e-6,
        beta: float = 0.4,
        final_beta: float = 0.4,
        beta_annealing_timesteps: int = 20_000,
        seed: int | None = None,
    ) -> None:
        self.buffer = MultiAgentReplayBuffer(capacity, prioritized, alpha, eps, seed)
        self.num_shards = num_shards
        self.beta = PiecewiseSchedule([[0, beta], [max(1, beta_annealing_timesteps), final_beta]])
        self.rows_added = 0
        self.num_replayed = 0
        self.num_priority_updates = 0

    def add(
        self,
        batch: SampleBatch | MultiAgentBatch,
        priorities: Mapping[str, np.ndarray] | None = None,
    ) -> int:
        """Store the batch's rows (with their first priorities, if given); the rows
        this shard now holds over all policies."""
        self.buffer.add(batch, priorities if self.buffer.prioritized else None)
        self.rows_added += batch.count
        return len(self.buffer)

    def replay(self, train_batch_size: int) -> MultiAgentBatch | None:
        """``train_batch_size`` rows per policy drawn from this shard (None while it is
        empty), with ``batch_indexes`` (and ``weights`` when prioritised)."""
        if len(self.buffer) == 0:
            return None
        beta = None
        if self.buffer.prioritized:
            beta = self.beta.value(self.rows_added * self.num_shards)
        self.num_replayed += 1
        return self.buffer.sample(train_batch_size, beta=beta)

    def update_priorities(self, updates: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """New priorities of replayed rows: ``{policy_id: (batch_indexes, priorities)}``."""
        if self.buffer.prioritized:
            self.buffer.update_priorities(updates)
            self.num_priority_updates += 1

    def stats(self) -> dict[str, Any]:
        return {
            "rows": len(self.buffer),
            "rows_added": self.rows_added,
            "num_replayed": self.num_replayed,
            "num_priority_updates": self.num_priority_updates,
        }

    def save(self, path: str) -> str:
        """Write this shard (rows, ring positions, priorities, generators) to the HDF5
        file ``path``; returns it."""
        import h5py

        from hpcrl.io.hdf5_tree import write_tree

        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with h5py.File(path, "w") as f:
            write_tree(f, {"buffer": self.buffer.get_state(), "rows_added": self.rows_added})
        return path

    def load(self, path: str) -> int:
        """Read a shard written by ``save``; the rows it holds."""
        import h5py

        from hpcrl.io.hdf5_tree import read_tree

        with h5py.File(path, "r") as f:
            state = read_tree(f)
        self.buffer.set_state(state["buffer"])
        self.rows_added = int(state["rows_added"])
        return len(self.buffer)
