"""What every backend's ``allgather`` must do, checked the same way on local, Dask and MPI.

``check_allgather_contract(backend, actors)`` takes actors made with
``backend.spawn(Peer, ...)`` (at least two) and raises AssertionError on the
first broken promise. Used by tests/backends, tests/dask and, under mpiexec,
tests/mpi/contract_script.py.
"""

from __future__ import annotations

from hpcrl.backends.base import RemoteError


class Peer:
    """An actor that contributes a number and keeps what every peer contributed."""

    def __init__(self) -> None:
        self.ident = -1
        self.seen: list[list] = []

    def set_ident(self, ident: int) -> None:
        self.ident = ident

    def share(self, scale: int, fail: int = -1) -> dict:
        if self.ident == fail:
            raise ValueError(f"peer {self.ident} cannot share")
        return {"ident": self.ident, "value": self.ident * scale}

    def receive(self, tag: str, results: list) -> None:
        if tag == "fail":
            raise KeyError(f"peer {self.ident} refuses the results")
        self.seen.append([tag, results])

    def history(self) -> list[list]:
        return self.seen


def check_allgather_contract(backend, actors) -> None:
    assert len(actors) >= 2, "the contract needs two peers"
    for ident, actor in enumerate(actors):
        backend.get(backend.call([actor], "set_ident", ident))
    expected = [{"ident": i, "value": 3 * i} for i in range(len(actors))]

    # results in actor order, returned, and handed to every actor's `then`
    assert backend.allgather(actors, "share", 3, then=("receive", ("first",))) == expected
    for history in backend.get(backend.call(actors, "history")):
        assert history == [["first", expected]], history

    # actor order is the caller's, not the ranks' or the creation order
    backwards = list(reversed(actors))
    assert backend.allgather(backwards, "share", 1) == [
        {"ident": i, "value": i} for i in reversed(range(len(actors)))
    ]

    # a subset: only its actors contribute and run `then`
    subset = [{"ident": i, "value": 2 * i} for i in range(1, len(actors))]
    assert backend.allgather(actors[1:], "share", 2, then=("receive", ("sub",))) == subset
    histories = backend.get(backend.call(actors, "history"))
    assert len(histories[0]) == 1 and all(len(h) == 2 for h in histories[1:]), histories

    # a failing contribution is raised naming where, and no actor runs `then`
    try:
        backend.allgather(actors, "share", 1, fail=1, then=("receive", ("never",)))
    except RemoteError as err:
        assert "peer 1 cannot share" in str(err) and "share" in str(err), err
    else:
        raise AssertionError("the failed contribution was not raised")
    histories = backend.get(backend.call(actors, "history"))
    assert all(h[-1][0] != "never" for h in histories), histories

    # a failing `then` is raised (here, or under MPI by the next wait for results or
    # the next allgather)
    for after in ("call", "allgather"):
        try:
            backend.allgather(actors[:1], "share", 1, then=("receive", ("fail",)))
            if after == "call":
                backend.get(backend.call(actors, "history"))
            else:
                backend.allgather(actors, "share", 1)
                backend.allgather(actors, "share", 1)
        except RemoteError as err:
            assert "refuses the results" in str(err) and "receive" in str(err), err
        else:
            raise AssertionError(f"the failed `then` was not raised (by the next {after})")

    # every actor still serves
    assert backend.allgather(actors, "share", 3) == expected
