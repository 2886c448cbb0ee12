"""What every backend's ``stream`` must do, checked the same way on local, Dask and MPI.

``check_stream_contract(backend, actors)`` takes actors made with
``backend.spawn(Ticker, ...)`` (at least one) and raises AssertionError on the
first broken promise. Used by tests/backends, tests/dask and, under mpiexec,
tests/mpi/contract_script.py.
"""

from __future__ import annotations

import time

from hpcrl.backends.base import RemoteError


class Ticker:
    """An actor whose stream method counts its own runs."""

    def __init__(self) -> None:
        self.runs = 0
        self.base = 0
        self.fail_on = -1

    def tick(self) -> int:
        self.runs += 1
        if self.runs == self.fail_on:
            raise ValueError(f"tick {self.runs} failed")
        return self.base + self.runs

    def set_base(self, base: int) -> None:
        self.base = base

    def fail_on_run(self, run: int) -> None:
        self.fail_on = run

    def count(self) -> int:
        return self.runs


def take_all(stream, count: int, timeout: float = 30.0) -> list:
    """``count`` items from ``stream`` (fails after ``timeout`` seconds)."""
    items = []
    deadline = time.monotonic() + timeout
    while len(items) < count:
        assert time.monotonic() < deadline, f"only {len(items)} of {count} items came"
        items += stream.take(timeout=1.0)
    assert len(items) == count, f"{len(items)} items for {count} credits"
    return items


def check_stream_contract(backend, actors) -> None:
    first = actors[:1]
    stream = backend.stream(first, "tick")
    assert stream.take(timeout=0.2) == [], "an actor ran without credits"

    # each credit is one run, in order; no run beyond the credits (back-pressure)
    stream.grant(0, 3)
    items = take_all(stream, 3)
    assert [(i, f.result()) for i, f in items] == [(0, 1), (0, 2), (0, 3)], items
    assert stream.in_flight(0) == 0
    time.sleep(0.3)
    assert stream.take(timeout=0.2) == []
    assert backend.get(backend.call(first, "count")) == [3], "the actor ran ahead of its credits"

    # a call made before a grant runs before the run that credit allows
    backend.call(first, "set_base", 100)
    stream.grant(0)
    assert stream.in_flight(0) == 1
    [(_, future)] = take_all(stream, 1)
    assert future.result() == 104

    # a failing run comes back as a RemoteError naming the method; the stream goes on
    backend.get(backend.call(first, "fail_on_run", 5))
    stream.grant(0, 2)
    failed, after = (future for _, future in take_all(stream, 2))
    try:
        failed.result()
    except RemoteError as err:
        assert "tick" in str(err) and "tick 5 failed" in str(err), err
    else:
        raise AssertionError("the failed run did not raise")
    assert after.result() == 106

    # close() drops the results under way; ordinary calls and new streams still work
    stream.grant(0, 2)
    stream.close(timeout=30.0)
    runs = backend.get(backend.call(first, "count"))[0]
    assert 6 <= runs <= 8, runs
    again = backend.stream(actors, "tick")
    for index in range(len(actors)):
        again.grant(index, 2)
    items = take_all(again, 2 * len(actors))
    for index in range(len(actors)):
        mine = [f.result() for i, f in items if i == index]
        assert len(mine) == 2 and mine[1] == mine[0] + 1, (index, mine)

    # reset() forgets an actor's credits; granting again starts it anew
    again.grant(0)
    again.reset(0)
    assert again.in_flight(0) == 0
    again.grant(0)
    [(index, future)] = [item for item in take_all(again, 1, timeout=30.0)]
    assert index == 0 and isinstance(future.result(), int)
    again.close(timeout=30.0)
