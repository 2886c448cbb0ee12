"""A real Dask LocalCluster per test module here (skipped without distributed)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def dask_cluster():
    """One real LocalCluster for the module: three worker processes, one thread each."""
    pytest.importorskip("distributed")
    from hpcrl.backends.dask import start_local_cluster

    cluster = start_local_cluster(3)
    yield cluster
    cluster.close()
