"""The Dask backend contract, against a real LocalCluster (see tests/mpi/contract_script.py)."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from hpcrl.backends import RemoteError, WorkerLostError, WorkerTimeoutError, make_backend

distributed = pytest.importorskip("distributed")
from hpcrl.backends.dask import DaskBackend  # noqa: E402 - needs distributed


class Echo:
    def __init__(self, base: int) -> None:
        self.base = base
        self.weights = None

    def pid(self) -> int:
        return os.getpid()

    def add(self, x: int, scale: int = 1) -> int:
        return self.base + x * scale

    def set_base(self, base: int) -> None:
        self.base = base

    def set_weights(self, weights) -> None:
        self.weights = weights

    def checksum(self) -> float:
        return float(sum(v.sum() for p in self.weights.values() for v in p.values()))

    def batch(self, rows: int) -> dict:
        return {"obs": np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)}

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def fail(self) -> None:
        raise KeyError("worker failure")


@pytest.fixture(scope="module")
def backend(dask_cluster):
    backend = DaskBackend(dask_cluster.scheduler_address, timeout_s=60)
    yield backend
    backend.shutdown()


@pytest.fixture(scope="module")
def actors(backend):
    return backend.spawn(Echo, 10, count=2, role="echo")


def test_each_actor_has_a_dask_worker_process_of_its_own(backend, actors):
    pids = backend.get(backend.call(actors, "pid"))
    assert pids == [a.pid for a in actors] and len(set(pids)) == 2 and os.getpid() not in pids
    assert len({a.address for a in actors}) == 2
    assert [a.index for a in actors] == [1, 2]
    assert actors[0].describe().startswith(f"echo 1 (Dask worker {actors[0].address}, pid ")


def test_call_with_args_and_kwargs_and_numpy_results(backend, actors):
    assert backend.get(backend.call(actors, "add", 2, scale=3)) == [16, 16]
    batches = backend.get(backend.call(actors, "batch", 1000))
    assert all(b["obs"].shape == (1000, 4) and b["obs"][-1, -1] == 3999 for b in batches)


def test_broadcast_reaches_each_actor_once_applied(backend, actors):
    weights = {"p": {"w": np.ones((3, 4), np.float32), "b": np.arange(5, dtype=np.int64)}}
    backend.broadcast(actors, "set_weights", weights)
    assert backend.get(backend.call(actors, "checksum")) == [22.0, 22.0]
    backend.broadcast(actors[:1], "set_weights", {"p": {"w": np.zeros(2)}})
    assert backend.get(backend.call(actors, "checksum")) == [0.0, 22.0]
    backend.broadcast(actors, "set_base", 5)  # not arrays
    assert backend.get(backend.call(actors, "add", 0)) == [5, 5]
    backend.broadcast(actors, "set_base", 10)


def test_wait_returns_the_fast_call_first(backend, actors):
    slow = backend.call(actors[:1], "sleep", 1.0)[0]
    fast = backend.call(actors[1:], "sleep", 0.0)[0]
    done, pending = backend.wait([slow, fast], num_returns=1)
    assert done == [fast] and pending == [slow]
    assert backend.get([slow]) == [1.0]


def test_error_names_actor_and_worker_with_traceback(backend, actors):
    with pytest.raises(RemoteError) as info:
        backend.get(backend.call(actors[1:], "fail"))
    message = str(info.value)
    assert f"echo 2 (Dask worker {actors[1].address}, pid {actors[1].pid}) (fail)" in message
    assert "worker failure" in message and isinstance(info.value.cause, KeyError)
    assert "in fail" in info.value.remote_traceback and "KeyError" in info.value.remote_traceback
    assert backend.get(backend.call(actors[1:], "add", 1)) == [11]  # still serving


def test_timeout_names_the_actor(backend, actors):
    future = backend.call(actors[:1], "sleep", 1.0)[0]
    with pytest.raises(WorkerTimeoutError, match="echo 1 .* did not answer within 0.2s"):
        future.result(timeout=0.2)
    assert future.result() == 1.0


def test_no_free_dask_worker_is_a_clear_error(dask_cluster, actors):
    impatient = DaskBackend(dask_cluster.scheduler_address, timeout_s=1.0, verbose=False)
    try:
        with pytest.raises(WorkerTimeoutError, match=r"asked for 2 echo\(s\) but only 1 of the 3"):
            impatient.spawn(Echo, 0, count=2, role="echo")
    finally:
        impatient.shutdown()


def test_restart_and_kill(backend, actors):
    backend.get(backend.call(actors[:1], "set_base", 99))
    backend.restart(actors[0])
    assert backend.get(backend.call(actors[:1], "add", 0)) == [10]  # made anew
    [extra] = backend.spawn(Echo, 1, role="spare")
    address = extra.address
    backend.kill(extra)
    [again] = backend.spawn(Echo, 2, role="spare")
    assert again.address == address and backend.get(backend.call([again], "add", 0)) == [2]
    backend.kill(again)


class Stoppable:
    def __init__(self, path: str) -> None:
        self.path = path

    def stop(self) -> None:
        with open(self.path, "w") as file:
            file.write("stopped")


def test_kill_calls_the_actors_stop_and_an_actor_without_one_is_fine(backend, tmp_path):
    path = tmp_path / "stopped.txt"
    [stoppable] = backend.spawn(Stoppable, str(path), role="spare")
    backend.kill(stoppable)
    assert path.read_text() == "stopped"
    [plain] = backend.spawn(Echo, 3, role="spare")
    backend.kill(plain)  # Echo has no stop(): nothing to call, nothing raised


def test_lost_worker_is_named_with_the_reason_then_recreated(backend, actors):
    victim = actors[0]
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError) as info:
        backend.get(backend.call(actors, "add", 1))
    assert info.value.actor is victim and not backend.is_alive(victim)
    assert backend.is_alive(actors[1])
    message = str(info.value)
    assert f"echo 1 (Dask worker {victim.address}, pid {victim.pid}) was lost" in message
    assert "killed by signal 9" in message
    old_pid, restarts = victim.pid, victim.restarts
    backend.restart(victim)
    assert backend.is_alive(victim) and victim.pid != old_pid and victim.restarts == restarts + 1
    assert backend.get(backend.call(actors, "add", 1)) == [11, 11]


def test_joined_cluster_is_left_running(dask_cluster):
    joined = DaskBackend(dask_cluster.scheduler_address, verbose=False)
    [actor] = joined.spawn(Echo, 3)
    joined.shutdown()
    with distributed.Client(dask_cluster.scheduler_address) as client:
        assert len(client.nthreads()) == 3


def test_local_cluster_by_default_on_localhost_closed_at_shutdown(capsys):
    backend = DaskBackend(num_workers=1)
    out = capsys.readouterr().out
    assert "started a Dask LocalCluster, scheduler tcp://127.0.0.1:" in out
    assert "dashboard http://127.0.0.1:" in out
    actors = backend.spawn(Echo, 1, count=2)  # grows to one Dask worker per actor
    assert len({a.address for a in actors}) == 2
    assert all(a.address.startswith("tcp://127.0.0.1:") for a in actors)
    address = backend.address
    backend.shutdown()
    with pytest.raises(OSError):
        distributed.Client(address, timeout=1)


def test_bad_address_and_wrong_backend_are_clear_errors():
    with pytest.raises(ConnectionError, match="could not connect to the Dask scheduler"):
        DaskBackend("tcp://127.0.0.1:9", timeout_s=1.0)
    with pytest.raises(ValueError, match="set backend='dask'"):
        make_backend("local", {"dask_address": "tcp://127.0.0.1:8786"})


def test_stream_contract(backend, actors):
    from stream_contract import Ticker, check_stream_contract

    [ticker] = backend.spawn(Ticker, count=1)  # the module's third Dask worker
    try:
        check_stream_contract(backend, [ticker])
    finally:
        backend.kill(ticker)


def test_allgather_contract(dask_cluster, backend, actors):
    from allgather_contract import Peer, check_allgather_contract

    dask_cluster.scale(len(dask_cluster.worker_spec) + 2)  # a Dask worker for each peer
    peers = backend.spawn(Peer, count=2)
    try:
        check_allgather_contract(backend, peers)
    finally:
        for peer in peers:
            backend.kill(peer)
