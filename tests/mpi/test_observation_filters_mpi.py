"""Observation filters across 3 MPI ranks: the driver's merge (one Reduce) holds the
statistics of every observation every rank saw; see filter_script.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich, or load the cluster's MPI)"
)


@pytest.mark.parametrize("algorithm", ["PPO", "IMPALA"])
def test_the_merged_filter_holds_every_ranks_observations(algorithm, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [MPIEXEC, "-n", "3", sys.executable, str(HERE / "filter_script.py"), algorithm,
         str(tmp_path)],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "FILTERS OK" in out.stdout
    assert len(list(tmp_path.glob("obs-*.bin"))) == 4  # 2 envs on each of the 2 worker ranks
