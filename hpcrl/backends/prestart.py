"""Processes a run will need, started before the driver imports torch.

On a small machine most of a run's start-up is imports: torch alone takes
1.5-2.5 s per process, and a run with helper processes (two learners, two
Dask workers) used to import it in the driver first and then in each helper.
``prestart(config)``, called by ``hpcrl train`` right after it has read the
config and before it imports anything heavy, starts those processes at once
so their imports run beside the driver's:

- ``num_learners`` > 1 on the local backend: the learner child processes
  (``hpcrl.learners.processes.prestart``), each importing the learner's
  modules; the LearnerGroup takes them when it is built.
- DD-PPO with two or more workers on the local backend: the workers' child
  processes, each importing DD-PPO, with the torch threads they will have
  (``ddppo_worker_env``); the trainer's WorkerSet takes them.
- the Dask backend without ``dask_address`` (a LocalCluster hpcrl starts):
  the forkserver its worker processes will be forked from, which imports
  distributed, torch and hpcrl's rollout worker once
  (``start_dask_forkserver``); each worker then starts with them imported
  instead of importing them itself.

The MPI backend has nothing to start: ``mpiexec`` starts every rank at once.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from typing import Any

# What a Dask worker of hpcrl's LocalCluster imports before it is forked.
DASK_WORKER_PRELOAD = (
    "distributed",
    "torch",
    "gymnasium",
    "hpcrl.backends.dask",
    "hpcrl.evaluation.rollout_worker",
)


# DD-PPO's default number of workers (here, where prestart reads it without
# importing the algorithm and torch with it).
DDPPO_DEFAULT_WORKERS = 2


def ddppo_worker_env(config: dict[str, Any], workers: int) -> dict[str, str]:
    """The extra environment of DD-PPO's worker processes on the local backend: each
    its share of the cores' torch threads, or ``num_torch_threads`` if set."""
    threads = config.get("num_torch_threads") or max(1, (os.cpu_count() or 1) // workers)
    return {"OMP_NUM_THREADS": str(int(threads))}


def prestart(config: dict[str, Any], run: str | None = None) -> None:
    """Start the helper processes the run of algorithm ``run`` with ``config`` will
    need (see the module docstring); nothing for a run that needs none. A config
    with errors starts nothing: its error comes later, from the trainer."""
    backend = config.get("backend", "local")
    try:
        learners = int(config.get("num_learners") or 1)
        workers = config.get("num_workers", DDPPO_DEFAULT_WORKERS)
        ddppo_workers = workers if run == "DDPPO" and type(workers) is int else 0
        ddppo_env = ddppo_worker_env(config, ddppo_workers) if ddppo_workers > 1 else {}
    except (TypeError, ValueError):
        return
    if backend in (None, "local") and (learners > 1 or ddppo_workers > 1):
        from hpcrl.learners.processes import prestart as prestart_children

        if learners > 1:
            prestart_children(learners)
        else:
            prestart_children(ddppo_workers, ("hpcrl.algorithms.ddppo",), ddppo_env)
    elif backend == "dask" and config.get("dask_address") is None:
        start_dask_forkserver()


def start_dask_forkserver() -> None:
    """Start (once per process) the forkserver that hpcrl's LocalCluster forks its
    worker processes from, with ``DASK_WORKER_PRELOAD`` imported. It returns at
    once; the server imports while this process goes on.

    Forking from it rather than spawning (Dask's default) means one import of
    torch and distributed for all workers instead of one per worker, also for
    the worker a nanny starts in place of a lost one. A forked worker's
    ``__main__`` is set up as a spawned one's would be, so a script needs the
    same ``if __name__ == "__main__":`` guard either way. torch is imported but
    not run in the server, so no thread pool or CUDA context is forked.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(DASK_WORKER_PRELOAD))
    multiprocessing.forkserver.ensure_running()
