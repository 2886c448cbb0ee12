"""N-step transitions against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.evaluation.n_step import N_STEPS, compute_n_step
from hpcrl.policy.sample_batch import SampleBatch


def one_trajectory(rewards, terminateds=None, truncateds=None, new_obs=None):
    n = len(rewards)
    no_flags = np.zeros(n, dtype=bool)
    return SampleBatch(
        {
            "obs": np.arange(n),
            "new_obs": np.arange(1, n + 1) if new_obs is None else new_obs,
            "actions": np.arange(n) % 2,
            "rewards": np.asarray(rewards, dtype=np.float32),
            "terminateds": no_flags if terminateds is None else np.asarray(terminateds),
            "truncateds": no_flags if truncateds is None else np.asarray(truncateds),
        }
    )


def test_terminated_trajectory_sums_fewer_rewards_near_the_end():
    # gamma 0.5, n 3, r = [1, 2, 4, 8], terminated at the last row:
    # row 0: 1 + .5*2 + .25*4 = 3;  row 1: 2 + .5*4 + .25*8 = 6
    # row 2: 4 + .5*8 = 8 (2 steps); row 3: 8 (1 step)
    new_obs = np.array([[1, -1], [2, -2], [3, -3], [4, -4]])
    batch = one_trajectory([1, 2, 4, 8], terminateds=[False, False, False, True], new_obs=new_obs)
    compute_n_step(batch, n_step=3, gamma=0.5)
    np.testing.assert_allclose(batch["rewards"], [3.0, 6.0, 8.0, 8.0])
    np.testing.assert_array_equal(batch["new_obs"], [[3, -3], [4, -4], [4, -4], [4, -4]])
    np.testing.assert_array_equal(batch["terminateds"], [False, True, True, True])
    np.testing.assert_array_equal(batch["truncateds"], [False] * 4)
    np.testing.assert_array_equal(batch[N_STEPS], [3, 3, 2, 1])


def test_truncated_trajectory_carries_the_flag_and_bootstraps_with_the_right_power():
    # gamma 0.9, n 2, r = [1, 1, 1], truncated at the last row:
    # rows 0 and 1: 1 + .9 = 1.9 over 2 steps; row 2: 1 over 1 step
    batch = one_trajectory([1, 1, 1], truncateds=[False, False, True])
    compute_n_step(batch, n_step=2, gamma=0.9)
    np.testing.assert_allclose(batch["rewards"], [1.9, 1.9, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(batch["new_obs"], [2, 3, 3])
    np.testing.assert_array_equal(batch["truncateds"], [False, True, True])
    np.testing.assert_array_equal(batch["terminateds"], [False, False, False])
    np.testing.assert_array_equal(batch[N_STEPS], [2, 2, 1])
    # Truncation still bootstraps: .9**2 from rows 0 and 1, .9 from row 2.
    bootstrap = 0.9 ** batch[N_STEPS] * (1 - batch["terminateds"])
    np.testing.assert_allclose(bootstrap, [0.81, 0.81, 0.9])


def test_fragment_cut_keeps_both_flags_off():
    # gamma 0.5, n 3, r = [2, 2, 2], the fragment ends without either flag:
    # row 0: 2 + 1 + .5 = 3.5; row 1: 2 + 1 = 3; row 2: 2
    batch = one_trajectory([2, 2, 2])
    compute_n_step(batch, n_step=3, gamma=0.5)
    np.testing.assert_allclose(batch["rewards"], [3.5, 3.0, 2.0])
    np.testing.assert_array_equal(batch["new_obs"], [3, 3, 3])
    np.testing.assert_array_equal(batch["terminateds"], [False] * 3)
    np.testing.assert_array_equal(batch["truncateds"], [False] * 3)
    np.testing.assert_array_equal(batch[N_STEPS], [3, 2, 1])


def test_trajectories_back_to_back_do_not_leak_into_each_other():
    # Three trajectories: episode 5 agent 0 (rows 0-2, terminated), episode 5
    # agent 1 (rows 3-4, cut at the fragment end), episode 9 (rows 5-7,
    # truncated). gamma 1, n 2: each row adds the next reward of its own trajectory.
    batch = SampleBatch(
        {
            "obs": np.arange(8),
            "new_obs": np.arange(8) + 101,
            "actions": np.zeros(8, dtype=np.int64),
            "rewards": [1, 10, 100, 1000, 10000, 3, 30, 300],
            "terminateds": [False, False, True, False, False, False, False, False],
            "truncateds": [False, False, False, False, False, False, False, True],
            "eps_id": [5, 5, 5, 5, 5, 9, 9, 9],
            "agent_index": [0, 0, 0, 1, 1, 0, 0, 0],
        }
    )
    compute_n_step(batch, n_step=2, gamma=1.0)
    np.testing.assert_allclose(batch["rewards"], [11, 110, 100, 11000, 10000, 33, 330, 300])
    np.testing.assert_array_equal(batch["new_obs"], [102, 103, 103, 105, 105, 107, 108, 108])
    np.testing.assert_array_equal(
        batch["terminateds"], [False, True, True, False, False, False, False, False]
    )
    np.testing.assert_array_equal(
        batch["truncateds"], [False, False, False, False, False, False, True, True]
    )
    np.testing.assert_array_equal(batch[N_STEPS], [2, 2, 1, 2, 1, 2, 2, 1])


def test_n_step_longer_than_every_trajectory_sums_to_each_end():
    # gamma 1, n 10: each row sums the rest of its trajectory.
    batch = one_trajectory([1, 2, 3], terminateds=[False, False, True])
    batch["eps_id"] = np.array([0, 0, 1])
    compute_n_step(batch, n_step=10, gamma=1.0)
    np.testing.assert_allclose(batch["rewards"], [3.0, 2.0, 3.0])
    np.testing.assert_array_equal(batch["new_obs"], [2, 2, 3])
    np.testing.assert_array_equal(batch[N_STEPS], [2, 1, 1])


def test_one_step_leaves_the_transitions_as_they_were():
    batch = one_trajectory([0.5, -1.0, 2.0, 3.0], terminateds=[False, True, False, False])
    batch["truncateds"] = np.array([False, False, False, True])
    batch["eps_id"] = np.array([1, 1, 2, 2])
    before = batch.copy()
    compute_n_step(batch, n_step=1, gamma=0.99)
    for key in ("rewards", "new_obs", "terminateds", "truncateds"):
        np.testing.assert_array_equal(batch[key], before[key])
    np.testing.assert_array_equal(batch[N_STEPS], [1, 1, 1, 1])


def test_other_columns_are_left_untouched_and_the_batch_is_returned():
    batch = one_trajectory([1, 2, 3], terminateds=[False, False, True])
    batch["vf_preds"] = np.array([0.1, 0.2, 0.3])
    untouched = {key: batch[key] for key in ("obs", "actions", "vf_preds")}
    assert compute_n_step(batch, n_step=2, gamma=0.9) is batch
    for key, column in untouched.items():
        assert batch[key] is column
    np.testing.assert_array_equal(batch["obs"], [0, 1, 2])


def test_float64_rewards_come_out_float32():
    # gamma .5, n 2: [1 + .5*.25, .25 + .5*3, 3] = [1.125, 1.75, 3]
    batch = one_trajectory([1.0, 0.25, 3.0])
    batch["rewards"] = np.array([1.0, 0.25, 3.0], dtype=np.float64)
    compute_n_step(batch, n_step=2, gamma=0.5)
    assert batch["rewards"].dtype == np.float32
    assert batch[N_STEPS].dtype == np.int64
    np.testing.assert_array_equal(batch["rewards"], [1.125, 1.75, 3.0])


def test_empty_batch():
    batch = one_trajectory([])
    batch["eps_id"] = np.zeros(0, dtype=np.int64)
    compute_n_step(batch, n_step=3, gamma=0.9)
    assert batch.count == 0
    assert batch["rewards"].dtype == np.float32
    assert batch[N_STEPS].shape == (0,)


def test_matches_a_row_by_row_reference_on_many_trajectories():
    rng = np.random.default_rng(0)
    lengths = [5, 1, 12, 3, 7]
    eps = np.repeat(np.arange(len(lengths)), lengths)
    n = len(eps)
    rewards = rng.normal(size=n)
    batch = SampleBatch(
        {
            "new_obs": rng.normal(size=(n, 3)),
            "rewards": rewards,
            "terminateds": rng.random(n) < 0.2,
            "truncateds": rng.random(n) < 0.2,
            "eps_id": eps,
        }
    )
    original = batch.copy()
    compute_n_step(batch, n_step=4, gamma=0.95)
    for i in range(n):
        end = max(j for j in range(n) if eps[j] == eps[i])
        k = min(4, end - i + 1)
        total = sum(0.95**j * rewards[i + j] for j in range(k))
        assert batch["rewards"][i] == pytest.approx(total, rel=1e-5, abs=1e-6)
        assert batch[N_STEPS][i] == k
        for key in ("new_obs", "terminateds", "truncateds"):
            np.testing.assert_array_equal(batch[key][i], original[key][i + k - 1])


@pytest.mark.parametrize("n_step", [0, -2, 2.5, True])
def test_n_step_must_be_a_positive_integer(n_step):
    with pytest.raises(ValueError, match=f"got {n_step!r}"):
        compute_n_step(one_trajectory([1.0]), n_step=n_step, gamma=0.9)


def test_missing_column_is_named():
    batch = one_trajectory([1.0, 2.0])
    del batch["truncateds"]
    with pytest.raises(KeyError, match="truncateds"):
        compute_n_step(batch, n_step=2, gamma=0.9)
