"""Backends: where actors run (local process; Dask and MPI are imported on demand)."""

from __future__ import annotations

from typing import Any

from hpcrl.backends.base import Backend, CompletedFuture, Future, RemoteError
from hpcrl.backends.local import LocalBackend

BACKENDS = ("local", "mpi")


def make_backend(name: str, config: dict[str, Any] | None = None) -> Backend:
    """The backend called ``name`` ("local" or "mpi"); mpi4py is imported only for "mpi".

    Under "mpi", on every rank but 0 this call serves actors and never returns.

    Raises:
        ValueError: an unknown name, listing the available ones.
    """
    config = config or {}
    if name == "local":
        return LocalBackend()
    if name == "mpi":
        from hpcrl.backends.mpi import MPIBackend

        return MPIBackend(
            timeout_s=config.get("worker_timeout_s"),
            num_torch_threads=config.get("num_torch_threads"),
        )
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
