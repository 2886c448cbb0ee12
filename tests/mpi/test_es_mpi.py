"""ES and ARS under mpiexec: identical parameters on every rank, a failing rank."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich, or load the cluster's MPI)"
)


def mpirun(args: list[str], ranks: int = 3) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [MPIEXEC, "-n", str(ranks), sys.executable, str(HERE / "es_script.py"), *args],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("algorithm", ["ES", "ARS"])
def test_every_rank_holds_the_drivers_parameters_after_every_iteration(algorithm):
    out = mpirun([algorithm])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "IDENTICAL 3 on 2 workers" in out.stdout


def test_a_raising_rank_ends_the_job_naming_it():
    start = time.monotonic()
    out = mpirun(["ES", "2"])
    elapsed = time.monotonic() - start
    assert out.returncode != 0 and "IDENTICAL" not in out.stdout
    assert "MPI rank 2" in out.stderr and "env failure on worker" in out.stderr, out.stderr[-2000:]
    assert elapsed < 60, f"took {elapsed:.0f}s to fail"


def test_collectives_benchmark_runs_es_over_the_allgather():
    """A tiny run of benchmarks/collectives.py's MPI child (its figures are not checked)."""
    script = HERE.parent.parent / "benchmarks" / "collectives.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [MPIEXEC, "-n", "3", sys.executable, str(script), "--backend", "mpi", "--system", "ES",
         "--workers", "2", "--iterations", "1", "--episodes", "4"],
        capture_output=True, text=True, timeout=180, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert '"exchange": "allgather"' in out.stdout, out.stdout
