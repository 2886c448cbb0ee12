"""Sum and min segment trees over float64 leaves, updated and queried a batch at a time.

The tree is one flat array of ``2 * size`` values (``size``: the capacity rounded
up to a power of two). Node 1 is the root, node ``i`` has children ``2i`` and
``2i + 1``, and leaf ``j`` is node ``size + j``; node 0 is unused. Leaves past
the capacity hold the neutral element (0 for sums, +inf for minimums).

Every operation works on whole batches with numpy, one tree level at a time,
so its cost is ``log2(size)`` numpy calls, never a Python loop over rows:

- ``update`` writes the leaves (the last value of a repeated index wins), then
  recomputes the parents of the touched nodes level by level up to the root,
  with one gather of child pairs, one operation and one scatter per level. Each
  parent is recomputed from its two children (not adjusted by a difference), so
  a tree's values depend only on its leaves, whatever the order of updates: a
  tree rebuilt from saved leaves is bit for bit the same as the tree that was
  saved. (A parent touched twice is computed twice to the same value, which
  costs less than removing the repeats at every level.)
- ``SumSegmentTree.find_prefix_sum_index`` walks all queries down together, one
  level per step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def check_capacity(capacity: int) -> int:
    """``capacity`` as an int, or an error that names it."""
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise TypeError(f"capacity must be an int, got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    return int(capacity)


class SegmentTree:
    """A complete binary tree whose internal nodes combine their children.

    Use ``SumSegmentTree`` or ``MinSegmentTree``.

    Args:
        capacity: Number of leaves that can be set (indexes ``0 .. capacity - 1``).
        operation: A numpy ufunc that combines two children, such as ``np.add``.
        neutral: The operation's neutral element: the value of unset leaves.
    """

    def __init__(
        self,
        capacity: int,
        operation: Callable[[np.ndarray, np.ndarray], np.ndarray],
        neutral: float,
    ) -> None:
        self.capacity = check_capacity(capacity)
        self._size = 1 << (self.capacity - 1).bit_length()
        self._depth = self._size.bit_length() - 1
        self._operation = operation
        self._neutral = float(neutral)
        self._values = np.full(2 * self._size, self._neutral, dtype=np.float64)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tree's array."""
        return self._values.nbytes

    def __getitem__(self, indexes: int | np.ndarray) -> float | np.ndarray:
        """The leaf values at ``indexes`` (an int or an array of ints)."""
        if np.ndim(indexes) == 0:
            return float(self._values[self._size + self._check_indexes(np.asarray([indexes]))[0]])
        return self._values[self._size + self._check_indexes(np.asarray(indexes))]

    def leaves(self) -> np.ndarray:
        """A copy of the leaf values ``0 .. capacity - 1``."""
        return self._values[self._size : self._size + self.capacity].copy()

    def update(self, indexes: np.ndarray, values: np.ndarray | float) -> None:
        """Set leaves ``indexes`` to ``values`` and recompute their ancestors.

        Args:
            indexes: 1-D ints in ``[0, capacity)``. Where an index repeats, the
                last of its values is kept, as with a loop of single writes.
            values: Floats, one per index (or one scalar for all).
        """
        indexes = self._check_indexes(np.asarray(indexes).reshape(-1))
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 0:
            values = np.broadcast_to(values, indexes.shape)
        elif values.size != indexes.size:
            raise ValueError(f"got {values.size} values for {indexes.size} leaf indexes")
        values = values.reshape(-1)
        if indexes.size == 0:
            return
        # Sort the indexes; a stable sort keeps repeats in call order, so the last
        # of each run of equal indexes is the write that wins.
        order = np.argsort(indexes, kind="stable")
        sorted_indexes = indexes[order]
        last = np.ones(len(order), dtype=bool)
        last[:-1] = sorted_indexes[1:] != sorted_indexes[:-1]
        nodes = sorted_indexes[last] + self._size
        self._values[nodes] = values[order[last]]
        # Row n of ``children`` is (node 2n, node 2n + 1): the two children of node n.
        # Parents that repeat are recomputed from the same children to the same value,
        # so they need no deduplication.
        tree, children = self._values, self._values.reshape(-1, 2)
        for _ in range(self._depth):
            nodes >>= 1
            pairs = children.take(nodes, axis=0)
            tree[nodes] = self._operation(pairs[:, 0], pairs[:, 1])

    def set_leaves(self, values: np.ndarray) -> None:
        """Replace leaves ``0 .. len(values) - 1`` (the rest become neutral) and rebuild
        every level with one numpy call each: the fast way to load saved leaves."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(values) > self.capacity:
            raise ValueError(
                f"got {len(values)} leaf values for a tree of capacity {self.capacity}"
            )
        tree = self._values
        tree[self._size :] = self._neutral
        tree[self._size : self._size + len(values)] = values
        start = self._size
        while start > 1:
            start //= 2
            tree[start : 2 * start] = self._operation(
                tree[2 * start : 4 * start : 2], tree[2 * start + 1 : 4 * start : 2]
            )

    def reduce(self, start: int = 0, end: int | None = None) -> float:
        """The operation over leaves ``start .. end - 1`` (all leaves by default)."""
        end = self.capacity if end is None else end
        if not 0 <= start <= end <= self.capacity:
            raise ValueError(
                f"range [{start}, {end}) is outside the tree's leaves [0, {self.capacity})"
            )
        if start == 0 and end == self.capacity:
            return float(self._values[1])
        result = self._neutral
        low, high = start + self._size, end + self._size
        while low < high:
            if low & 1:
                result = float(self._operation(result, self._values[low]))
                low += 1
            if high & 1:
                high -= 1
                result = float(self._operation(result, self._values[high]))
            low >>= 1
            high >>= 1
        return result

    def _check_indexes(self, indexes: np.ndarray) -> np.ndarray:
        if indexes.dtype.kind not in "iu":
            raise TypeError(f"leaf indexes must be integers, got dtype {indexes.dtype}")
        if indexes.size and (indexes.min() < 0 or indexes.max() >= self.capacity):
            bad = indexes[(indexes < 0) | (indexes >= self.capacity)][0]
            raise IndexError(f"leaf index {bad} is outside [0, {self.capacity})")
        return indexes.astype(np.int64, copy=False)


class SumSegmentTree(SegmentTree):
    """Segment tree of sums, with prefix-sum search for proportional sampling.

    Args:
        capacity: Number of leaves (rounded up to a power of two internally).

    Example:
        >>> tree = SumSegmentTree(4)
        >>> tree.update(np.array([0, 1, 2, 3]), np.array([1.0, 2.0, 3.0, 4.0]))
        >>> tree.total(), tree.sum(1, 3)
        (10.0, 5.0)
        >>> tree.find_prefix_sum_index(np.array([0.0, 0.99, 1.0, 5.5, 9.9])).tolist()
        [0, 0, 1, 2, 3]
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, np.add, 0.0)

    def total(self) -> float:
        """Sum of all leaves."""
        return float(self._values[1])

    def sum(self, start: int = 0, end: int | None = None) -> float:
        """Sum of leaves ``start .. end - 1``."""
        return self.reduce(start, end)

    def find_prefix_sum_index(self, prefix_sums: np.ndarray) -> np.ndarray:
        """For each query ``s``, the smallest leaf ``i`` with ``sum(0, i + 1) > s``.

        That is ``np.searchsorted(np.cumsum(leaves), s, side="right")``: with ``s``
        uniform in ``[0, total())``, leaf ``i`` comes out with probability
        ``leaf_i / total()``. All queries descend the tree together, one level per
        numpy step. A query never ends on a leaf of value 0 (while ``total() > 0``):
        one at or past ``total()`` (rounding) returns the last positive leaf.

        Args:
            prefix_sums: Non-negative floats, any shape.

        Returns:
            int64 leaf indexes, shaped like ``prefix_sums``.
        """
        prefix_sums = np.asarray(prefix_sums, dtype=np.float64)
        queries = prefix_sums.reshape(-1)
        nodes = self._descend(queries, guarded=False)
        # Rounding (or a query >= total) can carry a query past the last positive
        # leaf; such rare queries descend again, never into an empty subtree.
        stray = self._values.take(nodes) <= 0
        if stray.any():
            nodes[stray] = self._descend(queries[stray], guarded=True)
        return (nodes - self._size).reshape(prefix_sums.shape)

    def _descend(self, queries: np.ndarray, guarded: bool) -> np.ndarray:
        """The leaf nodes (tree positions) that ``queries`` reach from the root."""
        remaining = queries.copy()
        nodes = np.ones(len(remaining), dtype=np.int64)
        children = self._values.reshape(-1, 2)
        for _ in range(self._depth):
            pairs = children.take(nodes, axis=0)
            left_sum = pairs[:, 0]
            go_right = remaining >= left_sum
            if guarded:
                go_right &= pairs[:, 1] > 0
            remaining -= left_sum * go_right
            nodes <<= 1
            nodes += go_right
        return nodes


class MinSegmentTree(SegmentTree):
    """Segment tree of minimums (unset leaves are +inf).

    Args:
        capacity: Number of leaves (rounded up to a power of two internally).

    Example:
        >>> tree = MinSegmentTree(5)
        >>> tree.update(np.array([0, 3, 3]), np.array([2.0, 0.5, 1.5]))
        >>> tree.min(), tree.min(1, 3)
        (1.5, inf)
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity, np.minimum, np.inf)

    def min(self, start: int = 0, end: int | None = None) -> float:
        """Minimum of leaves ``start .. end - 1`` (all leaves by default)."""
        return self.reduce(start, end)
