"""Backends: where actors run (local process; Dask and MPI are imported on demand)."""

from __future__ import annotations

from typing import Any

from hpcrl.backends.base import Backend, CompletedFuture, Future, RemoteError
from hpcrl.backends.local import LocalBackend

BACKENDS = ("local",)


def make_backend(name: str, config: dict[str, Any] | None = None) -> Backend:
    """The backend called ``name``.

    Raises:
        ValueError: an unknown name, listing the available ones.
    """
    if name == "local":
        return LocalBackend()
    raise ValueError(f"unknown backend {name!r}; available backends: {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "Backend",
    "CompletedFuture",
    "Future",
    "LocalBackend",
    "RemoteError",
    "make_backend",
]
