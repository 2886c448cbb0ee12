"""AsyncReplayOptimizer (Ape-X) on the local backend, and its pure plan."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from hpcrl.algorithms.apex import APEX_CONFIG, ApexTorchPolicy
from hpcrl.optimizers.async_replay_optimizer import ApexPlan, AsyncReplayOptimizer
from hpcrl.replay.replay_shard import ReplayShard


# -- the plan ----------------------------------------------------------------
def test_batches_go_round_robin_to_shards_with_room_else_are_dropped_and_counted():
    plan = ApexPlan(
        num_workers=1, num_shards=3, learning_starts=0, max_weight_sync_delay=1,
        max_adds_in_flight=2,
    )  # fmt: skip
    assert [plan.route(10) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    assert plan.route(10) is None and plan.num_dropped == 1
    plan.add_done(1)
    assert plan.route(10) == 1 and plan.route(10) is None and plan.num_dropped == 2
    assert plan.rows == [20, 30, 20]


def test_a_shard_replays_once_it_holds_its_part_of_learning_starts_with_adds_done():
    plan = ApexPlan(1, 2, learning_starts=101, max_weight_sync_delay=1, max_adds_in_flight=4)
    assert plan.shard_starts == 51
    plan.route(60)
    assert not plan.replay_ready(0)  # its add is still under way
    plan.add_done(0)
    assert plan.replay_ready(0) and not plan.replay_ready(1)
    plan.shard_lost(0)
    assert not plan.replay_ready(0) and plan.rows[0] == 0


def test_a_worker_is_due_weights_after_max_weight_sync_delay_of_its_steps():
    plan = ApexPlan(2, 1, 0, max_weight_sync_delay=100, max_adds_in_flight=1)
    assert [plan.sampled(0, 40) for _ in range(3)] == [False, False, True]
    assert not plan.sampled(1, 99)
    plan.weights_sent(0)
    assert not plan.sampled(0, 99) and plan.sampled(0, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_shards": 0}, "num_replay_buffer_shards must be >= 1"),
        ({"max_adds_in_flight": 0}, "max_adds_in_flight_per_shard must be >= 1"),
        ({"max_weight_sync_delay": 0}, "max_weight_sync_delay must be >= 1"),
    ],
)
def test_bad_plan_values_are_clear_errors(kwargs, message):
    args = {"num_workers": 1, "num_shards": 1, "learning_starts": 0,
            "max_weight_sync_delay": 1, "max_adds_in_flight": 1, **kwargs}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        ApexPlan(**args)


# -- the optimizer ---------------------------------------------------------
class CheckedShard(ReplayShard):
    """A shard that fails if priorities come back for rows it did not serve."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.served = []

    def replay(self, train_batch_size):
        batch = super().replay(train_batch_size)
        if batch is not None:
            self.served.append(batch.policy_batches["default_policy"]["batch_indexes"].copy())
        return batch

    def update_priorities(self, updates):
        indexes, priorities = updates["default_policy"]
        if not any(np.array_equal(indexes, served) for served in self.served):
            raise AssertionError("priorities for rows this shard did not replay")
        assert np.all(priorities >= 0)
        super().update_priorities(updates)


WORKER_CONFIG = {
    **APEX_CONFIG,
    "rollout_fragment_length": 25,
    "n_step": 3,
    "per_worker_exploration": True,
    "num_workers": 2,
    "model": {"fcnet_hiddens": [16]},
    "hiddens": [],
}


def make_optimizer(**kwargs):
    args = {
        "num_workers": 2,
        "worker_config": WORKER_CONFIG,
        "learning_starts": 100,
        "buffer_size": 1000,
        "train_batch_size": 16,
        "num_replay_buffer_shards": 2,
        "max_weight_sync_delay": 50,
        "target_network_update_freq": 200,
        "shard_class": CheckedShard,
        "seed": 0,
        **kwargs,
    }
    return AsyncReplayOptimizer.make("CartPole-v1", ApexTorchPolicy, **args)


def run_until(optimizer, updates, timeout=60.0):
    deadline = time.monotonic() + timeout
    while optimizer.num_learner_updates < updates:
        assert time.monotonic() < deadline, optimizer.stats()
        optimizer.step()


def test_priorities_go_back_to_the_shard_that_replayed_the_rows(one_torch_thread):
    optimizer = make_optimizer()
    try:
        run_until(optimizer, 30)
        stats = optimizer.stats()
        shards = optimizer.backend.get(optimizer.backend.call(optimizer.shards, "stats"))
        assert all(s["num_priority_updates"] > 0 for s in shards), shards
        assert sum(s["num_replayed"] for s in shards) >= stats["num_learner_updates"]
        assert stats["num_target_updates"] >= 1 and stats["num_weight_syncs"] >= 1
        assert stats["num_steps_trained"] == 16 * stats["num_learner_updates"]
        assert sum(stats["replay_shard_rows"]) == stats["num_steps_sampled"]
        assert stats["learner_queue_size"] <= 16
        for index in range(2):
            assert optimizer._samples.in_flight(index) <= 2
    finally:
        optimizer.stop()
        optimizer.workers.stop()


def test_uniform_replay_and_no_worker_priorities(one_torch_thread):
    optimizer = make_optimizer(
        prioritized_replay=False, shard_class=ReplayShard, num_replay_buffer_shards=1
    )
    try:
        run_until(optimizer, 5)
        [stats] = optimizer.backend.get(optimizer.backend.call(optimizer.shards, "stats"))
        assert stats["num_priority_updates"] == 0 and stats["num_replayed"] >= 5
        assert optimizer._samples.method == "sample"
    finally:
        optimizer.stop()
        optimizer.workers.stop()


def test_each_shard_saves_its_own_file_and_a_new_optimizer_loads_them(tmp_path, one_torch_thread):
    optimizer = make_optimizer()
    try:
        run_until(optimizer, 5)
        with optimizer.paused():
            optimizer.save_files(str(tmp_path))
            rows = optimizer.backend.get(optimizer.backend.call(optimizer.shards, "stats"))
        state = optimizer.save()
    finally:
        optimizer.stop()
        optimizer.workers.stop()
    assert sorted(os.listdir(tmp_path)) == ["replay_shard_0.h5", "replay_shard_1.h5"]
    fresh = make_optimizer()
    try:
        fresh.restore(state)
        fresh.restore_files(str(tmp_path))
        loaded = fresh.backend.get(fresh.backend.call(fresh.shards, "stats"))
        assert [s["rows"] for s in loaded] == [s["rows"] for s in rows]
        assert fresh.num_steps_sampled == state["num_steps_sampled"]
    finally:
        fresh.stop()
        fresh.workers.stop()
    other = make_optimizer(num_replay_buffer_shards=1, shard_class=ReplayShard)
    try:
        with pytest.raises(ValueError, match="2 replay shard file.*this run has 1 shard"):
            other.restore_files(str(tmp_path))
    finally:
        other.stop()
        other.workers.stop()


def test_no_remote_workers_is_a_clear_error():
    with pytest.raises(ValueError, match="num_workers >= 1"):
        AsyncReplayOptimizer.make("CartPole-v1", ApexTorchPolicy, num_workers=0)
