"""How fast the learner rank takes in sample batches: hpcrl's MPI streaming path
beside raw mpi4py ``Recv`` of the same bytes, in the same run.

Run with one learner rank (rank 0) and one or more worker ranks:

    mpiexec -n 3 python benchmarks/async_ingest.py

Each worker rank holds one ready 500-row CartPole-shaped ``SampleBatch`` (ten
columns, about 35 KB), made once up front, so nothing but the transfer is
timed. Two ways of moving it to rank 0 are timed for ``--seconds`` each:

- hpcrl: the streaming pattern of ``AsyncSamplesOptimizer`` (IMPALA), a
  ``backend.stream(actors, "sample")``: each worker rank runs ``sample`` and
  sends the batch unasked while it holds credits; rank 0 grants each worker
  ``--in-flight`` credits, takes batches as they arrive (``stream.take``) and
  grants one credit back for each;
- raw: from inside one actor call, each worker ``Send``s the batch's packed
  message (``_pack(batch)``, the bytes the backend sends) a fixed number of
  times to rank 0, which ``Recv``s each into one preallocated buffer from
  ``ANY_SOURCE``. The count is calibrated so that this takes about
  ``--seconds``.

Both report batches/s and MB/s (1 MB = 1e6 bytes of packed message) received
by rank 0. The two kinds alternate in ``--blocks`` blocks so that both see the
same machine. Target: median hpcrl batches/s >= ``--target`` (0.5) x median
raw batches/s.

Note: raw ``Send``/``Recv`` block, and MPI implementations spin a core while
they do; the backend polls and yields the core instead (see ``_Backoff``). On
a machine with fewer cores than ranks this alone moves the figures.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import mpi4py
import numpy as np
from mpi4py import MPI

import hpcrl
from hpcrl.backends.mpi import _pack  # the backend's message for an object
from hpcrl.policy.sample_batch import SampleBatch

TAG_RAW = 903  # raw messages; the backend uses 11 and 12


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per block and kind")
    parser.add_argument("--blocks", type=int, default=3, help="blocks of each kind, alternating")
    parser.add_argument("--in-flight", type=int, default=2, help="credits per worker")
    parser.add_argument("--rows", type=int, default=500, help="rows per sample batch")
    parser.add_argument("--target", type=float, default=0.5, help="least hpcrl/raw ratio")
    return parser.parse_args()


def make_batch(rows: int) -> SampleBatch:
    """A CartPole-shaped batch as ``RolloutWorker.sample()`` returns for IMPALA."""
    rng = np.random.default_rng(0)
    return SampleBatch(
        {
            "obs": rng.normal(size=(rows, 4)).astype(np.float32),
            "new_obs": rng.normal(size=(rows, 4)).astype(np.float32),
            "actions": rng.integers(0, 2, rows),
            "rewards": np.ones(rows, dtype=np.float32),
            "terminateds": np.zeros(rows, dtype=bool),
            "truncateds": np.zeros(rows, dtype=bool),
            "eps_id": np.repeat(np.arange(rows // 20 + 1), 20)[:rows],
            "action_logp": np.full(rows, -0.69, dtype=np.float32),
            "action_dist_inputs": rng.normal(size=(rows, 2)).astype(np.float32),
            "vf_preds": rng.normal(size=rows).astype(np.float32),
        }
    )


class BatchServer:
    """An actor that hands back a ready batch, or sends its packed bytes raw."""

    def __init__(self, rows: int) -> None:
        self.batch = make_batch(rows)
        self.message = _pack(self.batch)

    def sample(self) -> SampleBatch:
        return self.batch

    def raw_send(self, messages: int) -> None:
        """This worker rank's side of a raw block: ``messages`` blocking sends to rank 0."""
        comm = MPI.COMM_WORLD
        for _ in range(messages):
            comm.Send(self.message, dest=0, tag=TAG_RAW)


def stream_block(backend, actors: list, in_flight: int, seconds: float) -> tuple[int, float]:
    """(batches, seconds) taken in by rank 0 as ``AsyncSamplesOptimizer`` takes them."""
    stream = backend.stream(actors, "sample")
    start = time.perf_counter()
    deadline = start + seconds
    for index in range(len(actors)):
        stream.grant(index, in_flight)
    batches = 0
    while (now := time.perf_counter()) < deadline:
        for index, future in stream.take(timeout=deadline - now):
            future.result()
            batches += 1
            stream.grant(index)
    elapsed = time.perf_counter() - start
    stream.close()  # the workers stop streaming and are idle for the next block
    return batches, elapsed


def raw_block(backend, actors: list, messages: int, nbytes: int) -> tuple[int, float]:
    """(batches, seconds): ``messages`` raw messages from each worker into one buffer."""
    comm = MPI.COMM_WORLD
    buffer = np.empty(nbytes, dtype=np.uint8)
    total = messages * len(actors)
    start = time.perf_counter()
    futures = backend.call(actors, "raw_send", messages)
    for _ in range(total):
        comm.Recv(buffer, source=MPI.ANY_SOURCE, tag=TAG_RAW)
    elapsed = time.perf_counter() - start
    backend.get(futures)
    return total, elapsed


def raw_messages_for(backend, actors: list, nbytes: int, seconds: float) -> int:
    """Messages per worker that take about ``seconds`` (two short raw runs; also warm-up)."""
    messages = 200
    for target in (0.25, seconds):
        total, elapsed = raw_block(backend, actors, messages, nbytes)
        messages = max(1, math.ceil(messages * target / elapsed))
    return messages


def machine_line() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    library = " ".join(MPI.Get_library_version().splitlines()[0].split())
    return (
        f"machine: {model}, {MPI.Get_processor_name()} with "
        f"{os.cpu_count()} CPUs; Python {platform.python_version()}, "
        f"mpi4py {mpi4py.__version__}, {library}, "
        f"hpcrl {hpcrl.__version__}"
    )


def main() -> None:
    args = parse_args()
    from hpcrl.backends.mpi import MPIBackend  # worker ranks serve from here on

    backend = MPIBackend(timeout_s=max(120.0, 10 * args.seconds))
    actors = backend.spawn(BatchServer, args.rows, count=backend.max_actors())
    batch = make_batch(args.rows)
    nbytes = len(_pack(batch))
    payload = sum(column.nbytes for column in batch.values())
    print(machine_line())
    print(
        f"{len(actors)} worker rank(s) -> rank 0; batch of {args.rows} rows, {len(batch.keys())} "
        f"columns, {payload:,} bytes of arrays, {nbytes:,} bytes packed; "
        f"{args.in_flight} credits per worker"
    )

    stream_block(backend, actors, args.in_flight, min(0.5, args.seconds))  # warm-up
    messages = raw_messages_for(backend, actors, nbytes, args.seconds)
    hpcrl_rates, raw_rates = [], []
    for block in range(args.blocks):
        batches, elapsed = stream_block(backend, actors, args.in_flight, args.seconds)
        hpcrl_rates.append(batches / elapsed)
        batches, elapsed = raw_block(backend, actors, messages, nbytes)
        raw_rates.append(batches / elapsed)
        print(
            f"  block {block + 1}: hpcrl {rates(hpcrl_rates[-1], nbytes)}   "
            f"raw {rates(raw_rates[-1], nbytes)}   ratio {hpcrl_rates[-1] / raw_rates[-1]:.2f}"
        )
    hpcrl_median = statistics.median(hpcrl_rates)
    raw_median = statistics.median(raw_rates)
    ratio = hpcrl_median / raw_median
    print(f"median of {args.blocks} blocks of {args.seconds:g} s each:")
    print(f"  hpcrl backend.stream                : {rates(hpcrl_median, nbytes)}")
    print(f"  raw mpi4py Send -> Recv             : {rates(raw_median, nbytes)}")
    verdict = "PASS" if ratio >= args.target else "FAIL"
    print(f"  ratio hpcrl/raw {ratio:.2f} (target >= {args.target:g}) -> {verdict}")
    backend.shutdown()


def rates(batches_per_s: float, nbytes: int) -> str:
    return f"{batches_per_s:9,.0f} batches/s {batches_per_s * nbytes / 1e6:8,.1f} MB/s"


if __name__ == "__main__":
    main()
