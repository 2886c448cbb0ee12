"""The local executor: trials in a pool of long-lived worker processes on this machine."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from hpcrl.tune.executor import TrialExecutor, available_cpus, check_resources
from hpcrl.tune.trial_protocol import ENDED, TrialDecision, TrialEvent, TrialSpec


@dataclass
class _Worker:
    process: subprocess.Popen
    connection: Connection
    slot: int
    trial_id: str | None = None


class LocalExecutor(TrialExecutor):
    """Runs each trial in one of ``slots`` worker processes (``hpcrl.tune.local_worker``).

    ``slots`` is the cores available divided by ``resources_per_trial["cpu"]``, at
    most the GPUs divided by ``resources_per_trial["gpu"]``, and at most
    ``max_concurrent_trials``. A worker process runs trial after trial, so its
    imports (torch, the algorithm) happen once. Each worker gets
    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to its cores (unless already set)
    and, with GPUs, ``CUDA_VISIBLE_DEVICES`` set to its own devices. Trials are
    sent with cloudpickle, so a function or Trainer class defined in the
    calling script works; its module must be importable by the workers
    (they get the driver's ``sys.path``).

    Args:
        resources_per_trial: ``{"cpu": k, "gpu": g}`` (default 1 CPU, no GPU).
        max_concurrent_trials: at most this many trials at once.
        cpus: cores to share out (default: those this process may use).
    """

    def __init__(
        self,
        resources_per_trial: dict[str, Any] | None = None,
        max_concurrent_trials: int | None = None,
        cpus: int | None = None,
    ) -> None:
        self.resources = check_resources(resources_per_trial)
        self.cpus = cpus or available_cpus()
        if self.resources["cpu"] > self.cpus:
            raise ValueError(
                f"resources_per_trial asks for {self.resources['cpu']:g} CPUs but this machine "
                f"offers {self.cpus}: ask for at most {self.cpus}"
            )
        size = int(self.cpus // self.resources["cpu"])
        self._gpu_ids: list[str] = []
        if self.resources["gpu"]:
            self._gpu_ids = _visible_gpus()
            per_trial = int(self.resources["gpu"])
            if per_trial > len(self._gpu_ids):
                raise ValueError(
                    f"resources_per_trial asks for {per_trial} GPUs but {len(self._gpu_ids)} "
                    "are visible"
                )
            size = min(size, len(self._gpu_ids) // per_trial)
        if max_concurrent_trials is not None:
            if max_concurrent_trials < 1:
                raise ValueError(f"max_concurrent_trials must be >= 1, got {max_concurrent_trials}")
            size = min(size, max_concurrent_trials)
        self._slots = max(size, 1)
        self._workers: list[_Worker] = []

    @property
    def slots(self) -> int:
        return self._slots

    def describe(self) -> str:
        gpus = f", {self.resources['gpu']:g} GPU" if self.resources["gpu"] else ""
        return (
            f"local: {self._slots} processes, {self.resources['cpu']:g} CPU{gpus} each "
            f"({self.cpus} CPUs)"
        )

    def start(self, spec: TrialSpec) -> None:
        import cloudpickle

        if self._worker_of(spec.trial_id) is not None:
            raise RuntimeError(f"trial {spec.trial_id} is already running")
        try:
            payload = cloudpickle.dumps(spec)
        except Exception as err:
            raise ValueError(
                f"trial {spec.trial_id} cannot be sent to a worker process: its trainable or "
                f"config does not pickle ({err!r})"
            ) from err
        worker = self._idle_worker()
        worker.trial_id = spec.trial_id
        with contextlib.suppress(OSError):  # the worker died: events() reports the trial
            worker.connection.send((spec.trial_id, payload))

    def events(self, timeout: float) -> list[TrialEvent]:
        busy = {w.connection: w for w in self._workers if w.trial_id is not None}
        if not busy:
            time.sleep(timeout)
            return []
        found: list[TrialEvent] = []
        for connection in wait(list(busy), timeout):
            worker = busy[connection]
            try:
                while worker.trial_id is not None and connection.poll():
                    event = connection.recv()
                    found.append(event)
                    if event.kind == ENDED:
                        worker.trial_id = None
            except (EOFError, OSError):
                found.append(self._lost(worker))
        return found

    def decide(self, trial_id: str, decision: TrialDecision) -> None:
        worker = self._worker_of(trial_id)
        if worker is None:
            raise RuntimeError(f"trial {trial_id} is not running")
        with contextlib.suppress(OSError):  # the worker died: events() reports it
            worker.connection.send(decision)

    def kill(self, trial_id: str) -> None:
        worker = self._worker_of(trial_id)
        if worker is not None:
            self._stop_worker(worker, kill=True)

    def shutdown(self) -> None:
        for worker in list(self._workers):
            self._stop_worker(worker, kill=worker.trial_id is not None)

    # -- workers ---------------------------------------------------------
    def _worker_of(self, trial_id: str) -> _Worker | None:
        return next((w for w in self._workers if w.trial_id == trial_id), None)

    def _idle_worker(self) -> _Worker:
        for worker in list(self._workers):
            if worker.trial_id is None and worker.process.poll() is not None:
                self._stop_worker(worker, kill=False)  # died while idle
        idle = [w for w in self._workers if w.trial_id is None]
        if idle:
            return idle[0]
        if len(self._workers) >= self._slots:
            raise RuntimeError(f"all {self._slots} trial slots are busy")
        used = {w.slot for w in self._workers}
        worker = self._spawn(min(set(range(self._slots)) - used))
        self._workers.append(worker)
        return worker

    def _spawn(self, slot: int) -> _Worker:
        env = dict(os.environ)
        threads = str(max(1, int(self.resources["cpu"])))
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, threads)
        if self._gpu_ids:
            per_trial = int(self.resources["gpu"])
            env["CUDA_VISIBLE_DEVICES"] = ",".join(
                self._gpu_ids[slot * per_trial : (slot + 1) * per_trial]
            )
        ours, theirs = socket.socketpair()
        with ours, theirs:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hpcrl.tune.local_worker",
                    str(theirs.fileno()),
                    str(os.getpid()),
                ],
                pass_fds=(theirs.fileno(),),
                env=env,
                start_new_session=True,  # Ctrl-C reaches the driver only
            )
            connection = Connection(ours.detach())
        connection.send({"sys_path": list(sys.path)})
        return _Worker(process, connection, slot)

    def _lost(self, worker: _Worker) -> TrialEvent:
        """The ENDED event of a trial whose worker process died."""
        trial_id = worker.trial_id
        try:
            code = worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self._stop_worker(worker, kill=True)
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code}"
        error = (
            f"the trial's worker process (pid {worker.process.pid}) {how} without ending "
            "the trial (out of memory? a crash in native code?)"
        )
        return TrialEvent(trial_id, ENDED, {"error": error, "preempted": False})

    def _stop_worker(self, worker: _Worker, kill: bool) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        worker.connection.close()  # an idle worker exits on the closed socket
        if kill and worker.process.poll() is None:
            worker.process.kill()
        try:
            worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def _visible_gpus() -> list[str]:
    """The ids of the GPUs this process may use (``CUDA_VISIBLE_DEVICES``, else torch's count)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [device for device in visible.split(",") if device.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]
