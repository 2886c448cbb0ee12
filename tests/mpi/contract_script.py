"""The MPI backend contract, run under mpiexec by tests/mpi/test_mpi_backend.py.

Every rank runs this script; ranks other than 0 serve actors inside
``MPIBackend()`` and exit there. Rank 0 checks the contract and prints
``CONTRACT OK``. Assertions depend only on the number of ranks.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from hpcrl.backends.base import RemoteError
from hpcrl.backends.mpi import MPIBackend, WorkerTimeoutError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the stream contract
from allgather_contract import Peer, check_allgather_contract  # noqa: E402
from stream_contract import Ticker, check_stream_contract  # noqa: E402


class Echo:
    def __init__(self, base: int) -> None:
        self.base = base
        self.weights = None

    def where(self) -> tuple[int, int]:
        from mpi4py import MPI

        return MPI.COMM_WORLD.Get_rank(), self.base

    def add(self, x: int, scale: int = 1) -> int:
        return self.base + x * scale

    def set_weights(self, weights: dict) -> None:
        self.weights = weights

    def checksum(self) -> float:
        return float(sum(v.sum() for p in self.weights.values() for v in p.values()))

    def batch(self, rows: int) -> dict:
        return {"obs": np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)}

    def vector(self, size: int) -> np.ndarray:
        return np.full(size, float(self.base))

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def set_note(self, note: object) -> None:
        self.note = note

    def get_note(self) -> object:
        return self.note

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise KeyError("worker failure")


def main() -> None:
    backend = MPIBackend(timeout_s=30)
    workers = backend.max_actors()
    actors = backend.spawn(Echo, 10, count=workers, role="echo")
    ranks = backend.get(backend.call(actors, "where"))
    assert sorted(r for r, _ in ranks) == list(range(1, workers + 1)), ranks

    # call with args and kwargs, results in actor order
    assert backend.get(backend.call(actors, "add", 2, scale=3)) == [16] * workers

    # numpy payloads come back intact
    batches = backend.get(backend.call(actors, "batch", 1000))
    assert all(b["obs"].shape == (1000, 4) and b["obs"][-1, -1] == 3999 for b in batches)

    # broadcast of weights (dict of dicts of arrays): packed once, one Bcast
    weights = {"p": {"w": np.ones((3, 4), np.float32), "b": np.arange(5, dtype=np.int64)}}
    backend.broadcast(actors, "set_weights", weights)
    assert backend.get(backend.call(actors, "checksum")) == [22.0] * workers
    # to a subset
    backend.broadcast(actors[:1], "set_weights", {"p": {"w": np.zeros(2)}})
    sums = backend.get(backend.call(actors, "checksum"))
    assert sums[0] == 0.0 and sums[1:] == [22.0] * (workers - 1), sums
    # a structured array keeps its fields
    records = np.array([(1.5, 2)], dtype=[("x", "<f4"), ("y", "<i8")])
    backend.broadcast(actors, "set_note", {"p": {"records": records}})
    for got in backend.get(backend.call(actors, "get_note")):
        assert got["p"]["records"].dtype == records.dtype, got["p"]["records"].dtype
        assert got["p"]["records"]["y"].tolist() == [2]
    # the driver keeps no record of broadcasts, which answer only a failure
    for _ in range(50):
        backend.broadcast(actors, "set_weights", weights)
    assert backend.get(backend.call(actors, "checksum")) == [22.0] * workers
    assert not backend._pending and not backend._results, (backend._pending, backend._results)
    # a broadcast that fails to apply is raised by the next wait, naming rank and method
    backend.broadcast(actors[-1:], "fail", None)
    try:
        backend.get(backend.call(actors[-1:], "add", 0))
    except RemoteError as err:
        assert f"MPI rank {workers} (fail)" in str(err) and "TypeError" in str(err), err
    else:
        raise AssertionError("the failed broadcast was not raised")
    assert backend.get(backend.call(actors, "checksum")) == [22.0] * workers
    # any other payload goes the same way
    note = {"lr": 0.1, "ids": [1, 2], "table": np.arange(3)}
    backend.broadcast(actors, "set_note", note)
    for got in backend.get(backend.call(actors, "get_note")):
        assert got["lr"] == 0.1 and got["ids"] == [1, 2] and got["table"].tolist() == [0, 1, 2]
    backend.broadcast(actors, "set_note", {"lr": 0.2})  # no arrays: a message of bytes
    assert backend.get(backend.call(actors, "get_note")) == [{"lr": 0.2}] * workers

    # reduce: the actors' arrays combined in one Reduce; ranks not asked add the identity
    assert backend.reduce(actors, "vector", np.add, np.zeros(3), 3).tolist() == [10.0 * workers] * 3
    assert backend.reduce(actors[:1], "vector", np.maximum, np.zeros(2), 2).tolist() == [10.0] * 2
    # a rank that fails is left out of the result and named in the error, as is a wrong shape
    for method, args, message in (("fail", (), "worker failure"), ("vector", (5,), "shape (5,)")):
        try:
            backend.reduce(actors, method, np.add, np.zeros(3), *args)
        except RemoteError as err:
            assert f"({method})" in str(err) and message in str(err), err
        else:
            raise AssertionError(f"the failed reduce of {method} was not raised")
    assert backend.get(backend.call(actors, "add", 0)) == [10] * workers

    # worker ranks leave SIGTERM and SIGUSR1 (Slurm's warnings) to the driver
    for pid in backend.get(backend.call(actors, "pid")):
        os.kill(pid, signal.SIGUSR1)
        os.kill(pid, signal.SIGTERM)
    time.sleep(0.2)
    assert backend.get(backend.call(actors, "add", 0)) == [10] * workers

    # wait for any: the fast one comes back first
    if workers >= 2:
        slow = backend.call(actors[:1], "sleep", 1.0)[0]
        fast = backend.call(actors[1:2], "sleep", 0.0)[0]
        done, pending = backend.wait([slow, fast], num_returns=1)
        assert done == [fast] and pending == [slow], (done, pending)
        assert backend.get([slow]) == [1.0]

    # an error names the rank and carries the traceback; the worker keeps serving
    try:
        backend.get(backend.call(actors[-1:], "fail"))
    except RemoteError as err:
        assert f"MPI rank {workers}" in str(err) and "worker failure" in str(err)
        assert "KeyError" in err.remote_traceback
    else:
        raise AssertionError("no RemoteError")
    assert backend.get(backend.call(actors[-1:], "add", 1)) == [11]

    # a call that takes longer than the timeout is reported, not waited on forever
    future = backend.call(actors[:1], "sleep", 2.0)[0]
    try:
        future.result(timeout=0.2)
    except WorkerTimeoutError as err:
        assert "MPI rank(s) [1]" in str(err)
    else:
        raise AssertionError("no WorkerTimeoutError")

    # asking for more actors than ranks is a clear error
    try:
        backend.spawn(Echo, 0, count=1)
    except ValueError as err:
        assert "so 0 free worker rank(s)" in str(err), err
    else:
        raise AssertionError("spawn beyond the ranks succeeded")

    # restart re-creates the actor on its rank
    backend.get(backend.call(actors[:1], "set_weights", {"p": {"w": np.zeros(1)}}))
    backend.restart(actors[0])
    assert backend.get(backend.call(actors[:1], "where")) == [(actors[0].rank, 10)]

    # allgather: one collective over the ranks; every peer rank runs `then` itself
    for actor in actors:
        backend.kill(actor)  # every rank serves an actor: free them
    if workers >= 2:
        peers = backend.spawn(Peer, count=workers)
        check_allgather_contract(backend, peers)
        for peer in peers:
            backend.kill(peer)

    # streams: worker ranks send results unasked, within their credits
    tickers = backend.spawn(Ticker, count=1)
    check_stream_contract(backend, tickers)
    # a stream left open is closed by shutdown
    backend.stream(tickers, "tick").grant(0, 2)

    backend.shutdown()  # collects the sleeping call's answer, then releases the ranks
    print("CONTRACT OK", flush=True)


if __name__ == "__main__":
    main()
