"""Trials as Dask tasks: on a Dask cluster (``trial_executor="dask"``) or on Dask
workers that Slurm jobs provide (``trial_executor="slurm"``, via dask-jobqueue).

Each trial is one Dask task, ``run_trial_task``, which runs
``hpcrl.tune.trial_protocol.run_trial`` over a ``QueueChannel``: the trial puts
its events on the experiment's events queue (a ``distributed.Queue``, held by
the scheduler) and takes the driver's decisions from a queue of its own. The
driver's ``DaskExecutor.events`` takes from the events queue; a task that fails
or whose worker is lost without an ``ENDED`` event is reported as ended with
its error. Messages are pickled to bytes, so results with numpy values pass the
scheduler unchanged.

Where the cluster comes from:

- ``DaskExecutor()``: a ``LocalCluster`` of one single-threaded worker process
  per trial slot (the cores divided by ``resources_per_trial["cpu"]``, at most
  ``max_concurrent_trials``), closed at the end;
- ``DaskExecutor(dask_address="tcp://host:8786")``: joins a running cluster, one
  trial per worker thread (its ``nthreads`` divided by the CPUs per trial);
- ``SlurmExecutor(...)``: a ``dask_jobqueue.SLURMCluster`` of one Slurm job per
  trial slot, each job a Dask worker running one trial at a time, for as many
  trials as the experiment has; the jobs end with the experiment. hpcrl writes
  no Slurm client of its own: dask-jobqueue submits and cancels the jobs.

Every trial process must see the driver's ``local_dir`` (checkpoints are
written there and copied between trials by population-based training): on a
cluster, a shared filesystem. A trial may use any backend of its own, e.g.
an MPI trial inside a Slurm job runs its ranks with its own ``srun``.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any

from hpcrl.tune.executor import TrialExecutor, available_cpus, check_resources
from hpcrl.tune.trial_protocol import (
    ENDED,
    ChannelClosed,
    TrialChannel,
    TrialDecision,
    TrialEvent,
    TrialSpec,
    run_trial,
)


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            'trial_executor="dask" needs dask and distributed: pip install "hpcrl[dask]"'
        ) from err
    return distributed


class QueueChannel(TrialChannel):
    """A trial's channel over two ``distributed.Queue``s: events out (shared by the
    experiment's trials), decisions in (this trial's)."""

    def __init__(self, events: str, decisions: str) -> None:
        distributed = _require_distributed()
        client = distributed.get_client()
        self._events = distributed.Queue(events, client=client)
        self._decisions = distributed.Queue(decisions, client=client)

    def send(self, event: TrialEvent) -> None:
        import cloudpickle

        try:
            self._events.put(cloudpickle.dumps(event))
        except Exception as err:  # the scheduler is gone
            raise ChannelClosed(f"the driver's scheduler is gone: {err!r}") from err

    def receive(self) -> TrialDecision:
        import cloudpickle

        try:
            return cloudpickle.loads(self._decisions.get())
        except Exception as err:
            raise ChannelClosed(f"the driver's scheduler is gone: {err!r}") from err


def run_trial_task(payload: bytes, events: str, decisions: str) -> str:
    """The Dask task of one trial: unpickle its spec and run it (output to
    ``output.log`` in the trial directory, as the local executor does)."""
    import cloudpickle

    from hpcrl.tune.local_worker import OUTPUT_FILE, _output_to

    spec: TrialSpec = cloudpickle.loads(payload)
    os.makedirs(spec.logdir, exist_ok=True)
    with _output_to(os.path.join(spec.logdir, OUTPUT_FILE)):
        run_trial(spec, QueueChannel(events, decisions))
    return spec.trial_id


class DaskExecutor(TrialExecutor):
    """Runs each trial as a Dask task (see the module docstring).

    Args:
        resources_per_trial: ``{"cpu": k}`` (GPUs: give the Dask workers the GPUs).
        max_concurrent_trials: at most this many trials at once.
        dask_address: a running scheduler to join (default: start a LocalCluster).
        cluster: a cluster object to use (it is closed at the end).
        dask_security: TLS for the cluster joined or started (the ``dask_security``
            config, see ``hpcrl.backends.dask_tls``); None: Dask's configuration.
    """

    def __init__(
        self,
        resources_per_trial: dict[str, Any] | None = None,
        max_concurrent_trials: int | None = None,
        dask_address: str | None = None,
        cluster: Any = None,
        dask_security: dict[str, Any] | None = None,
    ) -> None:
        distributed = _require_distributed()
        from hpcrl.backends.dask_tls import connect_client, make_security

        security = make_security(
            dask_security, local_cluster=cluster is None and dask_address is None
        )
        self.resources = check_resources(resources_per_trial)
        if max_concurrent_trials is not None and max_concurrent_trials < 1:
            raise ValueError(f"max_concurrent_trials must be >= 1, got {max_concurrent_trials}")
        self._own_cluster = cluster
        self._where = dask_address
        if cluster is None and dask_address is None:
            cpus = available_cpus()
            per_trial = max(1, int(self.resources["cpu"]))
            workers = max(1, cpus // per_trial)
            if max_concurrent_trials is not None:
                workers = min(workers, max_concurrent_trials)
            from hpcrl.backends.dask import start_local_cluster

            self._own_cluster = start_local_cluster(workers, security=security)
            self._where = f"LocalCluster of {workers} workers"
        address = dask_address if dask_address is not None else self._own_cluster
        self.client = connect_client(address, security, timeout_s=30, set_as_default=False)
        if self._own_cluster is None:
            threads = sum(self.client.nthreads().values())
            self._slots = max(1, int(threads // max(1.0, self.resources["cpu"])))
        else:
            self._slots = self._cluster_slots()
        if max_concurrent_trials is not None:
            self._slots = min(self._slots, max_concurrent_trials)
        self._name = f"hpcrl-tune-{uuid.uuid4().hex[:8]}"
        self._events = distributed.Queue(f"{self._name}-events", client=self.client)
        self._running: dict[str, tuple[Any, Any]] = {}  # trial id -> (future, decisions)
        self._done_since: dict[str, float] = {}
        self._counter = itertools.count()

    def _cluster_slots(self) -> int:
        workers = getattr(self._own_cluster, "workers", None)
        return max(1, len(workers) if workers is not None else 1)

    @property
    def slots(self) -> int:
        return self._slots

    def describe(self) -> str:
        return f"dask: {self._slots} trials at once on {self._where}"

    def start(self, spec: TrialSpec) -> None:
        import cloudpickle

        distributed = _require_distributed()
        if spec.trial_id in self._running:
            raise RuntimeError(f"trial {spec.trial_id} is already running")
        try:
            payload = cloudpickle.dumps(spec)
        except Exception as err:
            raise ValueError(
                f"trial {spec.trial_id} cannot be sent to Dask: its trainable or config does "
                f"not pickle ({err!r})"
            ) from err
        decisions_name = f"{self._name}-{spec.trial_id}-{next(self._counter)}"
        decisions = distributed.Queue(decisions_name, client=self.client)
        future = self.client.submit(
            run_trial_task,
            payload,
            self._events.name,
            decisions_name,
            key=f"trial-{decisions_name}",
            pure=False,
            retries=0,
        )
        self._running[spec.trial_id] = (future, decisions)

    def events(self, timeout: float) -> list[TrialEvent]:
        import cloudpickle

        found: list[TrialEvent] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                items = self._events.get(batch=True)
            except Exception:
                items = []
            for item in items:
                event = cloudpickle.loads(item)
                if event.trial_id not in self._running:
                    continue  # a trial killed meanwhile
                found.append(event)
                if event.kind == ENDED:
                    self._running.pop(event.trial_id)
                    self._done_since.pop(event.trial_id, None)
            found.extend(self._lost())
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))

    def _lost(self) -> list[TrialEvent]:
        """ENDED events for tasks that finished (failed, or lost their worker) without
        sending one."""
        lost = []
        for trial_id, (future, _) in list(self._running.items()):
            if not future.done():
                continue
            if future.status == "finished":
                # It sent ENDED before returning: give the event time to arrive.
                since = self._done_since.setdefault(trial_id, time.monotonic())
                if time.monotonic() - since < 5:
                    continue
                error = "the trial's Dask task returned without ending the trial"
            else:
                exception = future.exception()
                error = f"the trial's Dask task failed: {exception!r} (a lost worker?)"
            self._running.pop(trial_id)
            self._done_since.pop(trial_id, None)
            lost.append(TrialEvent(trial_id, ENDED, {"error": error, "preempted": False}))
        return lost

    def decide(self, trial_id: str, decision: TrialDecision) -> None:
        import cloudpickle

        if trial_id not in self._running:
            raise RuntimeError(f"trial {trial_id} is not running")
        _, decisions = self._running[trial_id]
        decisions.put(cloudpickle.dumps(decision))

    def kill(self, trial_id: str) -> None:
        running = self._running.pop(trial_id, None)
        if running is None:
            return
        future, decisions = running
        # A running task cannot be interrupted: its worker is restarted (its nanny
        # starts a fresh process), and the trial's decision queue tells it to stop.
        import cloudpickle

        try:
            decisions.put(cloudpickle.dumps(TrialDecision(stop=True)))
            who = self.client.who_has(future).get(future.key)
            if not future.done() and who:
                self.client.restart_workers(list(who))
        except Exception:  # the worker is already gone
            pass
        future.cancel()

    def shutdown(self) -> None:
        for trial_id in list(self._running):
            self.kill(trial_id)
        try:
            self.client.close()
        finally:
            if self._own_cluster is not None:
                self._own_cluster.close()
                self._own_cluster = None


class SlurmExecutor(DaskExecutor):
    """Trials in Slurm jobs: a ``dask_jobqueue.SLURMCluster`` with one job per trial
    slot, each job one single-process Dask worker with ``resources_per_trial["cpu"]``
    cores; the jobs are cancelled when the experiment ends.

    Args:
        resources_per_trial: ``{"cpu": k, "gpu": g}`` per trial (per job); GPUs are
            asked for with ``--gres=gpu:g``.
        max_concurrent_trials: jobs at once (default 4).
        memory: each job's memory (``"4GB"``).
        walltime: each job's time limit (``"01:00:00"``).
        partition, account: Slurm's ``-p`` and ``-A``.
        job_script_prologue: shell lines each job runs first (``module load ...``,
            activating the environment that has hpcrl).
        start_timeout: seconds to wait for the first job's worker to join.
        **cluster_options: anything else of ``SLURMCluster`` (``job_extra_directives``,
            ``interface``, ``log_directory``...).
    """

    def __init__(
        self,
        resources_per_trial: dict[str, Any] | None = None,
        max_concurrent_trials: int | None = None,
        memory: str = "4GB",
        walltime: str = "01:00:00",
        partition: str | None = None,
        account: str | None = None,
        job_script_prologue: list[str] | None = None,
        start_timeout: float = 300.0,
        **cluster_options: Any,
    ) -> None:
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as err:
            raise ImportError(
                'trial_executor="slurm" needs dask-jobqueue: pip install "hpcrl[dask]"'
            ) from err
        resources = check_resources(resources_per_trial)
        jobs = max_concurrent_trials or 4
        cores = max(1, int(resources["cpu"]))
        extra = list(cluster_options.pop("job_extra_directives", []))
        if resources["gpu"]:
            extra.append(f"--gres=gpu:{int(resources['gpu'])}")
        cluster = SLURMCluster(
            cores=cores,
            processes=1,
            memory=memory,
            walltime=walltime,
            queue=partition,
            account=account,
            job_script_prologue=list(job_script_prologue or []),
            job_extra_directives=extra,
            worker_extra_args=["--nthreads", "1"],
            job_name="hpcrl-trial",
            **cluster_options,
        )
        cluster.scale(jobs=jobs)
        self._jobs = jobs
        super().__init__(resources_per_trial, jobs, cluster=cluster)
        self._where = f"{jobs} Slurm jobs ({cores} cores, {memory}, {walltime} each)"
        try:
            self.client.wait_for_workers(1, timeout=start_timeout)
        except Exception as err:
            self.shutdown()
            raise RuntimeError(
                f"no Slurm job of the experiment started within {start_timeout:g} s "
                f"(squeue shows why: a partition, account or memory the cluster refuses?): "
                f"{err}"
            ) from err

    def _cluster_slots(self) -> int:
        return self._jobs
