"""tune.run with trials as Dask tasks: on a joined LocalCluster, and on one it starts."""

from __future__ import annotations

import os

import pytest

from hpcrl import tune
from hpcrl.tune.dask_executor import DaskExecutor

pytest.importorskip("distributed")


def trainable(config):
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        start = checkpoint["step"]
    for step in range(start + 1, 5):
        tune.save_checkpoint({"step": step})
        if config["fail"] and step == 2 and checkpoint is None:
            os._exit(3)  # the worker process dies: Dask's nanny restarts it
        tune.report(score=config["x"] * step, pid=os.getpid())


def test_a_grid_on_a_joined_cluster_with_a_lost_worker_retried(dask_cluster, tmp_path):
    executor = DaskExecutor(dask_address=dask_cluster.scheduler_address, max_concurrent_trials=2)
    assert executor.slots == 2
    analysis = tune.run(
        trainable,
        config={"x": tune.grid_search([1, 2, 3]), "fail": tune.grid_search([False, True])},
        trial_executor=executor,
        local_dir=str(tmp_path),
        name="dask",
        max_failures=1,
        verbose=0,
    )
    assert len(analysis.trials) == 6
    assert all(t.status == "TERMINATED" for t in analysis.trials)
    scores = sorted(t.last_result["score"] for t in analysis.trials)
    assert scores == [4, 4, 8, 8, 12, 12]
    failed = [t for t in analysis.trials if t.config["fail"]]
    assert all(t.num_failures == 1 for t in failed)
    # The runs of the driver's client are over; the cluster (the fixture's) lives on.
    assert len(dask_cluster.scheduler_info["workers"]) >= 2


def test_trial_executor_dask_starts_and_closes_a_local_cluster(tmp_path):
    analysis = tune.run(
        lambda config: tune.report(value=config["v"]),
        config={"v": tune.grid_search([1, 2])},
        trial_executor="dask",
        max_concurrent_trials=2,
        local_dir=str(tmp_path),
        verbose=0,
    )
    assert sorted(t.last_result["value"] for t in analysis.trials) == [1, 2]
