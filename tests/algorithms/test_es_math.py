"""ES's and ARS's updates against the papers' formulas written out directly."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.es import SharedNoiseTable, ars_step, centered_ranks, es_gradient

DIM = 7


@pytest.fixture
def setting():
    table = SharedNoiseTable(seed=3, size=500)
    rng = np.random.default_rng(0)
    indices = np.array([table.sample_index(rng, DIM) for _ in range(6)])
    returns = rng.normal(size=(6, 2)) * 10
    return table, indices, returns


def test_the_table_is_the_same_from_the_same_seed_and_differs_otherwise():
    a, b, c = SharedNoiseTable(5, 100), SharedNoiseTable(5, 100), SharedNoiseTable(6, 100)
    assert np.array_equal(a.noise, b.noise) and not np.array_equal(a.noise, c.noise)
    assert a.noise.dtype == np.float32
    rng = np.random.default_rng(1)
    assert all(0 <= a.sample_index(rng, 100) <= 0 for _ in range(5))  # only one start fits
    with pytest.raises(ValueError, match="set noise_size to at least 101"):
        a.sample_index(rng, 101)


def test_centered_ranks_are_ranks_over_all_returns_scaled_to_plus_minus_half():
    values = np.array([[5.0, 1.0], [3.0, 9.0]])
    # order: 1.0 < 3.0 < 5.0 < 9.0 -> ranks 0..3 -> /3 - 0.5
    expected = np.array([[2 / 3 - 0.5, -0.5], [1 / 3 - 0.5, 0.5]])
    np.testing.assert_allclose(centered_ranks(values), expected)
    assert centered_ranks(np.array([4.0])).tolist() == [0.0]


def test_es_gradient_is_the_rank_weighted_sum_of_the_noise(setting):
    table, indices, returns = setting
    flat = returns.ravel()
    order = sorted(range(flat.size), key=lambda i: flat[i])
    rank = np.empty(flat.size)
    for position, i in enumerate(order):
        rank[i] = position / (flat.size - 1) - 0.5
    rank = rank.reshape(returns.shape)
    expected = sum(
        (rank[i, 0] - rank[i, 1]) * table.noise[indices[i] : indices[i] + DIM].astype(np.float64)
        for i in range(len(indices))
    ) / len(indices)
    np.testing.assert_allclose(es_gradient(table, indices, returns, DIM), expected, rtol=1e-12)


@pytest.mark.parametrize("num_top", [1, 3, 6])
def test_ars_step_uses_the_top_directions_scaled_by_the_std_of_their_returns(setting, num_top):
    table, indices, returns = setting
    best = sorted(range(len(returns)), key=lambda i: -max(returns[i]))[:num_top]
    sigma = np.std([r for i in best for r in returns[i]])
    expected = sum(
        (returns[i, 0] - returns[i, 1]) * table.noise[indices[i] : indices[i] + DIM] for i in best
    ) * (0.02 / (num_top * sigma))
    step = ars_step(table, indices, returns, DIM, num_top, stepsize=0.02)
    np.testing.assert_allclose(step, expected, rtol=1e-5)


def test_ars_with_equal_returns_does_not_move_and_bad_top_counts_are_errors(setting):
    table, indices, _ = setting
    flat = np.ones((6, 2))
    assert not ars_step(table, indices, flat, DIM, 3, 0.1).any()
    with pytest.raises(ValueError, match="rollouts_used must be between 1 and the 6 pairs"):
        ars_step(table, indices, flat, DIM, 7, 0.1)
