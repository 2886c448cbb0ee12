"""Ape-X under mpiexec: driver, 2 workers, 1 shard; see test_apex_mpi.py.

Usage: mpiexec -n 4 python apex_script.py check|fail

- check: priorities come back only for rows the shard replayed (the shard
  checks), each worker keeps its epsilon, queues and credits stay bounded;
  prints "APEX OK".
- fail: the shard raises on its third replay: the driver's step() raises the
  error, naming the shard's rank, and the job ends non-zero.
"""

from __future__ import annotations

import sys

import numpy as np

from hpcrl.algorithms.apex import APEX_CONFIG, ApexTorchPolicy
from hpcrl.backends.mpi import MPIBackend
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.async_replay_optimizer import AsyncReplayOptimizer
from hpcrl.replay.replay_shard import ReplayShard


class FailingShard(ReplayShard):
    def replay(self, train_batch_size):
        if self.num_replayed == 2:
            raise RuntimeError("replay shard failure")
        return super().replay(train_batch_size)


class CheckedShard(ReplayShard):
    """Fails if priorities come back for rows it did not serve."""

    served: list = []

    def replay(self, train_batch_size):
        batch = super().replay(train_batch_size)
        if batch is not None:
            self.served = [*self.served[-63:], batch.policy_batches["default_policy"]]
        return batch

    def update_priorities(self, updates):
        indexes, _ = updates["default_policy"]
        served = [b["batch_indexes"] for b in self.served]
        if not any(np.array_equal(indexes, s) for s in served):
            raise AssertionError("priorities for rows this shard did not replay")
        super().update_priorities(updates)


def main() -> None:
    mode = sys.argv[1]
    backend = MPIBackend(timeout_s=60)
    config = {**APEX_CONFIG, "num_workers": 2, "rollout_fragment_length": 20}
    workers = WorkerSet(
        policy=ApexTorchPolicy, env_creator="CartPole-v1", num_workers=2, config=config,
        backend=backend,
    )  # fmt: skip
    optimizer = AsyncReplayOptimizer(
        workers, learning_starts=100, buffer_size=1000, train_batch_size=16,
        num_replay_buffer_shards=1,
        shard_class=FailingShard if mode == "fail" else CheckedShard,
    )  # fmt: skip
    if mode == "fail":
        for _ in range(60):
            optimizer.step()
        print("NO FAILURE", flush=True)
        return
    while optimizer.num_learner_updates < 30:
        optimizer.step()
        assert optimizer.learner.inqueue.qsize() <= 16
        assert all(optimizer._samples.in_flight(i) <= 2 for i in range(2))
    [stats] = backend.get(backend.call(optimizer.shards, "stats"))
    assert stats["num_priority_updates"] > 0, stats
    epsilons = workers.call_remote("apply", lambda w: w.get_policy().epsilon_at(10**6))
    assert np.allclose(epsilons, [0.4, 0.4**8]), epsilons
    optimizer.stop()
    workers.stop()
    print("APEX OK", flush=True)


if __name__ == "__main__":
    main()
