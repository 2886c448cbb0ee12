"""Backends: where actors run (local process; Dask and MPI are imported on demand)."""

from __future__ import annotations

from typing import Any

from hpcrl.backends.base import (
    Backend,
    CompletedFuture,
    Future,
    RemoteError,
    WorkerLostError,
    WorkerTimeoutError,
)
from hpcrl.backends.local import LocalBackend

BACKENDS = ("local", "mpi", "dask")


def make_backend(name: str, config: dict[str, Any] | None = None) -> Backend:
    """The backend called ``name`` ("local", "mpi" or "dask"); mpi4py is imported
    only for "mpi", dask and distributed only for "dask".

    Under "mpi", on every rank but 0 this call serves actors and never returns.
    Under "dask", ``config["dask_address"]`` joins a running scheduler; unset,
    a local cluster is started; ``config["dask_security"]`` makes either use TLS.

    Raises:
        ValueError: an unknown name, listing the available ones; or
            ``dask_address`` or ``dask_security`` given to another backend.
    """
    config = config or {}
    if config.get("dask_address") is not None and name != "dask":
        raise ValueError(
            f"dask_address={config['dask_address']!r} is set but backend={name!r}; "
            "set backend='dask' (--backend dask) to join that Dask cluster"
        )
    if config.get("dask_security") is not None and name != "dask":
        raise ValueError(
            f"dask_security (TLS for Dask) is set but backend={name!r}; set backend='dask' "
            "(--backend dask), or drop dask_security and the --dask-tls-* flags"
        )
    if name == "dask":
        from hpcrl.backends.dask import DaskBackend

        return DaskBackend(
            config.get("dask_address"),
            num_workers=config.get("num_workers"),
            timeout_s=config.get("worker_timeout_s"),
            num_torch_threads=config.get("num_torch_threads"),
            security=config.get("dask_security"),
        )
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
    "WorkerLostError",
    "WorkerTimeoutError",
    "make_backend",
]
