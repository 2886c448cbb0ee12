"""Trial executors: where trials run. The driver's side of the trial protocol.

The runner (``hpcrl.tune.runner``) decides which trial runs, logs results and
answers them; an executor only starts trials somewhere and relays messages.
Each trial runs ``hpcrl.tune.trial_protocol.run_trial(spec, channel)`` in a
process of its own; the executor owns the other end of ``channel``.

Contract (what the runner relies on):

- ``slots`` trials may run at once; ``start`` is called only while fewer run.
- ``start(spec)`` returns at once; the trial's events then come from ``events``.
- ``events(timeout)`` waits up to ``timeout`` seconds for at least one event and
  returns every event available, each trial's in the order it sent them.
- After a ``RESULT`` event the trial waits: the runner calls ``decide`` for it
  before it calls ``events`` again.
- A trial ends with exactly one ``ENDED`` event. If its process dies, its job
  fails or its Dask worker is lost without one, the executor makes that event
  itself: ``{"error": "<what happened>", "preempted": False}`` (or
  ``"preempted": True`` when the scheduler preempted it with a warning signal
  and its checkpoint was written). After ``ENDED`` its slot is free.
- ``kill(trial_id)`` ends a running trial now; no event follows.
- ``shutdown()`` kills what runs and releases everything; calling it twice is fine.
- Trials write checkpoints to ``spec.logdir`` and the runner copies checkpoints
  between trial directories (population-based training), so every trial
  process must see the driver's ``local_dir`` (a shared filesystem on a cluster).

Adding an executor: subclass ``TrialExecutor`` with a constructor taking
``resources_per_trial`` and ``max_concurrent_trials`` (plus its own options as
keywords), add it to ``EXECUTORS`` under its name, and write a ``TrialChannel``
for the trial's side. The executors so far:

- ``local`` (``hpcrl.tune.local_executor``): a pool of worker processes here,
  each running ``hpcrl.tune.local_worker``; the channel is a socket pair
  (``PipeChannel``), specs go as cloudpickle bytes.
- ``dask`` and ``slurm`` (``hpcrl.tune.dask_executor``): one Dask task per trial,
  the channel two ``distributed.Queue``s; on Slurm, Dask workers in Slurm jobs
  through dask-jobqueue.

Another transport needs only the two halves, e.g. for jobs that share only a
filesystem: events written as numbered JSON files (``json_safe(event.data)``)
in the trial directory, decisions likewise; ``events`` polls the files and the
job's state, turning a failed or cancelled job without ENDED into ENDED.
"""

from __future__ import annotations

import importlib
import math
import os
from abc import ABC, abstractmethod
from typing import Any

from hpcrl.tune.trial_protocol import TrialDecision, TrialEvent, TrialSpec

# name -> "module:class", imported on demand.
EXECUTORS: dict[str, str] = {
    "local": "hpcrl.tune.local_executor:LocalExecutor",
    "dask": "hpcrl.tune.dask_executor:DaskExecutor",
    "slurm": "hpcrl.tune.dask_executor:SlurmExecutor",
}


class TrialExecutor(ABC):
    """Runs trials in processes of their own (see the module docstring)."""

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many trials may run at once."""

    def describe(self) -> str:
        """One line for the status table, e.g. ``"local: 2 processes, 1 CPU each"``."""
        return type(self).__name__

    @abstractmethod
    def start(self, spec: TrialSpec) -> None:
        """Start running ``spec`` (returns at once)."""

    @abstractmethod
    def events(self, timeout: float) -> list[TrialEvent]:
        """The running trials' events, waiting up to ``timeout`` s for the first."""

    @abstractmethod
    def decide(self, trial_id: str, decision: TrialDecision) -> None:
        """Answer the trial's last ``RESULT``."""

    @abstractmethod
    def kill(self, trial_id: str) -> None:
        """End a running trial now; it sends no more events."""

    @abstractmethod
    def shutdown(self) -> None:
        """Kill every running trial and release the executor's processes."""


def check_resources(resources: dict[str, Any] | None) -> dict[str, float]:
    """``resources_per_trial`` checked: ``{"cpu": k, "gpu": g}`` (cpu 1, gpu 0 by default).

    Example:
        >>> check_resources({"cpu": 2})
        {'cpu': 2.0, 'gpu': 0.0}
    """
    checked = {"cpu": 1.0, "gpu": 0.0}
    for key, value in (resources or {}).items():
        if key not in checked:
            raise ValueError(
                f"unknown resource {key!r} in resources_per_trial; expected 'cpu' and 'gpu', "
                "e.g. {'cpu': 2, 'gpu': 1}"
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"resources_per_trial[{key!r}] must be a number >= 0, got {value!r}")
        checked[key] = float(value)
    if checked["cpu"] <= 0:
        raise ValueError(f"resources_per_trial['cpu'] must be > 0, got {checked['cpu']}")
    if checked["gpu"] != math.floor(checked["gpu"]):
        raise ValueError(f"resources_per_trial['gpu'] must be whole GPUs, got {checked['gpu']}")
    return checked


def available_cpus() -> int:
    """The cores this process may run on (Slurm's allocation, taskset...)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_executor(
    executor: str | TrialExecutor,
    resources_per_trial: dict[str, Any] | None,
    max_concurrent_trials: int | None,
) -> TrialExecutor:
    """The executor named ``executor`` (``"local"``...), or ``executor`` itself."""
    if isinstance(executor, TrialExecutor):
        if resources_per_trial is not None or max_concurrent_trials is not None:
            raise ValueError(
                "resources_per_trial and max_concurrent_trials go to the executor's "
                f"constructor when trial_executor is an instance ({executor.describe()})"
            )
        return executor
    if executor not in EXECUTORS:
        raise ValueError(
            f"unknown trial_executor {executor!r}; available: {sorted(EXECUTORS)} (or a "
            "TrialExecutor instance)"
        )
    module, _, name = EXECUTORS[executor].partition(":")
    executor_class = getattr(importlib.import_module(module), name)
    return executor_class(
        resources_per_trial=resources_per_trial, max_concurrent_trials=max_concurrent_trials
    )
