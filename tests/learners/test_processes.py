"""ProcessBackend: actors in child processes (how the local backend runs K > 1 learners)."""

from __future__ import annotations

import os
import signal

import pytest

from hpcrl.backends.base import RemoteError
from hpcrl.learners.processes import ProcessBackend


class Counter:
    def __init__(self, start: int) -> None:
        self.value = start

    def add(self, amount: int) -> int:
        self.value += amount
        return self.value

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise KeyError("no such thing")


@pytest.fixture
def backend():
    backend = ProcessBackend()
    yield backend
    backend.shutdown()


def test_broadcast_reaches_every_actor_and_raises_their_failures(backend):
    actors = backend.spawn(Counter, 0, count=2, role="counter")
    backend.broadcast(actors, "add", 5)
    assert backend.get(backend.call(actors, "add", 0)) == [5, 5]
    with pytest.raises(RemoteError, match="add"):
        backend.broadcast(actors, "add", "not a number")


def test_calls_run_in_order_in_another_process(backend):
    [actor] = backend.spawn(Counter, 10, role="counter")
    futures = [backend.call([actor], "add", i)[0] for i in range(1, 4)]
    done, pending = backend.wait(futures, num_returns=3, timeout=30)
    assert len(done) == 3 and not pending
    assert backend.get(futures) == [11, 13, 16]
    assert backend.get(backend.call([actor], "pid")) != [os.getpid()]


def test_an_actor_error_comes_back_with_where_and_traceback(backend):
    [actor] = backend.spawn(Counter, 0, role="counter")
    with pytest.raises(RemoteError) as caught:
        backend.get(backend.call([actor], "fail"))
    assert caught.value.where.startswith("local counter process ")
    assert "(fail)" in caught.value.where
    assert "in fail" in caught.value.remote_traceback
    assert backend.get(backend.call([actor], "add", 1)) == [1]  # the actor lives on


def test_a_killed_process_fails_its_calls_saying_how_it_ended(backend):
    [actor] = backend.spawn(Counter, 0, role="counter")
    os.kill(actor.process.pid, signal.SIGKILL)
    with pytest.raises(RemoteError, match="exited with code -9"):
        backend.get(backend.call([actor], "add", 1))


def test_classes_made_at_run_time_go_by_value(backend):
    offset = 100

    class Local:
        def value(self) -> int:
            return offset

    [actor] = backend.spawn(Local)
    assert backend.get(backend.call([actor], "value")) == [100]


def test_a_failing_constructor_is_an_error_of_spawn(backend):
    with pytest.raises(RemoteError, match="__spawn__"):
        backend.spawn(Counter, role="counter")  # start is missing
