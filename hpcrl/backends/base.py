"""The backend interface: how the driver starts actors and talks to them.

Optimizers and worker sets are written once against this interface; each
backend (local, dask, mpi) carries the calls out with its own engine.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any


class RemoteError(RuntimeError):
    """An exception raised inside an actor, with where it ran and its traceback."""

    def __init__(self, where: str, error: BaseException | str, remote_traceback: str) -> None:
        self.where = where
        self.remote_traceback = remote_traceback
        self.cause = error
        super().__init__(f"{where} raised {error!r}\n--- remote traceback ---\n{remote_traceback}")


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
    - ``kill(actor)``, ``restart(actor)``, ``shutdown()``.
    """

    name = "abstract"

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

    def max_actors(self) -> int | None:
        """How many actors this backend can hold (None: no fixed limit)."""
        return None

    def check_capacity(self, count: int, role: str = "worker") -> None:
        """Raise ValueError, saying how to fix it, if ``count`` more actors do not fit."""

    def kill(self, actor: Any) -> None:
        raise NotImplementedError("abstract")

    def restart(self, actor: Any) -> Any:
        raise NotImplementedError("abstract")

    def shutdown(self) -> None:
        """Stop every actor this backend started."""
