"""MPI backend overhead against raw mpi4py collectives, and sampling across worker ranks.

Run with three ranks (rank 0 drives, ranks 1 and 2 are workers):

    mpiexec -n 3 python benchmarks/mpi_overhead.py

One synchronous round = broadcast ``--weights-kb`` of weights to the two
workers, then gather a ``--batch-kb`` sample batch from each. It is timed
two ways in the same run:

- raw: ``Bcast`` of one float32 buffer, then ``Gatherv`` of one float32
  buffer per worker, every rank inside the calls;
- backend: ``MPIBackend.broadcast(actors, "set_weights", weights)`` of a dict
  of arrays, then ``backend.get(backend.call(actors, "sample"))`` returning a
  SampleBatch of several columns, as a synchronous optimizer does.

For reference it also times the bare protocol: the backend's messages (a
small request to each worker, the ``Bcast``, a small request to each, one
answer of the batch's size from each), polled as the backend polls, with
preallocated buffers and no packing; and the same protocol with the copies
a message of arrays cannot avoid (the weights and each batch column copied
into a new message buffer, received into a new buffer, the columns rebuilt
as views of it) but nothing else: no pickling, no futures, a known layout.
The gap between that and the backend is the general Python handling of each
message.

The kinds alternate in ``--blocks`` blocks of ``--rounds`` rounds each (the
workers run their raw and bare rounds from inside an actor call), so that all
see the same machine: on a shared or virtual machine the speed of every round
drifts over seconds. Target: median backend round <= 3x the median raw round. Then
it prints RolloutWorker sampling steps/s on CartPole-v1 with 1 and with 2
worker ranks sampling at once.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
from mpi4py import MPI

from hpcrl.backends.mpi import _ALIGN  # the backend's alignment of arrays in a message
from hpcrl.policy.sample_batch import SampleBatch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights-kb", type=float, default=100.0)
    parser.add_argument("--batch-kb", type=float, default=100.0)
    parser.add_argument("--rounds", type=int, default=100, help="rounds per block")
    parser.add_argument("--blocks", type=int, default=20, help="blocks of each kind, alternating")
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

    def raw_rounds(self, weights_kb: float, batch_kb: float, rounds: int) -> None:
        """This worker rank's side of ``rounds`` raw rounds (rank 0 runs the same)."""
        raw_round = make_raw_round(weights_kb, batch_kb)
        for _ in range(rounds):
            raw_round()

    def bare_rounds(self, weights_kb: float, batch_kb: float, rounds: int) -> None:
        """This worker rank's side of ``rounds`` bare-protocol rounds."""
        comm = MPI.COMM_WORLD
        weights = np.empty(int(weights_kb * 1024 // 4), dtype=np.float32)
        answer = np.ones(int(batch_kb * 1024 // 4), dtype=np.float32)
        for _ in range(rounds):
            poll(comm, 0, TAG_BARE_REQUEST)  # "a broadcast follows"
            comm.Bcast(weights, root=0)
            poll(comm, 0, TAG_BARE_REQUEST)  # "sample"
            comm.Send(answer, dest=0, tag=TAG_BARE_ANSWER)

    def copy_rounds(self, weights_kb: float, batch_kb: float, rounds: int) -> None:
        """This worker rank's side of ``rounds`` rounds of the bare protocol with copies."""
        comm = MPI.COMM_WORLD
        nbytes = int(weights_kb * 1024 // 4) * 4
        layout = column_layout(self.batch)
        size = layout[-1][2] + layout[-1][3]
        for _ in range(rounds):
            poll(comm, 0, TAG_BARE_REQUEST)
            message = np.empty(nbytes, dtype=np.uint8)
            comm.Bcast(message, root=0)
            self.weights = {"w": message.view(np.float32)}
            poll(comm, 0, TAG_BARE_REQUEST)
            answer = np.empty(size, dtype=np.uint8)
            for key, _, offset, nbytes_column in layout:
                answer[offset : offset + nbytes_column] = self.batch[key].reshape(-1).view(np.uint8)
            comm.Send(answer, dest=0, tag=TAG_BARE_ANSWER)


def column_layout(batch: SampleBatch) -> list[tuple[str, np.ndarray, int, int]]:
    """(name, column, offset, bytes) of each column in a message, aligned as the backend does."""
    layout, offset = [], 0
    for key, column in batch.items():
        offset = -(-offset // _ALIGN) * _ALIGN
        layout.append((key, column, offset, column.nbytes))
        offset += column.nbytes
    return layout


def make_raw_round(weights_kb: float, batch_kb: float):
    """One raw round for this rank: ``Bcast`` of the weights, ``Gatherv`` of a batch."""
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    weights = np.ones(int(weights_kb * 1024 // 4), dtype=np.float32)
    part = int(batch_kb * 1024 // 4)
    send = np.ones(part if rank else 0, dtype=np.float32)
    counts = [0] + [part] * (size - 1)
    recv = np.empty(sum(counts), dtype=np.float32) if rank == 0 else None

    def one_round() -> None:
        comm.Bcast(weights, root=0)
        comm.Gatherv(send, (recv, counts) if rank == 0 else None, root=0)

    return one_round


TAG_BARE_REQUEST, TAG_BARE_ANSWER = 901, 902


def poll(comm, source: int, tag: int) -> np.ndarray:
    """Receive one message by polling, yielding the core between polls."""
    status = MPI.Status()
    while True:
        message = comm.Improbe(source=source, tag=tag, status=status)
        if message is not None:
            buffer = np.empty(status.Get_count(), dtype=np.uint8)
            message.Recv(buffer)
            return buffer
        os.sched_yield()


def make_bare_round(weights_kb: float):
    """Rank 0's side of one bare-protocol round: the backend's messages (a small
    request to each worker, the ``Bcast``, a small request to each, one answer
    from each), polled like the backend polls, without packing anything."""
    comm = MPI.COMM_WORLD
    workers = range(1, comm.Get_size())
    weights = np.ones(int(weights_kb * 1024 // 4), dtype=np.float32)
    request = np.zeros(16, dtype=np.uint8)

    def one_round() -> None:
        for rank in workers:
            comm.Send(request, dest=rank, tag=TAG_BARE_REQUEST)
        comm.Bcast(weights, root=0)
        for rank in workers:
            comm.Send(request, dest=rank, tag=TAG_BARE_REQUEST)
        for _ in workers:
            poll(comm, MPI.ANY_SOURCE, TAG_BARE_ANSWER)

    return one_round


def make_copy_round(weights_kb: float, batch_kb: float):
    """Rank 0's side of one round of the bare protocol with copies: the weights
    copied into a new message, each answer received into a new buffer and its
    columns rebuilt as views."""
    comm = MPI.COMM_WORLD
    workers = range(1, comm.Get_size())
    weights = np.ones(int(weights_kb * 1024 // 4), dtype=np.float32)
    request = np.zeros(16, dtype=np.uint8)
    layout = column_layout(make_batch(batch_kb))

    def one_round() -> list[SampleBatch]:
        message = np.empty(weights.nbytes, dtype=np.uint8)  # packed first, as the backend does
        message[:] = weights.view(np.uint8)
        for rank in workers:
            comm.Send(request, dest=rank, tag=TAG_BARE_REQUEST)
        comm.Bcast(message, root=0)
        for rank in workers:
            comm.Send(request, dest=rank, tag=TAG_BARE_REQUEST)
        batches = []
        for _ in workers:
            answer = poll(comm, MPI.ANY_SOURCE, TAG_BARE_ANSWER)
            batches.append(
                SampleBatch(
                    {
                        key: np.ndarray(column.shape, column.dtype, answer, offset)
                        for key, column, offset, _ in layout
                    }
                )
            )
        return batches

    return one_round


def time_rounds(round_fn, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        round_fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    args = parse_args()
    from hpcrl.backends.mpi import MPIBackend  # worker ranks serve from here on

    backend = MPIBackend(timeout_s=120)
    actors = backend.spawn(BatchServer, args.batch_kb, count=backend.max_actors())
    weights = {"default_policy": {"w": np.ones(int(args.weights_kb * 1024 // 4), np.float32)}}
    raw_round = make_raw_round(args.weights_kb, args.batch_kb)
    bare_round = make_bare_round(args.weights_kb)
    copy_round = make_copy_round(args.weights_kb, args.batch_kb)

    def backend_round() -> None:
        backend.broadcast(actors, "set_weights", weights)
        backend.get(backend.call(actors, "sample"))

    def worker_block(method: str, round_fn, rounds: int) -> list[float]:
        """``rounds`` rounds that the workers run from inside an actor call."""
        futures = backend.call(actors, method, args.weights_kb, args.batch_kb, rounds)
        times = time_rounds(round_fn, rounds)
        backend.get(futures)
        return times

    worker_block("raw_rounds", raw_round, args.warmup)
    worker_block("bare_rounds", bare_round, args.warmup)
    worker_block("copy_rounds", copy_round, args.warmup)
    time_rounds(backend_round, args.warmup)
    raw, bare, copies, through_backend = [], [], [], []
    for _ in range(args.blocks):
        raw += worker_block("raw_rounds", raw_round, args.rounds)
        bare += worker_block("bare_rounds", bare_round, args.rounds)
        copies += worker_block("copy_rounds", copy_round, args.rounds)
        through_backend += time_rounds(backend_round, args.rounds)
    raw_median = statistics.median(raw)
    bare_median = statistics.median(bare)
    copies_median = statistics.median(copies)
    backend_median = statistics.median(through_backend)
    ratio = backend_median / raw_median
    print(
        f"one round: broadcast {args.weights_kb:g} KB, gather {args.batch_kb:g} KB from each of "
        f"{len(actors)} workers; median of {args.blocks} x {args.rounds} rounds, alternating"
    )
    print(f"  raw mpi4py Bcast + Gatherv : {raw_median * 1e6:8.1f} us")
    print(
        f"  bare protocol, no packing  : {bare_median * 1e6:8.1f} us "
        f"({bare_median / raw_median:.2f}x raw)"
    )
    print(
        f"  bare protocol with copies  : {copies_median * 1e6:8.1f} us "
        f"({copies_median / raw_median:.2f}x raw)"
    )
    print(f"  hpcrl MPI backend          : {backend_median * 1e6:8.1f} us")
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
