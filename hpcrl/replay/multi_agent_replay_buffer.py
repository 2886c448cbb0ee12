"""One replay buffer per policy id, fed with SampleBatches or MultiAgentBatches."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from hpcrl.replay.replay_buffer import (
    PrioritizedReplayBuffer,
    ReplayBuffer,
    check_priority_parameters,
)
from hpcrl.replay.segment_tree import check_capacity


class MultiAgentReplayBuffer:
    """A ``ReplayBuffer`` (or ``PrioritizedReplayBuffer``) per policy id.

    A policy's buffer is created at the first batch of that policy, with
    ``capacity`` rows of its own. A plain SampleBatch belongs to
    ``DEFAULT_POLICY_ID``. Each policy's buffer has its own generator, seeded from
    ``seed`` and the policy id, so its samples do not depend on which other
    policies exist or in what order they appeared.

    Args:
        capacity: Most rows held per policy.
        prioritized: Prioritised (proportional) buffers instead of uniform ones.
        alpha: Prioritisation exponent (prioritised buffers only).
        eps: Added to every priority (prioritised buffers only).
        seed: Base seed (None: fresh entropy).

    Example:
        >>> buffer = MultiAgentReplayBuffer(capacity=100, seed=0)
        >>> rows = SampleBatch({"obs": np.zeros((5, 2), dtype=np.float32)})
        >>> buffer.add(MultiAgentBatch({"red": rows, "blue": rows[:2]}, env_steps=5))
        >>> buffer.num_rows("red"), buffer.num_rows("blue"), len(buffer)
        (5, 2, 7)
        >>> batch = buffer.sample(4)
        >>> batch.env_steps(), {pid: b.count for pid, b in batch.policy_batches.items()}
        (4, {'red': 4, 'blue': 4})
    """

    def __init__(
        self,
        capacity: int,
        prioritized: bool = False,
        alpha: float = 0.6,
        eps: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        self.capacity = check_capacity(capacity)
        self.prioritized = bool(prioritized)
        self.alpha, self.eps = check_priority_parameters(alpha, eps)
        self._seed = seed
        self.policy_buffers: dict[str, ReplayBuffer] = {}

    def _make_buffer(self, policy_id: str) -> ReplayBuffer:
        seed = None
        if self._seed is not None:
            key = np.random.SeedSequence([self._seed, zlib.crc32(policy_id.encode())])
            seed = int(key.generate_state(1, np.uint64)[0])
        if self.prioritized:
            return PrioritizedReplayBuffer(self.capacity, self.alpha, self.eps, seed)
        return ReplayBuffer(self.capacity, seed)

    def __len__(self) -> int:
        """Rows held over all policies."""
        return sum(len(buffer) for buffer in self.policy_buffers.values())

    def num_rows(self, policy_id: str = DEFAULT_POLICY_ID) -> int:
        """Rows held for ``policy_id`` (0 for a policy never added)."""
        buffer = self.policy_buffers.get(policy_id)
        return 0 if buffer is None else len(buffer)

    def add(
        self,
        batch: SampleBatch | MultiAgentBatch,
        priorities: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Add each policy's rows to that policy's buffer.

        ``priorities``: by policy id, one per row (e.g. ``|td_error|`` computed by
        the worker that sampled them, Ape-X); prioritised buffers only. A policy
        without an entry gets the buffer's maximum priority.
        """
        if priorities and not self.prioritized:
            raise ValueError(
                "priorities were given to uniform buffers; build the buffer with "
                "prioritized=True, or add without priorities"
            )
        if isinstance(batch, SampleBatch):
            policy_batches: Mapping[str, SampleBatch] = {DEFAULT_POLICY_ID: batch}
        elif isinstance(batch, MultiAgentBatch):
            policy_batches = batch.policy_batches
        else:
            raise TypeError(
                f"add() takes a SampleBatch or a MultiAgentBatch, got {type(batch).__name__}"
            )
        for policy_id, policy_batch in policy_batches.items():
            if policy_batch.count == 0:
                continue
            buffer = self.policy_buffers.get(policy_id)
            if buffer is None:
                buffer = self.policy_buffers[policy_id] = self._make_buffer(policy_id)
            if priorities and policy_id in priorities:
                buffer.add(policy_batch, priorities[policy_id])
            else:
                buffer.add(policy_batch)

    def sample(self, num_items: int, beta: float | None = None) -> MultiAgentBatch:
        """``num_items`` rows from each policy that has rows.

        Args:
            num_items: Rows per policy.
            beta: Importance-sampling exponent: required for prioritised buffers,
                not accepted for uniform ones.

        Returns:
            A MultiAgentBatch of ``num_items`` env steps; each policy's batch has
            ``batch_indexes`` (and ``weights`` when prioritised).
        """
        if self.prioritized and beta is None:
            raise ValueError("sample() of a prioritised buffer needs beta (e.g. beta=0.4)")
        if not self.prioritized and beta is not None:
            raise ValueError(
                f"beta={beta} was given to a uniform buffer; pass beta=None, or build the "
                "buffer with prioritized=True"
            )
        filled = {pid: buffer for pid, buffer in self.policy_buffers.items() if len(buffer)}
        if not filled:
            raise ValueError("cannot sample from an empty replay buffer; add rows first")
        if self.prioritized:
            batches = {pid: buffer.sample(num_items, beta) for pid, buffer in filled.items()}
        else:
            batches = {pid: buffer.sample(num_items) for pid, buffer in filled.items()}
        return MultiAgentBatch(batches, env_steps=num_items)

    def update_priorities(self, updates: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Set new priorities: ``{policy_id: (batch_indexes, priorities)}``.

        See ``PrioritizedReplayBuffer.update_priorities``.
        """
        if not self.prioritized:
            raise ValueError(
                "update_priorities() needs a prioritised buffer; build it with prioritized=True"
            )
        for policy_id, (indexes, priorities) in updates.items():
            buffer = self.policy_buffers.get(policy_id)
            if buffer is None:
                raise KeyError(
                    f"no replay buffer for policy {policy_id!r}; policies with rows: "
                    f"{sorted(self.policy_buffers)}"
                )
            buffer.update_priorities(indexes, priorities)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Each policy's buffer stats, by policy id."""
        return {pid: buffer.stats() for pid, buffer in self.policy_buffers.items()}

    def get_state(self) -> dict[str, Any]:
        """Each policy's ``get_state()``, by policy id (see ``ReplayBuffer.get_state``)."""
        return {
            "prioritized": self.prioritized,
            "policies": {pid: buffer.get_state() for pid, buffer in self.policy_buffers.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()``; policies absent from it are dropped."""
        if bool(state["prioritized"]) != self.prioritized:
            kind = "prioritised" if state["prioritized"] else "uniform"
            raise ValueError(
                f"the state is of {kind} buffers; build the buffer with "
                f"prioritized={bool(state['prioritized'])} to load it"
            )
        buffers = {}
        for policy_id, policy_state in state["policies"].items():
            buffers[policy_id] = self._make_buffer(policy_id)
            buffers[policy_id].set_state(policy_state)
        self.policy_buffers = buffers
