"""Ape-X on a real Dask LocalCluster: 2 rollout workers and 1 replay shard, each a
Dask worker process; a shard killed with SIGKILL is re-created empty."""

from __future__ import annotations

import os
import signal
import time

import pytest

from hpcrl.algorithms.apex import APEX_CONFIG, ApexTorchPolicy
from hpcrl.optimizers.async_replay_optimizer import AsyncReplayOptimizer
from hpcrl.replay.replay_shard import ReplayShard

pytest.importorskip("distributed")


def make_optimizer(dask_cluster):
    config = {
        **APEX_CONFIG,
        "num_workers": 2,
        "model": {"fcnet_hiddens": [16]},
        "hiddens": [],
        "rollout_fragment_length": 25,
        "dask_address": dask_cluster.scheduler_address,
        "seed": 1,
    }
    return AsyncReplayOptimizer.make(
        "CartPole-v1",
        ApexTorchPolicy,
        num_workers=2,
        backend="dask",
        worker_config=config,
        learning_starts=100,
        buffer_size=2000,
        train_batch_size=16,
        num_replay_buffer_shards=1,
        max_weight_sync_delay=50,
        seed=1,
    )


def step_until(optimizer, done, timeout=90.0):
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, optimizer.stats()
        optimizer.step()


def test_apex_on_dask_priorities_epsilons_and_a_lost_shard(dask_cluster):
    optimizer = make_optimizer(dask_cluster)
    backend = optimizer.backend
    try:
        step_until(optimizer, lambda: optimizer.num_learner_updates >= 10)
        [shard] = optimizer.shards
        [stats] = backend.get(backend.call([shard], "stats"))
        assert stats["num_priority_updates"] > 0 and stats["rows"] > 0
        epsilons = optimizer.workers.call_remote(
            "apply", lambda w: w.get_policy().epsilon_at(10**6)
        )
        assert epsilons == pytest.approx([0.4, 0.4**8])
        assert max(optimizer._samples.in_flight(i) for i in range(2)) <= 2

        os.kill(shard.pid, signal.SIGKILL)
        updates = optimizer.num_learner_updates
        step_until(
            optimizer,
            lambda: (
                optimizer.num_shard_restarts == 1 and optimizer.num_learner_updates >= updates + 10
            ),
        )
        result = optimizer.stats()
        assert result["num_shard_restarts"] == 1
        [stats] = backend.get(backend.call([shard], "stats"))
        # re-created empty: it holds only what arrived since
        assert stats["rows_added"] < optimizer.num_steps_sampled
    finally:
        optimizer.stop()
        optimizer.workers.stop()


class SlowShard(ReplayShard):
    def add(self, batch, priorities=None):
        time.sleep(0.2)
        return super().add(batch, priorities)


def test_a_slow_shard_drops_batches_instead_of_holding_up_sampling(dask_cluster):
    config = {**APEX_CONFIG, "model": {"fcnet_hiddens": [8]}, "rollout_fragment_length": 10,
              "dask_address": dask_cluster.scheduler_address}  # fmt: skip
    optimizer = AsyncReplayOptimizer.make(
        "CartPole-v1", ApexTorchPolicy, num_workers=2, backend="dask", worker_config=config,
        learning_starts=50, train_batch_size=8, num_replay_buffer_shards=1,
        max_adds_in_flight_per_shard=1, shard_class=SlowShard,
    )  # fmt: skip
    try:
        step_until(optimizer, lambda: optimizer.plan.num_dropped >= 5, timeout=60)
        stats = optimizer.stats()
        assert stats["num_dropped_batches"] >= 5
        assert optimizer.plan.adds_in_flight == [1] or optimizer.plan.adds_in_flight == [0]
        # the workers went on sampling: far more rows sampled than the shard took in
        assert stats["num_steps_sampled"] > stats["replay_shard_rows"][0]
    finally:
        optimizer.stop()
        optimizer.workers.stop()
