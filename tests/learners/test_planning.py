"""How a train batch is split over learners, and the learner config checks."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.learners.learner_group import check_learner_config, uses_learner_group
from hpcrl.learners.rendezvous import check_learner_options
from hpcrl.policy.sgd import global_minibatch_order, mean_stats, plan_minibatches, shard_sizes


def test_shards_cover_the_batch_and_differ_by_at_most_one_row():
    assert shard_sizes(10, 4) == [3, 3, 2, 2]
    assert sum(shard_sizes(2049, 8)) == 2049


def test_every_row_once_per_epoch_and_same_minibatch_count_on_every_learner():
    sizes = shard_sizes(103, 3)
    plan = plan_minibatches(sizes, 4, 16, np.random.default_rng(0))
    assert len(plan) == 3 and all(len(epochs) == 4 for epochs in plan)
    for learner, size in enumerate(sizes):
        for minibatches in plan[learner]:
            assert len(minibatches) == 103 // 16
            np.testing.assert_array_equal(np.sort(np.concatenate(minibatches)), np.arange(size))


def test_global_minibatches_are_the_union_of_the_learners_parts():
    sizes = [3, 2]
    plan = plan_minibatches(sizes, 2, 2, np.random.default_rng(1))
    order = global_minibatch_order(plan, sizes)
    for epoch in range(2):
        np.testing.assert_array_equal(np.sort(np.concatenate(order[epoch])), np.arange(5))
        for j, rows in enumerate(order[epoch]):
            expected = np.concatenate([plan[0][epoch][j], 3 + plan[1][epoch][j]])
            np.testing.assert_array_equal(rows, expected)


@pytest.mark.parametrize("minibatch", [0, 500])
def test_whole_batch_is_one_minibatch(minibatch):
    plan = plan_minibatches([50, 50], 1, minibatch, np.random.default_rng(0))
    assert [len(plan[k][0]) for k in range(2)] == [1, 1]


def test_too_small_shards_are_an_error_naming_the_fix():
    with pytest.raises(ValueError, match="make sgd_minibatch_size at least 4"):
        plan_minibatches(shard_sizes(8, 4), 1, 2, np.random.default_rng(0))


def test_uses_learner_group():
    assert not uses_learner_group({})
    assert uses_learner_group({"num_learners": 3})
    assert uses_learner_group({"num_learners": 1, "num_gpus_per_learner": 1})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"num_learners": 0}, "num_learners must be >= 1, got 0"),
        ({"num_learners": 4, "sgd_minibatch_size": 2}, "make sgd_minibatch_size at least 4"),
        ({"learner_backend": "NCCL"}, "unknown learner_backend 'NCCL'"),
    ],
)
def test_learner_config_errors(config, message):
    with pytest.raises(ValueError, match=message):
        check_learner_config(config)


def test_learner_options_accept_the_documented_values():
    for gpus, backend in [(0, "auto"), (0, "gloo"), (1, "auto"), (1, "nccl"), (1, "gloo")]:
        check_learner_options(gpus, backend)


def test_stats_are_averaged_by_rows():
    stats = mean_stats([{"kl": 0.1, "lr": 1e-3}, {"kl": 0.4, "lr": 1e-3}], [30, 10])
    assert stats["kl"] == pytest.approx(0.175)
    assert stats["lr"] == pytest.approx(1e-3)
