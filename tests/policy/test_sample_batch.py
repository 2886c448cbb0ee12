from __future__ import annotations

import numpy as np
import pytest

from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch, concat_samples


def make_batch(n: int = 6, eps: list[int] | None = None) -> SampleBatch:
    return SampleBatch(
        {
            "obs": np.arange(n * 2, dtype=np.float32).reshape(n, 2),
            "rewards": np.ones(n, dtype=np.float32),
            "terminateds": np.zeros(n, dtype=bool),
            "truncateds": np.eye(1, n, n - 1, dtype=bool)[0],
            "eps_id": np.asarray(eps if eps is not None else [1] * n),
        }
    )


def test_columns_must_have_equal_length():
    with pytest.raises(ValueError, match="equal length"):
        SampleBatch({"obs": np.zeros((3, 2)), "rewards": np.zeros(4)})


def test_dones_is_derived_and_cannot_be_set():
    batch = make_batch()
    batch["terminateds"][0] = True
    assert batch["dones"].tolist() == [True, False, False, False, False, True]
    with pytest.raises(ValueError, match="derived"):
        batch["dones"] = np.zeros(6, dtype=bool)


def test_slice_take_and_len():
    batch = make_batch()
    assert len(batch) == 6
    part = batch[2:4]
    assert part.count == 2 and part["obs"][0].tolist() == [4.0, 5.0]
    taken = batch.take(np.array([5, 0]))
    assert taken["obs"][:, 0].tolist() == [10.0, 0.0]


def test_shuffle_is_a_permutation_reproducible_by_seed():
    batch = make_batch(50)
    a = batch.shuffle(np.random.default_rng(3))
    b = batch.shuffle(np.random.default_rng(3))
    np.testing.assert_array_equal(a["obs"], b["obs"])
    assert sorted(a["obs"][:, 0].tolist()) == batch["obs"][:, 0].tolist()


def test_minibatches_cover_every_row_once():
    batch = make_batch(10)
    sizes = [mb.count for mb in batch.minibatches(4, rng=np.random.default_rng(0))]
    assert sizes == [4, 4, 2]
    rows = np.concatenate([mb["obs"][:, 0] for mb in batch.minibatches(4)])
    assert sorted(rows.tolist()) == batch["obs"][:, 0].tolist()


def test_split_by_episode_on_eps_id_runs():
    batch = make_batch(6, eps=[7, 7, 3, 3, 3, 9])
    parts = batch.split_by_episode()
    assert [p.count for p in parts] == [2, 3, 1]
    assert batch.trajectory_bounds().tolist() == [0, 2, 5, 6]


def test_concat_samples_and_mismatched_columns():
    a, b = make_batch(3), make_batch(4)
    both = concat_samples([a, b])
    assert both.count == 7
    del b["eps_id"]
    with pytest.raises(ValueError, match="eps_id"):
        concat_samples([a, b])


def test_summary_repr_per_column():
    batch = SampleBatch({"obs": np.array([[-2.46, 0.0], [1.0, 2.259]], dtype=np.float32)})
    text = repr(batch)
    assert "'obs': np.ndarray((2, 2), dtype=float32, min=-2.46, max=2.259, mean=0.1998)" in text


def test_infos_list_of_dicts_becomes_object_column():
    batch = SampleBatch({"rewards": np.zeros(2), "infos": [{"a": 1}, {}]})
    assert batch["infos"].dtype == object and batch["infos"][0] == {"a": 1}


def test_multi_agent_batch_concat_per_policy():
    ma1 = MultiAgentBatch({"p0": make_batch(2), "p1": make_batch(3)}, env_steps=3)
    ma2 = MultiAgentBatch({"p0": make_batch(4)}, env_steps=4)
    both = concat_samples([ma1, ma2])
    assert isinstance(both, MultiAgentBatch)
    assert both.env_steps() == 7
    assert both.policy_batches["p0"].count == 6 and both.agent_steps() == 9
    assert MultiAgentBatch.wrap_as_needed({"default_policy": make_batch(2)}, 2).count == 2
