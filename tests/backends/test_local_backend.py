from __future__ import annotations

import pytest

from hpcrl.backends import LocalBackend, RemoteError, make_backend


class Counter:
    def __init__(self, start=0):
        self.value = start
        self.stopped = False

    def add(self, n):
        self.value += n
        return self.value

    def fail(self):
        raise KeyError("boom")

    def stop(self):
        self.stopped = True


def test_spawn_call_get_broadcast():
    backend = LocalBackend()
    actors = backend.spawn(Counter, 10, count=3)
    assert len(actors) == 3
    futures = backend.call(actors, "add", 2)
    done, pending = backend.wait(futures, num_returns=1)
    assert len(done) == 3 and pending == []
    assert backend.get(futures) == [12, 12, 12]
    backend.broadcast(actors, "add", 5)
    assert backend.get(backend.call(actors, "add", 0)) == [17, 17, 17]


def test_errors_carry_where_and_traceback():
    backend = LocalBackend()
    [actor] = backend.spawn(Counter, role="rollout worker")
    [future] = backend.call([actor], "fail")
    with pytest.raises(RemoteError) as info:
        future.result()
    assert "rollout worker 0" in str(info.value)
    assert "KeyError" in info.value.remote_traceback and "boom" in str(info.value)


def test_kill_and_restart_recreate_the_actor():
    backend = LocalBackend()
    [actor] = backend.spawn(Counter, 1)
    backend.get(backend.call([actor], "add", 4))
    old = actor.instance
    backend.restart(actor)
    assert old.stopped and backend.get(backend.call([actor], "add", 0)) == [1]
    backend.shutdown()
    assert old.stopped and backend.actors == []


def test_unknown_backend_lists_available():
    with pytest.raises(ValueError, match="available backends: local"):
        make_backend("spark")


def test_stream_contract():
    from stream_contract import Ticker, check_stream_contract

    backend = LocalBackend()
    check_stream_contract(backend, backend.spawn(Ticker, count=2))


def test_allgather_contract():
    from allgather_contract import Peer, check_allgather_contract

    backend = LocalBackend()
    check_allgather_contract(backend, backend.spawn(Peer, count=3))
