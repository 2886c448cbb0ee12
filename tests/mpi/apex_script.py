"""Ape-X under mpiexec with a replay shard that fails; see test_apex_mpi.py.

Usage: mpiexec -n 4 python apex_script.py   (driver, 2 workers, 1 shard)

The shard raises on its third replay: the driver's step() raises the error,
naming the shard's rank, and the job ends non-zero.
"""

from __future__ import annotations

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


def main() -> None:
    backend = MPIBackend(timeout_s=60)
    config = {**APEX_CONFIG, "num_workers": 2, "rollout_fragment_length": 20}
    workers = WorkerSet(
        policy=ApexTorchPolicy, env_creator="CartPole-v1", num_workers=2, config=config,
        backend=backend,
    )  # fmt: skip
    optimizer = AsyncReplayOptimizer(
        workers, learning_starts=100, buffer_size=1000, train_batch_size=16,
        num_replay_buffer_shards=1, shard_class=FailingShard,
    )  # fmt: skip
    for _ in range(60):
        optimizer.step()
    print("NO FAILURE", flush=True)


if __name__ == "__main__":
    main()
