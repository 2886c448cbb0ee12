"""hpcrl's LocalCluster forks its workers from a server that has imported torch
(hpcrl.backends.prestart): a worker starts with what a rollout worker needs."""

from __future__ import annotations

import multiprocessing
import os
import sys

import pytest

distributed = pytest.importorskip("distributed")


def process_facts() -> tuple[bool, bool, int]:
    import psutil

    parent = psutil.Process(os.getpid()).parent()  # the forkserver forks each worker
    forked = parent is not None and "forkserver" in " ".join(parent.cmdline())
    return "torch" in sys.modules, "hpcrl.evaluation.rollout_worker" in sys.modules, forked


def test_workers_are_forked_with_torch_and_the_rollout_worker_imported(dask_cluster):
    with distributed.Client(dask_cluster) as client:
        facts = client.run(process_facts)
        # A worker the cluster grows by later (as the backend grows it) is forked too.
        dask_cluster.scale(len(dask_cluster.worker_spec) + 1)
        client.wait_for_workers(len(dask_cluster.worker_spec))
        facts_after = client.run(process_facts)
        dask_cluster.scale(len(dask_cluster.worker_spec) - 1)
    assert len(facts) == 3 and len(facts_after) == 4
    assert all(fact == (True, True, True) for fact in facts_after.values()), facts_after
    assert multiprocessing.get_start_method(allow_none=True) != "forkserver"  # ours only


def test_a_killed_worker_comes_back_forked(dask_cluster):
    """The nanny's replacement for a killed worker process is forked from the same
    server (no new import of torch)."""
    import signal
    import time

    with distributed.Client(dask_cluster) as client:

        def pids() -> list[int]:
            return list(client.run(os.getpid, on_error="ignore").values())

        before = pids()
        victim = before[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = pids()
            if len(now) == len(before) and victim not in now:
                break
            time.sleep(0.1)
        client.wait_for_workers(len(before))
        facts = client.run(process_facts)
    assert victim not in now and len(facts) == len(before)
    assert all(fact == (True, True, True) for fact in facts.values()), facts


def test_workers_get_the_environment_of_when_their_cluster_starts(dask_cluster, monkeypatch):
    """The forkserver started with an earlier environment (this module's first
    cluster); a later cluster's workers still see the variables set since."""
    from hpcrl.backends.dask import start_local_cluster

    monkeypatch.setenv("HPCRL_TEST_MARK", "set after the forkserver started")
    cluster = start_local_cluster(1)
    try:
        with distributed.Client(cluster) as client:
            # Read in the worker (os.environ.get itself would pickle this process's).
            seen = client.run(lambda: __import__("os").environ.get("HPCRL_TEST_MARK"))
    finally:
        cluster.close()
    assert list(seen.values()) == ["set after the forkserver started"]
