"""PrioritizedReplayBuffer: frequencies and importance weights against the formulas
of Schaul et al. (2016), priority updates, state, errors."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.replay import PrioritizedReplayBuffer


def rows(start: int, count: int) -> SampleBatch:
    number = np.arange(start, start + count)
    return SampleBatch(
        {
            "obs": np.repeat(number[:, None], 3, axis=1).astype(np.float32),
            "actions": number.astype(np.int64),
            "frame": np.full((count, 2, 2), number[:, None, None] % 256, dtype=np.uint8),
        }
    )


def sample_counts(buffer, draws: int, batch_size: int = 500) -> np.ndarray:
    counts = np.zeros(len(buffer))
    for _ in range(draws // batch_size):
        batch = buffer.sample(batch_size, beta=0.5)
        counts += np.bincount(batch["batch_indexes"], minlength=len(buffer))
    return counts


def assert_frequencies(counts: np.ndarray, probabilities: np.ndarray) -> None:
    """Chi-square against the expected counts: under 6 sigma above its mean."""
    expected = counts.sum() * probabilities
    chi_square = ((counts - expected) ** 2 / expected).sum()
    dof = len(counts) - 1
    assert chi_square < dof + 6 * np.sqrt(2 * dof), chi_square


def test_frequencies_follow_priorities_to_the_alpha():
    alpha, eps = 0.7, 1e-6
    buffer = PrioritizedReplayBuffer(50, alpha=alpha, eps=eps, seed=0)
    buffer.add(rows(0, 50))
    priorities = np.random.default_rng(1).random(50) * 5
    buffer.update_priorities(np.arange(50), priorities)
    probabilities = (priorities + eps) ** alpha / ((priorities + eps) ** alpha).sum()
    assert_frequencies(sample_counts(buffer, 200_000), probabilities)


def test_priority_updates_change_the_frequencies():
    buffer = PrioritizedReplayBuffer(40, alpha=1.0, seed=2)
    buffer.add(rows(0, 40))
    # New rows share the max priority (1.0): uniform.
    assert_frequencies(sample_counts(buffer, 40_000), np.full(40, 1 / 40))
    priorities = np.ones(40)
    priorities[[3, 17]] = [20.0, 0.0]
    buffer.update_priorities(np.array([3, 17]), np.array([20.0, 0.0]))
    counts = sample_counts(buffer, 100_000)
    p = priorities + buffer.eps
    assert_frequencies(counts, p / p.sum())
    assert counts[3] > 0.3 * counts.sum() and counts[17] == 0


def test_weights_match_the_formula():
    alpha, beta, eps = 0.6, 0.4, 1e-6
    buffer = PrioritizedReplayBuffer(64, alpha=alpha, eps=eps, seed=3)
    buffer.add(rows(0, 30))
    priorities = np.random.default_rng(4).random(30) * 3
    buffer.update_priorities(np.arange(30), priorities)
    batch = buffer.sample(256, beta=beta)
    n = len(buffer)
    probabilities = (priorities + eps) ** alpha / ((priorities + eps) ** alpha).sum()
    weights = (n * probabilities) ** -beta / ((n * probabilities) ** -beta).max()
    assert batch["weights"].dtype == np.float32
    np.testing.assert_allclose(batch["weights"], weights[batch["batch_indexes"]], rtol=1e-6)
    assert batch["weights"].max() <= 1.0
    np.testing.assert_array_equal(batch["actions"], batch["batch_indexes"])  # rows match
    assert np.all(buffer.sample(10, beta=0.0)["weights"] == 1.0)


def test_stratified_sampling_draws_each_equal_row_once():
    """With equal priorities and as many draws as rows, each stratum holds one row."""
    buffer = PrioritizedReplayBuffer(16, seed=5)
    buffer.add(rows(0, 16))
    orders = []
    for _ in range(20):
        indexes = buffer.sample(16, beta=0.4)["batch_indexes"]
        assert sorted(indexes) == list(range(16))
        orders.append(tuple(indexes))
    assert len(set(orders)) == 20  # strata come in a random order, not sorted


def test_new_rows_get_the_max_priority_and_eps_is_added():
    buffer = PrioritizedReplayBuffer(10, alpha=0.5, eps=0.01, seed=0)
    buffer.add(rows(0, 4))
    assert buffer.max_priority == 1.0
    buffer.update_priorities(np.array([0, 1, 1]), np.array([8.99, 0.0, 3.0]))
    assert buffer.max_priority == pytest.approx(9.0)
    buffer.add(rows(4, 8))  # wraps: positions 4..9 and 0..1 get the max priority
    stored = buffer.get_state()["priorities"]
    np.testing.assert_allclose(stored[[0, 1, *range(4, 10)]], 9.0**0.5)
    np.testing.assert_allclose(stored[[2, 3]], 1.0)


def test_add_with_priorities():
    buffer = PrioritizedReplayBuffer(4, alpha=1.0, eps=1e-3, seed=0)
    buffer.add(rows(0, 6), priorities=np.arange(6.0))  # the last 4 rows are kept
    state = buffer.get_state()
    # Row r (priority r) is at position r % 4: rows 4, 5, 2, 3.
    np.testing.assert_array_equal(state["columns"]["actions"], [4, 5, 2, 3])
    np.testing.assert_allclose(state["priorities"], np.array([4, 5, 2, 3]) + 1e-3)
    assert buffer.max_priority == pytest.approx(5.001)
    with pytest.raises(ValueError, match="got 2 priorities for 3 rows"):
        buffer.add(rows(0, 3), priorities=np.ones(2))


def test_overwritten_rows_start_from_the_max_priority():
    buffer = PrioritizedReplayBuffer(8, alpha=1.0, seed=0)
    buffer.add(rows(0, 8))
    buffer.update_priorities(np.arange(8), np.full(8, 1e-3))
    buffer.add(rows(8, 2))  # overwrites positions 0 and 1 with max priority 1.0
    counts = sample_counts(buffer, 20_000)
    assert counts[:2].sum() > 0.95 * counts.sum()


@pytest.mark.parametrize("added", [5, 70])
def test_state_through_hdf5_continues_exactly(added, hdf5_round_trip):
    buffer = PrioritizedReplayBuffer(50, alpha=0.6, eps=1e-4, seed=8)
    buffer.add(rows(0, added))
    batch = buffer.sample(16, beta=0.4)
    buffer.update_priorities(batch["batch_indexes"], np.abs(np.sin(batch["actions"])) * 4)
    restored = PrioritizedReplayBuffer(50, alpha=0.6, eps=1e-4)
    restored.set_state(hdf5_round_trip(buffer.get_state()))
    assert restored.max_priority == buffer.max_priority
    np.testing.assert_array_equal(restored._sum_tree._values, buffer._sum_tree._values)
    np.testing.assert_array_equal(restored._min_tree._values, buffer._min_tree._values)
    start = added
    for _ in range(4):
        for target in (buffer, restored):
            target.add(rows(start, 11))
        start += 11
        expected, got = buffer.sample(24, beta=0.6), restored.sample(24, beta=0.6)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
        td_errors = np.cos(expected["actions"].astype(np.float64)) * 3
        for target in (buffer, restored):
            target.update_priorities(expected["batch_indexes"], np.abs(td_errors))


def test_state_of_another_alpha_is_refused():
    buffer = PrioritizedReplayBuffer(10, alpha=0.6)
    buffer.add(rows(0, 3))
    with pytest.raises(ValueError, match="alpha=0.6 to load it"):
        PrioritizedReplayBuffer(10, alpha=0.5).set_state(buffer.get_state())


def test_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -1"):
        PrioritizedReplayBuffer(10, alpha=-1)
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        PrioritizedReplayBuffer(10, eps=0.0)
    buffer = PrioritizedReplayBuffer(10, seed=0)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(4, beta=0.4)
    buffer.add(rows(0, 5))
    with pytest.raises(ValueError, match="beta must be a finite number >= 0, got nan"):
        buffer.sample(4, beta=float("nan"))
    with pytest.raises(IndexError, match="index 7 is outside the 5 rows.*batch_indexes"):
        buffer.update_priorities(np.array([1, 7]), np.array([1.0, 1.0]))
    with pytest.raises(IndexError, match="index -1"):
        buffer.update_priorities(np.array([-1]), np.array([1.0]))
    with pytest.raises(TypeError, match="integers"):
        buffer.update_priorities(np.array([1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match=r"priority -0.5 \(item 1\).*np.abs\(td_error\)"):
        buffer.update_priorities(np.array([0, 1]), np.array([1.0, -0.5]))
    with pytest.raises(ValueError, match=r"priority nan \(item 0\)"):
        buffer.update_priorities(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match=r"priority inf"):
        buffer.update_priorities(np.array([0]), np.array([np.inf]))
    with pytest.raises(ValueError, match="got 1 priorities for 2 rows"):
        buffer.update_priorities(np.array([0, 1]), np.array([1.0]))
    assert buffer.max_priority == 1.0  # failed updates changed nothing
