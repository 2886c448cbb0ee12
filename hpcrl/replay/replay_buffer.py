"""Replay buffers: a ring of preallocated numpy columns, sampled uniformly or by priority.

A buffer stores the numeric columns of the SampleBatches added to it (bool, int,
uint, float: ``uint8`` frames stay ``uint8``). Columns of other dtypes, such as
``infos`` (one dict per row), are not stored, and neither is ``seq_lens``:
``sample()`` returns the stored columns only. Each column is one ``np.empty``
array of ``capacity`` rows, allocated at the first ``add`` from that batch's
dtypes and row shapes; later batches must have the same columns.

Rows go into the ring in order and overwrite the oldest once it is full, as if
added one at a time: a batch larger than the capacity leaves its newest
``capacity`` rows.

A sampled batch holds copies of the rows. When it is large (1 MiB or more, such
as 512 Atari frames) its columns are views of one allocation, which is freed
with the last of them.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.replay.segment_tree import MinSegmentTree, SumSegmentTree, check_capacity

logger = logging.getLogger("hpcrl.replay")

BATCH_INDEXES = "batch_indexes"
"""Column that ``sample()`` adds: the ring position of each sampled row (int64).
Pass it back to ``update_priorities``."""

WEIGHTS = "weights"
"""Column that ``PrioritizedReplayBuffer.sample()`` adds: importance weights (float32)."""

# numpy kinds a buffer stores: bool, signed and unsigned int, float.
_STORED_KINDS = "biuf"
_RESERVED = (BATCH_INDEXES, WEIGHTS)
# Samples of at least this many bytes are gathered into one allocation.
_ONE_BLOCK_BYTES = 1 << 20


def _aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of 64 (a cache line)."""
    return -(-nbytes // 64) * 64


def check_priority_parameters(alpha: float, eps: float) -> tuple[float, float]:
    """``(alpha, eps)`` as floats, or an error that names the wrong one."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(
            f"eps must be a finite number > 0 (it keeps rows whose TD error is 0 "
            f"sampleable), got {eps}"
        )
    return float(alpha), float(eps)


class ReplayBuffer:
    """A ring of numpy columns sampled uniformly with replacement.

    Args:
        capacity: Most rows held; the oldest are overwritten first.
        seed: Seed of the buffer's own ``np.random.Generator`` (None: fresh entropy).

    Attributes:
        capacity: Most rows held.
        num_added: Rows ever added (including those since overwritten).
        num_sampled: Rows ever returned by ``sample``.

    Example:
        >>> buffer = ReplayBuffer(capacity=4, seed=0)
        >>> buffer.add(SampleBatch({"obs": np.arange(6, dtype=np.float32), "actions": np.zeros(6)}))
        >>> len(buffer), buffer.num_added
        (4, 6)
        >>> batch = buffer.sample(3)
        >>> sorted(batch.keys()), batch["obs"].dtype
        (['actions', 'batch_indexes', 'obs'], dtype('float32'))
        >>> bool(np.all(batch["obs"] >= 2))  # rows 0 and 1 were overwritten
        True
    """

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        self.capacity = check_capacity(capacity)
        self.num_added = 0
        self.num_sampled = 0
        self._columns: dict[str, np.ndarray] = {}
        self._next_index = 0
        self._size = 0
        self._rng = np.random.default_rng(seed)
        self._dropped: frozenset[str] = frozenset()
        self._row_bytes = 0

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        """Bytes held by the buffer's arrays (0 before the first ``add``)."""
        return sum(column.nbytes for column in self._columns.values())

    # -- adding ----------------------------------------------------------
    def add(self, batch: SampleBatch) -> None:
        """Append the rows of ``batch`` (its numeric columns), overwriting the oldest.

        Raises:
            ValueError: The batch's stored columns, row shapes or dtypes differ from
                those of the first batch added.
        """
        self._write(batch)

    def _write(self, batch: SampleBatch) -> np.ndarray:
        """Store the batch's rows; the ring positions of its last ``len(positions)``
        rows (all of them unless the batch is larger than the capacity)."""
        columns = self._stored_columns(batch)
        count = batch.count
        if count == 0:
            return np.empty(0, dtype=np.int64)
        if self._columns:
            self._check_columns(columns)
        else:
            self._allocate(columns)
        skip = max(0, count - self.capacity)
        start = (self._next_index + skip) % self.capacity
        kept = count - skip
        first = min(kept, self.capacity - start)
        for name, column in self._columns.items():
            rows = columns[name][skip:]
            column[start : start + first] = rows[:first]
            if first < kept:
                column[: kept - first] = rows[first:]
        self._next_index = (start + kept) % self.capacity
        self._size = min(self._size + count, self.capacity)
        self.num_added += count
        return (start + np.arange(kept, dtype=np.int64)) % self.capacity

    def _stored_columns(self, batch: SampleBatch) -> dict[str, np.ndarray]:
        if not isinstance(batch, SampleBatch):
            hint = (
                "; use MultiAgentReplayBuffer for a MultiAgentBatch"
                if hasattr(batch, "policy_batches")
                else ""
            )
            raise TypeError(f"add() takes a SampleBatch, got {type(batch).__name__}{hint}")
        reserved = [name for name in _RESERVED if name in batch]
        if reserved:
            raise ValueError(
                f"column(s) {reserved} are added by sample(); drop them from a batch before "
                "adding its rows back"
            )
        columns, dropped = {}, []
        for name, value in batch.items():
            if name != SampleBatch.SEQ_LENS and value.dtype.kind in _STORED_KINDS:
                columns[name] = value
            else:
                dropped.append(name)
        if not columns and batch.count > 0:
            raise ValueError(
                f"the batch has no numeric column to store (columns: {sorted(batch.keys())})"
            )
        if dropped and frozenset(dropped) != self._dropped:
            self._dropped = frozenset(dropped)
            logger.debug("replay buffer does not store columns %s", sorted(dropped))
        return columns

    def _allocate(self, columns: dict[str, np.ndarray]) -> None:
        self._columns = {
            name: np.empty((self.capacity, *value.shape[1:]), dtype=value.dtype)
            for name, value in columns.items()
        }
        self._row_bytes = sum(column[0].nbytes for column in self._columns.values())

    def _check_columns(self, columns: dict[str, np.ndarray]) -> None:
        if columns.keys() != self._columns.keys():
            missing = sorted(self._columns.keys() - columns.keys())
            unexpected = sorted(columns.keys() - self._columns.keys())
            raise ValueError(
                f"batch columns differ from the buffer's: missing {missing}, unexpected "
                f"{unexpected}; every batch added to a buffer must have the columns of the "
                f"first one, {sorted(self._columns)} (columns of object dtype such as "
                "infos are not stored and may differ)"
            )
        for name, value in columns.items():
            column = self._columns[name]
            if value.shape[1:] != column.shape[1:]:
                raise ValueError(
                    f"column {name!r} has rows of shape {value.shape[1:]} but the buffer "
                    f"stores rows of shape {column.shape[1:]}"
                )
            if not np.can_cast(value.dtype, column.dtype, casting="same_kind"):
                raise ValueError(
                    f"column {name!r} has dtype {value.dtype} but the buffer stores "
                    f"{column.dtype}; convert it (astype) before adding"
                )

    # -- sampling --------------------------------------------------------
    def sample(self, num_items: int) -> SampleBatch:
        """``num_items`` rows drawn uniformly with replacement.

        Returns:
            A SampleBatch of copies of the stored columns plus ``batch_indexes``
            (int64 ring positions).
        """
        self._check_can_sample(num_items)
        indexes = self._rng.integers(0, self._size, size=num_items, dtype=np.int64)
        return self._gather(indexes)

    def _check_can_sample(self, num_items: int) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, (int, np.integer)):
            raise TypeError(f"num_items must be an int, got {num_items!r}")
        if num_items < 1:
            raise ValueError(f"num_items must be at least 1, got {num_items}")
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer; add rows first")

    def _gather(self, indexes: np.ndarray) -> SampleBatch:
        count = len(indexes)
        if count * self._row_bytes < _ONE_BLOCK_BYTES:
            columns = {name: column.take(indexes, axis=0) for name, column in self._columns.items()}
        else:
            columns = self._gather_into_one_block(indexes)
        columns[BATCH_INDEXES] = indexes
        self.num_sampled += count
        return SampleBatch(columns)

    def _gather_into_one_block(self, indexes: np.ndarray) -> dict[str, np.ndarray]:
        """The sampled rows of every column, as views of one new allocation.

        glibc's malloc gives large arrays back to the system when several are freed
        together, so a batch of many large columns would come back as fresh pages,
        which the kernel zeroes at first touch (for 84x84x4 frames, that doubles
        the time of a sample). One block per batch is reused from the heap instead.
        """
        count = len(indexes)
        sizes = {name: count * column[0].nbytes for name, column in self._columns.items()}
        block = np.empty(sum(_aligned(size) for size in sizes.values()), dtype=np.uint8)
        columns, offset = {}, 0
        for name, column in self._columns.items():
            out = block[offset : offset + sizes[name]].view(column.dtype)
            out = out.reshape((count, *column.shape[1:]))
            # mode="clip" copies straight into ``out`` (mode="raise" buffers the copy);
            # the indexes are in range, so nothing is clipped.
            np.take(column, indexes, axis=0, out=out, mode="clip")
            columns[name] = out
            offset += _aligned(sizes[name])
        return columns

    # -- state -----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Size and counters, for learner stats and logs."""
        return {
            "size": self._size,
            "capacity": self.capacity,
            "num_added": self.num_added,
            "num_sampled": self.num_sampled,
            "nbytes": self.nbytes,
        }

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the filled rows of every column
        (views of the buffer's arrays, not copies), the write position, counters and
        the generator state. Plain values and numpy arrays only, for
        ``hpcrl.io.hdf5_tree.write_tree``."""
        return {
            "capacity": self.capacity,
            "size": self._size,
            "next_index": self._next_index,
            "num_added": self.num_added,
            "num_sampled": self.num_sampled,
            "rng": self._rng.bit_generator.state,
            "columns": {name: column[: self._size] for name, column in self._columns.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore ``get_state()``: later adds and samples are those of the saved buffer."""
        capacity = int(state["capacity"])
        if capacity != self.capacity:
            raise ValueError(
                f"the state is of a buffer of capacity {capacity}, this one has "
                f"{self.capacity}; build the buffer with capacity={capacity} to load it"
            )
        size, next_index = int(state["size"]), int(state["next_index"])
        columns = {name: np.asarray(value) for name, value in state["columns"].items()}
        lengths = {name: len(value) for name, value in columns.items()}
        if not 0 <= next_index < capacity or any(n != size for n in lengths.values()):
            raise ValueError(
                f"inconsistent replay state: size {size}, next_index {next_index}, "
                f"capacity {capacity}, column lengths {lengths}"
            )
        self._columns = {}
        if columns:
            self._allocate(columns)
            for name, value in columns.items():
                self._columns[name][:size] = value
        self._size, self._next_index = size, next_index
        self.num_added = int(state["num_added"])
        self.num_sampled = int(state["num_sampled"])
        self._rng.bit_generator.state = state["rng"]


class PrioritizedReplayBuffer(ReplayBuffer):
    """Proportional prioritised replay (Schaul et al. 2016, arXiv:1511.05952).

    Row ``i`` is sampled with probability ``P(i) = p_i ** alpha / sum_k p_k ** alpha``,
    where ``p_i = priority + eps``. New rows get the largest priority seen so far
    (1.0 at the start), so each is likely to be replayed at least once.

    Sampling is stratified, as in the paper's appendix B.2.1: ``[0, total)`` is cut
    into ``num_items`` equal ranges and one row is drawn from each, which lowers the
    variance of the batch against plain proportional draws while each range keeps
    its proportional law (a row's expected count per batch is
    ``num_items * P(i)``). The ranges are visited in a random order, so the rows of
    a batch are not sorted by ring position and any slice of it is a fair sample.

    Importance weights are ``w_i = (N * P(i)) ** -beta / max_j (N * P(j)) ** -beta``
    with ``N = len(buffer)``; the maximum is taken over every stored row (the
    smallest ``P(j)``, from a min segment tree), as in the paper and RLlib, so
    weights are at most 1.

    Args:
        capacity: Most rows held.
        alpha: How much prioritisation is used (0: uniform).
        eps: Added to every priority, so a row whose TD error is 0 can still be drawn.
        seed: Seed of the buffer's ``np.random.Generator``.

    Example:
        >>> buffer = PrioritizedReplayBuffer(capacity=8, alpha=1.0, seed=0)
        >>> buffer.add(SampleBatch({"obs": np.arange(4, dtype=np.float32)}))
        >>> buffer.update_priorities(np.array([0, 1, 2, 3]), np.array([1.0, 1.0, 1.0, 7.0]))
        >>> batch = buffer.sample(10, beta=1.0)
        >>> np.bincount(batch["batch_indexes"]).tolist()  # one draw per tenth of the total
        [1, 1, 1, 7]
        >>> sorted({round(float(w), 3) for w in batch["weights"]})  # (p_i / min_j p_j) ** -beta
        [0.143, 1.0]
    """

    def __init__(
        self, capacity: int, alpha: float = 0.6, eps: float = 1e-6, seed: int | None = None
    ) -> None:
        super().__init__(capacity, seed)
        self.alpha, self.eps = check_priority_parameters(alpha, eps)
        self._sum_tree = SumSegmentTree(self.capacity)
        self._min_tree = MinSegmentTree(self.capacity)
        self._max_priority = 1.0

    @property
    def max_priority(self) -> float:
        """The largest ``priority + eps`` seen so far (1.0 before any update): the
        priority of new rows."""
        return self._max_priority

    @property
    def nbytes(self) -> int:
        """Bytes held by the columns and the two segment trees."""
        return super().nbytes + self._sum_tree.nbytes + self._min_tree.nbytes

    def add(self, batch: SampleBatch, priorities: np.ndarray | None = None) -> None:
        """Append the rows of ``batch``.

        Args:
            batch: Rows to store (see ``ReplayBuffer.add``).
            priorities: One per row, e.g. ``|td_error|`` computed by the worker
                (Ape-X); ``eps`` is added. None: the rows get ``max_priority``.
        """
        if priorities is not None:
            priorities = self._check_priorities(priorities, batch.count)
        positions = self._write(batch)
        if len(positions) == 0:
            return
        if priorities is None:
            self._set_priorities(positions, self._max_priority**self.alpha)
        else:
            self._store_priorities(positions, priorities[len(priorities) - len(positions) :])

    def sample(self, num_items: int, beta: float) -> SampleBatch:
        """``num_items`` rows drawn in proportion to their priority (stratified).

        Args:
            num_items: Rows to draw (with replacement).
            beta: Importance-sampling exponent, >= 0 (annealed towards 1 in the paper;
                0 gives weights of 1).

        Returns:
            A SampleBatch of the stored columns plus ``batch_indexes`` (int64 ring
            positions, for ``update_priorities``) and ``weights`` (float32).
        """
        self._check_can_sample(num_items)
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        total = self._sum_tree.total()
        strata = self._rng.permutation(num_items) + self._rng.random(num_items)
        indexes = self._sum_tree.find_prefix_sum_index(strata * (total / num_items))
        # (N P(i))^-beta / (N min_j P(j))^-beta = (p_i^alpha / min_j p_j^alpha)^-beta
        weights = (self._sum_tree[indexes] / self._min_tree.min()) ** -beta
        batch = self._gather(indexes)
        batch[WEIGHTS] = weights.astype(np.float32)
        return batch

    def update_priorities(self, indexes: np.ndarray, priorities: np.ndarray) -> None:
        """Set new priorities of sampled rows.

        Args:
            indexes: Ring positions: the ``batch_indexes`` column of a sampled batch.
                Where one repeats, its last priority is kept.
            priorities: Non-negative finite numbers, one per index, typically
                ``np.abs(td_errors)``. The buffer stores ``(priority + eps) ** alpha``.

        A row overwritten since it was sampled takes the priority meant for the row
        it replaced, as in RLlib: rare while the buffer is much larger than the
        rows added between a sample and its update.
        """
        indexes = np.asarray(indexes).reshape(-1)
        if indexes.dtype.kind not in "iu":
            raise TypeError(
                f"indexes must be integers (the batch_indexes column), got dtype {indexes.dtype}"
            )
        outside = (indexes < 0) | (indexes >= self._size)
        if outside.any():
            raise IndexError(
                f"index {indexes[outside][0]} is outside the {self._size} rows this buffer "
                "holds; pass the batch_indexes column of a batch sampled from this buffer"
            )
        self._store_priorities(indexes, self._check_priorities(priorities, len(indexes)))

    def _check_priorities(self, priorities: Any, count: int) -> np.ndarray:
        priorities = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if len(priorities) != count:
            raise ValueError(f"got {len(priorities)} priorities for {count} rows")
        bad = ~(np.isfinite(priorities) & (priorities >= 0))
        if bad.any():
            position = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"priority {priorities[position]} (item {position}) is not a finite "
                "number >= 0; pass np.abs(td_error) and check the loss for NaN or inf"
            )
        return priorities

    def _store_priorities(self, positions: np.ndarray, priorities: np.ndarray) -> None:
        priorities = priorities + self.eps
        self._set_priorities(positions, priorities**self.alpha)
        self._max_priority = max(self._max_priority, float(priorities.max()))

    def _set_priorities(self, positions: np.ndarray, values: np.ndarray | float) -> None:
        self._sum_tree.update(positions, values)
        self._min_tree.update(positions, values)

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "max_priority": self._max_priority,
            "total_priority": self._sum_tree.total(),
        }

    def get_state(self) -> dict[str, Any]:
        """``ReplayBuffer.get_state()`` plus alpha, eps, max priority and the stored
        priorities (``(priority + eps) ** alpha`` of the filled rows), from which
        ``set_state`` rebuilds both trees bit for bit."""
        leaves = self._sum_tree.leaves()[: self._size]
        return {
            **super().get_state(),
            "alpha": self.alpha,
            "eps": self.eps,
            "max_priority": self._max_priority,
            "priorities": leaves,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        for name in ("alpha", "eps"):
            saved, own = float(state[name]), getattr(self, name)
            if saved != own:
                raise ValueError(
                    f"the state was saved with {name}={saved}, this buffer has {name}={own}; "
                    f"build the buffer with {name}={saved} to load it"
                )
        priorities = np.asarray(state["priorities"], dtype=np.float64)
        if len(priorities) != int(state["size"]):
            raise ValueError(
                f"inconsistent replay state: {len(priorities)} priorities for "
                f"{int(state['size'])} rows"
            )
        super().set_state(state)
        self._sum_tree.set_leaves(priorities)
        self._min_tree.set_leaves(priorities)
        self._max_priority = float(state["max_priority"])
