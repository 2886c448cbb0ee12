"""Sum and min segment trees against brute force over their leaves."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.replay.segment_tree import MinSegmentTree, SumSegmentTree


def assert_consistent(tree, operation) -> None:
    """Every internal node is exactly its children combined."""
    values, size = tree._values, tree._size
    parents = np.arange(1, size)
    np.testing.assert_array_equal(
        values[parents], operation(values[2 * parents], values[2 * parents + 1])
    )


@pytest.mark.parametrize("capacity", [1, 2, 7, 64, 1000])
def test_random_updates_match_brute_force(capacity):
    rng = np.random.default_rng(capacity)
    sum_tree, min_tree = SumSegmentTree(capacity), MinSegmentTree(capacity)
    leaves_sum = np.zeros(capacity)
    leaves_min = np.full(capacity, np.inf)
    for _ in range(30):
        # Batches with many repeated indexes: the last value of each index wins.
        indexes = rng.integers(0, capacity, size=rng.integers(1, 2 * capacity + 2))
        values = rng.random(len(indexes)) * 10
        sum_tree.update(indexes, values)
        min_tree.update(indexes, values)
        for index, value in zip(indexes, values):  # the reference: one write at a time
            leaves_sum[index] = value
            leaves_min[index] = value
        np.testing.assert_array_equal(sum_tree.leaves(), leaves_sum)
        np.testing.assert_array_equal(min_tree.leaves(), leaves_min)
        assert sum_tree.total() == pytest.approx(leaves_sum.sum(), rel=1e-12)
        assert min_tree.min() == leaves_min.min()
        start, end = np.sort(rng.integers(0, capacity + 1, size=2))
        assert sum_tree.sum(start, end) == pytest.approx(leaves_sum[start:end].sum(), abs=1e-9)
        expected_min = leaves_min[start:end].min() if end > start else np.inf
        assert min_tree.min(start, end) == expected_min
    assert_consistent(sum_tree, np.add)
    assert_consistent(min_tree, np.minimum)


def test_duplicate_indexes_keep_the_last_value():
    tree = SumSegmentTree(8)
    tree.update(np.array([3, 5, 3, 3, 5]), np.array([1.0, 2.0, 4.0, 7.0, 0.5]))
    assert tree[3] == 7.0 and tree[5] == 0.5
    assert tree.total() == 7.5
    np.testing.assert_array_equal(tree[np.array([5, 3])], [0.5, 7.0])


def test_scalar_value_is_broadcast():
    tree = MinSegmentTree(10)
    tree.update(np.arange(10), 3.0)
    tree.update(np.array([4]), np.array([1.0]))
    assert tree.min() == 1.0 and tree.min(5, 10) == 3.0


def test_set_leaves_builds_the_same_tree_as_updates():
    rng = np.random.default_rng(0)
    values = rng.random(300)
    updated, built = SumSegmentTree(500), SumSegmentTree(500)
    for chunk in np.array_split(rng.permutation(300), 7):
        updated.update(chunk, values[chunk])
    built.set_leaves(values)
    np.testing.assert_array_equal(built._values, updated._values)


def test_prefix_sum_index_exact_on_integer_leaves():
    """Integer leaves sum exactly in float64, so every query, boundaries included,
    must match searchsorted over the cumulative sum; zero leaves are never chosen."""
    rng = np.random.default_rng(1)
    leaves = rng.integers(0, 4, size=37).astype(np.float64)  # about a quarter are 0
    tree = SumSegmentTree(37)
    tree.update(np.arange(37), leaves)
    cumulative = np.cumsum(leaves)
    queries = np.concatenate([np.arange(cumulative[-1]), np.arange(cumulative[-1]) + 0.5])
    found = tree.find_prefix_sum_index(queries)
    np.testing.assert_array_equal(found, np.searchsorted(cumulative, queries, side="right"))
    assert np.all(leaves[found] > 0)


def test_prefix_sum_index_random_leaves():
    rng = np.random.default_rng(2)
    leaves = rng.random(1000) ** 3
    tree = SumSegmentTree(1000)
    tree.update(np.arange(1000), leaves)
    queries = rng.random(20_000) * tree.total()
    found = tree.find_prefix_sum_index(queries)
    expected = np.searchsorted(np.cumsum(leaves), queries, side="right")
    # Pairwise tree sums and the sequential cumsum round differently; any mismatch
    # must be a query within rounding of a boundary.
    mismatched = found != expected
    assert mismatched.sum() <= 2
    cumulative = np.cumsum(leaves)
    for query, index in zip(queries[mismatched], found[mismatched]):
        assert min(abs(cumulative[index] - query), abs(cumulative[index - 1] - query)) < 1e-9


def test_prefix_sum_index_shape_and_out_of_range_queries():
    tree = SumSegmentTree(6)
    tree.update(np.arange(4), np.array([1.0, 2.0, 0.0, 0.0]))
    found = tree.find_prefix_sum_index(np.array([[0.5, 2.5], [3.0, 100.0]]))
    assert found.dtype == np.int64 and found.shape == (2, 2)
    # At or past the total: the last leaf with a positive value, never an empty one.
    np.testing.assert_array_equal(found, [[0, 1], [1, 1]])


def test_sampling_by_prefix_sum_is_proportional():
    rng = np.random.default_rng(3)
    leaves = np.array([1.0, 0.0, 3.0, 6.0])
    tree = SumSegmentTree(4)
    tree.update(np.arange(4), leaves)
    counts = np.bincount(tree.find_prefix_sum_index(rng.random(100_000) * 10.0), minlength=4)
    np.testing.assert_allclose(counts / 100_000, leaves / 10.0, atol=0.005)


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="at least 1, got 0"):
        SumSegmentTree(0)
    with pytest.raises(TypeError, match="capacity must be an int"):
        SumSegmentTree(3.5)
    tree = SumSegmentTree(5)
    with pytest.raises(IndexError, match="leaf index 5 is outside"):
        tree.update(np.array([0, 5]), np.array([1.0, 1.0]))
    with pytest.raises(IndexError, match="leaf index -1"):
        tree.update(np.array([-1]), np.array([1.0]))
    with pytest.raises(TypeError, match="integers"):
        tree.update(np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="3 values for 2 leaf indexes"):
        tree.update(np.array([0, 1]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"range \[2, 7\)"):
        tree.sum(2, 7)
