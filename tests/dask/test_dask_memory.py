"""What keeps a long run's Dask workers from growing (see benchmarks/soak.py)."""

from __future__ import annotations

import pytest

distributed = pytest.importorskip("distributed")


def profiler_state(dask_worker) -> tuple[bool, int]:
    return "profile" in dask_worker.periodic_callbacks, len(dask_worker.profile_history)


def test_local_cluster_workers_keep_no_profile_history(dask_cluster):
    # Dask's statistical profiler kept 1000 one-second profile trees per worker:
    # ~4 MiB a minute of growth for an actor sampling envs, over ~17 minutes.
    with distributed.Client(dask_cluster) as client:
        dask_cluster.scale(len(dask_cluster.worker_spec) + 1)  # as DaskBackend grows it
        client.wait_for_workers(len(dask_cluster.worker_spec))
        client.submit(sum, range(1000)).result()
        states = client.run(profiler_state)
        dask_cluster.scale(len(dask_cluster.worker_spec) - 1)
    assert len(states) >= 4
    assert all(state == (False, 0) for state in states.values()), states
