"""MPI backend overhead against raw mpi4py collectives, and sampling across worker ranks.

Run with three ranks (rank 0 drives, ranks 1 and 2 are workers):

    mpiexec -n 3 python benchmarks/mpi_overhead.py

One synchronous round = broadcast ``--weights-kb`` of weights to the two
workers, then gather a ``--batch-kb`` sample batch from each. It is timed
twice in the same run:

- raw: ``Bcast`` of one float32 buffer, then ``Gatherv`` of one float32
  buffer per worker (every rank runs this phase first);
- backend: ``MPIBackend.broadcast(actors, "set_weights", weights)`` of a dict
  of arrays, then ``backend.get(backend.call(actors, "sample"))`` returning a
  SampleBatch of several columns, as a synchronous optimizer does.

Target: backend round <= 3x the raw round (median over ``--rounds``). Then
it prints RolloutWorker sampling steps/s on CartPole-v1 with 1 and with 2
worker ranks sampling at once.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from mpi4py import MPI

from hpcrl.policy.sample_batch import SampleBatch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-kb", type=float, default=100.0)
    parser.add_argument("--batch-kb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--target", type=float, default=3.0)
    parser.add_argument("--num-envs", type=int, default=64, help="envs per worker (sampling)")
    parser.add_argument("--fragment-length", type=int, default=50)
    parser.add_argument("--samples", type=int, default=10, help="sample() calls per measurement")
    return parser.parse_args()


def make_batch(kb: float) -> SampleBatch:
    """A CartPole-like batch of about ``kb`` kilobytes in five columns."""
    rows = int(kb * 1024 // (4 * 4 + 4 * 4 + 8 + 4 + 1))
    rng = np.random.default_rng(0)
    return SampleBatch(
        {
            "obs": rng.normal(size=(rows, 4)).astype(np.float32),
            "new_obs": rng.normal(size=(rows, 4)).astype(np.float32),
            "actions": rng.integers(0, 2, rows),
            "rewards": np.ones(rows, dtype=np.float32),
            "terminateds": np.zeros(rows, dtype=bool),
        }
    )


class BatchServer:
    """An actor that takes weights and hands back a ready batch."""

    def __init__(self, kb: float) -> None:
        self.batch = make_batch(kb)
        self.weights = None

    def set_weights(self, weights: dict) -> None:
        self.weights = weights

    def sample(self) -> SampleBatch:
        return self.batch


def time_rounds(round_fn, rounds: int, warmup: int) -> float:
    for _ in range(warmup):
        round_fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        round_fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def raw_phase(args: argparse.Namespace) -> float | None:
    """Bcast + Gatherv with plain mpi4py on every rank; rank 0 returns the median round."""
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    weights = np.ones(int(args.weights_kb * 1024 // 4), dtype=np.float32)
    part = int(args.batch_kb * 1024 // 4)
    send = np.ones(part if rank else 0, dtype=np.float32)
    counts = [0] + [part] * (size - 1)
    recv = np.empty(sum(counts), dtype=np.float32) if rank == 0 else None

    def one_round() -> None:
        comm.Bcast(weights, root=0)
        comm.Gatherv(send, (recv, counts) if rank == 0 else None, root=0)

    comm.Barrier()
    median = time_rounds(one_round, args.rounds, args.warmup)
    return median if rank == 0 else None


def main() -> None:
    args = parse_args()
    raw = raw_phase(args)
    from hpcrl.backends.mpi import MPIBackend  # worker ranks serve from here on

    backend = MPIBackend(timeout_s=120)
    actors = backend.spawn(BatchServer, args.batch_kb, count=backend.max_actors())
    weights = {"default_policy": {"w": np.ones(int(args.weights_kb * 1024 // 4), np.float32)}}

    def one_round() -> None:
        backend.broadcast(actors, "set_weights", weights)
        backend.get(backend.call(actors, "sample"))

    through_backend = time_rounds(one_round, args.rounds, args.warmup)
    ratio = through_backend / raw
    print(
        f"one round: broadcast {args.weights_kb:g} KB, gather {args.batch_kb:g} KB from each of "
        f"{len(actors)} workers; median of {args.rounds} rounds"
    )
    print(f"  raw mpi4py Bcast + Gatherv : {raw * 1e6:8.1f} us")
    print(f"  hpcrl MPI backend          : {through_backend * 1e6:8.1f} us")
    verdict = "PASS" if ratio <= args.target else "FAIL"
    print(f"  ratio {ratio:.2f} (target <= {args.target:g}) -> {verdict}")

    for actor in actors:
        backend.kill(actor)
    sampling_rates(backend, args)
    backend.shutdown()


def sampling_rates(backend, args: argparse.Namespace) -> None:
    from hpcrl.algorithms.a2c import A2CTorchPolicy
    from hpcrl.evaluation.rollout_worker import RolloutWorker

    config = {
        "num_envs_per_worker": args.num_envs,
        "rollout_fragment_length": args.fragment_length,
        "model": {"fcnet_hiddens": [64, 64]},
        "seed": 0,
    }
    workers = [
        actor
        for index in range(1, backend.max_actors() + 1)
        for actor in backend.spawn(
            RolloutWorker, "CartPole-v1", A2CTorchPolicy, config, worker_index=index
        )
    ]
    print(
        f"sampling CartPole-v1, A2C policy [64, 64], {args.num_envs} envs per worker, "
        f"fragment {args.fragment_length}, {args.samples} sample() calls per worker"
    )
    for count in range(1, len(workers) + 1):
        active = workers[:count]
        backend.get(backend.call(active, "sample"))  # warm up
        start = time.perf_counter()
        rows = 0
        for _ in range(args.samples):
            rows += sum(b.count for b in backend.get(backend.call(active, "sample")))
        elapsed = time.perf_counter() - start
        print(f"  {count} worker rank(s): {rows / elapsed:10,.0f} steps/s")


if __name__ == "__main__":
    main()
