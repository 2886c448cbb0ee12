"""The backend interface: how the driver starts actors and talks to them.

Optimizers and worker sets are written once against this interface; each
backend (local, dask, mpi) carries the calls out with its own engine.
"""

from __future__ import annotations

import functools
import pickle
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

# Slurm's warning signals before it ends a job: a trainer checkpoints and exits on
# them (hpcrl.tune.preemption); an MPI worker rank leaves them to its driver. Defined
# here, below both, so that a backend does not import the experiment layer.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

# ``Backend.reduce``'s combining function: ``op(a, b)`` of two arrays shaped and typed
# alike, returning another such array; associative and commutative (up to float
# rounding), with the reduction's ``identity`` as neutral element. A picklable object
# (a module-level function or class instance): under MPI every rank runs it.
ReduceOp = Callable[[np.ndarray, np.ndarray], np.ndarray]


class RemoteError(RuntimeError):
    """An exception raised inside an actor, with where it ran and its traceback."""

    def __init__(self, where: str, error: BaseException | str, remote_traceback: str) -> None:
        self.where = where
        self.remote_traceback = remote_traceback
        self.cause = error
        super().__init__(f"{where} raised {error!r}\n--- remote traceback ---\n{remote_traceback}")


class WorkerLostError(RemoteError):
    """An actor's process died or its node left: the actor and its state are gone.

    Raised by backends that outlive a lost worker process (dask); ``WorkerSet``
    re-creates the actor (see ``recreate_failed_workers``). ``where`` names the
    actor and where it ran, ``reason`` says what happened to it.
    """

    def __init__(self, where: str, reason: str, actor: Any = None) -> None:
        self.where = where
        self.reason = reason
        self.actor = actor
        self.remote_traceback = ""
        self.cause = reason
        RuntimeError.__init__(self, f"{where} was lost: {reason}")


class WorkerTimeoutError(RuntimeError):
    """An actor did not answer a call within the backend's timeout."""

    @classmethod
    def for_calls(cls, where: str, timeout: float, methods: Iterable[str]) -> WorkerTimeoutError:
        """The error for calls of ``methods`` unanswered at ``where`` after ``timeout`` s."""
        return cls(
            f"{where} did not answer within {timeout:g}s (calls: {sorted(set(methods))}); "
            "raise worker_timeout_s if they are just slow"
        )


def picklable_error(err: BaseException) -> BaseException | str:
    """The exception if it survives a pickle round trip (to send it to the driver),
    else its repr: some exceptions pickle but do not unpickle (e.g. ones with
    required keyword arguments), which would fail on the driver instead."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - anything pickle cannot do
        return repr(err)


class Future:
    """The result of one actor call; ``done()``, ``result()``."""

    def done(self) -> bool:
        raise NotImplementedError("abstract")

    def result(self, timeout: float | None = None) -> Any:
        raise NotImplementedError("abstract")


class CompletedFuture(Future):
    """A future whose value (or error) is already known."""

    def __init__(self, value: Any = None, error: RemoteError | None = None) -> None:
        self._value = value
        self._error = error

    @classmethod
    def run(cls, where: str, fn: Any, *args: Any, **kwargs: Any) -> CompletedFuture:
        """Call ``fn`` now, capturing its value or its exception and traceback."""
        try:
            return cls(fn(*args, **kwargs))
        except Exception as err:  # noqa: BLE001 - handed to the caller at result()
            return cls(error=RemoteError(where, err, traceback.format_exc()))

    def done(self) -> bool:
        return True

    def result(self, timeout: float | None = None) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class Backend:
    """Starts actors and calls their methods.

    - ``spawn(cls, *args, count, role, **kwargs)`` creates ``count`` actors.
    - ``call(actors, method, *args, **kwargs)`` makes the same call on each
      actor and returns one future per actor.
    - ``wait(futures, num_returns, timeout)`` returns ``(done, not_done)``.
    - ``get(futures)`` returns the results in order (raising ``RemoteError``).
    - ``broadcast(actors, method, payload)`` calls ``method(payload)`` on every
      actor, serialising ``payload`` once.
    - ``reduce(actors, method, op, identity, *args, **kwargs)`` calls ``method`` on
      every actor and combines the arrays they return with ``op`` into one (under
      MPI one ``Reduce``, not a message per actor).
    - ``allgather(actors, method, *args, then=(name, then_args), **kwargs)`` calls
      ``method`` on every actor and hands every actor (and the caller) the list of
      all their results (under MPI one ``allgather`` over the ranks).
    - ``stream(actors, method, *args, **kwargs)``: the actors run ``method`` over
      and over and push each result to the driver as it is ready, within the
      credits the driver grants (see ``Stream``).
    - ``kill(actor)``, ``restart(actor)``, ``shutdown()``.
    - ``is_alive(actor)``: False once the actor's process is known to be gone
      (calls to it raise ``WorkerLostError``; ``restart`` makes it anew).
    """

    name = "abstract"
    # True where an actor's process can be lost while the job goes on (Dask), so that
    # callers which re-create lost actors take results call by call, not from a
    # collective (an MPI job ends with any rank).
    loses_actors = False

    def spawn(
        self, cls: type, *args: Any, count: int = 1, role: str = "worker", **kwargs: Any
    ) -> list[Any]:
        raise NotImplementedError("abstract")

    def call(self, actors: Sequence[Any], method: str, *args: Any, **kwargs: Any) -> list[Future]:
        raise NotImplementedError("abstract")

    def wait(
        self, futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Future], list[Future]]:
        raise NotImplementedError("abstract")

    def get(self, futures: Sequence[Future]) -> list[Any]:
        return [f.result() for f in futures]

    def broadcast(self, actors: Sequence[Any], method: str, payload: Any) -> None:
        self.get(self.call(actors, method, payload))

    def reduce(
        self,
        actors: Sequence[Any],
        method: str,
        op: ReduceOp,
        identity: np.ndarray,
        *args: Any,
        **kwargs: Any,
    ) -> np.ndarray:
        """``method(*args, **kwargs)`` on each actor, the arrays they return (each shaped
        and typed like ``identity``) combined by ``op`` into one, which is returned.

        This default gets every result and combines them here, in actor order;
        the MPI backend does it in one ``Reduce`` over the ranks.

        Example:
            >>> from hpcrl.backends.local import LocalBackend
            >>> backend = LocalBackend()
            >>> actors = backend.spawn(np.ones, 3, count=2)
            >>> backend.reduce(actors, "copy", np.add, np.zeros(3)).tolist()
            [2.0, 2.0, 2.0]
        """
        results = self.get(self.call(actors, method, *args, **kwargs))
        return functools.reduce(op, results, np.asarray(identity))

    def allgather(
        self,
        actors: Sequence[Any],
        method: str,
        *args: Any,
        then: tuple[str, tuple] | None = None,
        **kwargs: Any,
    ) -> list[Any]:
        """``method(*args, **kwargs)`` on each actor; the list of their results, in
        actor order, is returned, and with ``then = (name, then_args)`` every actor
        also runs ``actor.name(*then_args, results)`` on that same list.

        This is the exchange of the SPMD algorithms (ES, ARS): each actor
        contributes a few numbers and every process gets all of them. This
        default gets the results here and sends them back in a second call,
        waiting for it; the MPI backend does it in one ``allgather`` over the
        ranks, and the actors' ``then`` runs with no message from the driver.

        Raises:
            RemoteError: ``method`` failed on an actor (then no actor runs
                ``then``), or ``then`` failed (here, or under MPI at the next wait
                for results or the next ``allgather``); it names the actor.

        Example:
            >>> from hpcrl.backends.local import LocalBackend
            >>> backend = LocalBackend()
            >>> actors = backend.spawn(list, count=2)
            >>> backend.allgather(actors, "__len__", then=("append", ()))
            [0, 0]
            >>> backend.get(backend.call(actors, "pop"))
            [[0, 0], [0, 0]]
        """
        results = self.get(self.call(actors, method, *args, **kwargs))
        if then is not None:
            name, then_args = then
            self.get(self.call(actors, name, *then_args, results))
        return results

    def stream(self, actors: Sequence[Any], method: str, *args: Any, **kwargs: Any) -> Stream:
        """A ``Stream`` of ``method(*args, **kwargs)`` results from each of ``actors``.

        Nothing runs until credits are granted (``Stream.grant``). This default
        keeps one queued call per credit (``call``/``wait``); the MPI backend
        streams for real (the worker rank sends each result unasked).
        """
        return CallStream(self, actors, method, args, kwargs)

    def max_actors(self) -> int | None:
        """How many actors this backend can hold (None: no fixed limit)."""
        return None

    def default_num_workers(self) -> int:
        """Rollout workers to start when the config leaves ``num_workers`` unset."""
        return self.max_actors() or 0

    def is_alive(self, actor: Any) -> bool:
        """False once the backend knows ``actor``'s process is gone (see ``WorkerLostError``)."""
        return True

    def check_capacity(self, count: int, role: str = "worker") -> None:
        """Raise ValueError, saying how to fix it, if ``count`` more actors do not fit."""

    def kill(self, actor: Any) -> None:
        raise NotImplementedError("abstract")

    def restart(self, actor: Any) -> Any:
        raise NotImplementedError("abstract")

    def shutdown(self) -> None:
        """Stop every actor this backend started."""


class Stream:
    """Results of one method that each actor runs over and over, pushed as they come.

    Flow control is by credits: an actor runs the method only while it holds a
    credit, and each result uses one. The driver grants an actor its first
    credits, then one more each time it has taken one of its results, so an
    actor never has more results produced or under way than it was granted
    (back-pressure: a fast actor cannot fill the driver's memory). Calls made
    to an actor with ``Backend.call`` between results run in the order sent,
    between two runs of the method.

    Actors are named by their index in ``actors``.

    Example:
        >>> from hpcrl.backends.local import LocalBackend
        >>> backend = LocalBackend()
        >>> actors = backend.spawn(iter, [10, 20, 30], count=2)
        >>> stream = backend.stream(actors, "__next__")
        >>> stream.grant(0, 2); stream.grant(1)
        >>> [(i, f.result()) for i, f in stream.take(timeout=1.0)]
        [(0, 10), (0, 20), (1, 10)]
        >>> stream.close()
    """

    def __init__(self, actors: Sequence[Any], method: str) -> None:
        self.actors = list(actors)
        self.method = method

    def grant(self, index: int, credits: int = 1) -> None:
        """Actor ``index`` may produce ``credits`` more results."""
        raise NotImplementedError("abstract")

    def take(self, timeout: float) -> list[tuple[int, Future]]:
        """The results that have arrived, as ``(actor index, done future)`` in the order
        each actor produced them; waits up to ``timeout`` seconds for the first one
        (empty list if none came). A future raises ``RemoteError`` if the method
        failed there (``WorkerLostError`` if the actor's process is gone)."""
        raise NotImplementedError("abstract")

    def in_flight(self, index: int) -> int:
        """Credits of actor ``index`` whose results have not been taken yet."""
        raise NotImplementedError("abstract")

    def reset(self, index: int) -> None:
        """Actor ``index`` was re-created: forget its credits and results in flight."""
        raise NotImplementedError("abstract")

    def close(self, timeout: float = 60.0) -> None:
        """Stop every actor's stream; wait up to ``timeout`` seconds for the results
        under way and drop them (their failures included)."""
        raise NotImplementedError("abstract")


class CallStream(Stream):
    """A ``Stream`` made of ordinary calls: one queued ``method`` call per credit.

    An actor runs its calls in order, so with two or more credits it finds its
    next call waiting when it finishes one and never waits for the driver; the
    price is one request message per result. Used by the local and Dask
    backends (on Dask: actor futures, waited on together).
    """

    def __init__(
        self, backend: Backend, actors: Sequence[Any], method: str, args: tuple, kwargs: dict
    ) -> None:
        super().__init__(actors, method)
        self.backend = backend
        self.args = args
        self.kwargs = kwargs
        self._calls: list[deque[Future]] = [deque() for _ in self.actors]

    def grant(self, index: int, credits: int = 1) -> None:
        actor = [self.actors[index]]
        for _ in range(credits):
            self._calls[index].extend(
                self.backend.call(actor, self.method, *self.args, **self.kwargs)
            )

    def take(self, timeout: float) -> list[tuple[int, Future]]:
        oldest = [calls[0] for calls in self._calls if calls]
        if not oldest:
            return []
        done, _ = self.backend.wait(oldest, num_returns=1, timeout=timeout)
        if not done:
            return []
        items = []
        for index, calls in enumerate(self._calls):
            while calls and calls[0].done():
                items.append((index, _settled(self.backend, calls.popleft())))
        return items

    def in_flight(self, index: int) -> int:
        return len(self._calls[index])

    def reset(self, index: int) -> None:
        self._drop(list(self._calls[index]), timeout=0.0)
        self._calls[index].clear()

    def close(self, timeout: float = 60.0) -> None:
        futures = [f for calls in self._calls for f in calls]
        self._drop(futures, timeout)
        for calls in self._calls:
            calls.clear()

    def _drop(self, futures: list[Future], timeout: float) -> None:
        if not futures:
            return
        done, _ = self.backend.wait(futures, num_returns=len(futures), timeout=timeout)
        for future in done:
            _settled(self.backend, future)


def _settled(backend: Backend, future: Future) -> CompletedFuture:
    """A done future's value or error, held in a ``CompletedFuture``."""
    try:
        [value] = backend.get([future])
    except RemoteError as err:
        return CompletedFuture(error=err)
    return CompletedFuture(value)
