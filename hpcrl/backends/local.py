"""The local backend: actors are plain objects in this process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpcrl.backends.base import Backend, CompletedFuture, Future


class LocalActor:
    """An actor living in the driver process, re-creatable from its arguments."""

    def __init__(self, index: int, role: str, cls: type, args: tuple, kwargs: dict) -> None:
        self.index = index
        self.role = role
        self._factory = (cls, args, kwargs)
        self.instance: Any = cls(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LocalActor({self.role} {self.index}: {type(self.instance).__name__})"


class LocalBackend(Backend):
    """Runs every call immediately in this process; futures are already done.

    Example:
        >>> backend = LocalBackend()
        >>> [actor] = backend.spawn(list, [1, 2], count=1)
        >>> backend.get(backend.call([actor], "__len__"))
        [2]
    """

    name = "local"

    def __init__(self) -> None:
        self.actors: list[LocalActor] = []

    def spawn(
        self, cls: type, *args: Any, count: int = 1, role: str = "worker", **kwargs: Any
    ) -> list[LocalActor]:
        new = [LocalActor(len(self.actors) + i, role, cls, args, kwargs) for i in range(count)]
        self.actors.extend(new)
        return new

    def call(
        self, actors: Sequence[LocalActor], method: str, *args: Any, **kwargs: Any
    ) -> list[Future]:
        return [
            CompletedFuture.run(
                f"local {actor.role} {actor.index}",
                getattr(actor.instance, method),
                *args,
                **kwargs,
            )
            for actor in actors
        ]

    def wait(
        self, futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Future], list[Future]]:
        return list(futures), []

    def kill(self, actor: LocalActor) -> None:
        stop = getattr(actor.instance, "stop", None)
        if stop is not None:
            stop()
        actor.instance = None

    def restart(self, actor: LocalActor) -> LocalActor:
        if actor.instance is not None:
            self.kill(actor)
        cls, args, kwargs = actor._factory
        actor.instance = cls(*args, **kwargs)
        return actor

    def shutdown(self) -> None:
        for actor in self.actors:
            if actor.instance is not None:
                self.kill(actor)
        self.actors.clear()
