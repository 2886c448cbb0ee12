"""A real one-node Slurm for the tests in this folder, started once per session."""

from __future__ import annotations

import pytest
from local_slurm import LocalSlurm, Unavailable


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    try:
        cluster = LocalSlurm.start(tmp_path_factory.mktemp("slurm"))
    except Unavailable as err:
        pytest.skip(f"cannot run a local Slurm here: {err}")
    yield cluster
    cluster.stop()
