"""Data-parallel learners as MPI ranks, under a real mpiexec.

``mpiexec -n 4``: rank 0 drives, rank 1 is the rollout worker, ranks 2 and 3
are the two learners (a gloo group).
"""

from __future__ import annotations

import os
import re
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


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [MPIEXEC, "-n", "4", sys.executable, str(HERE / "learner_train_script.py"), *args]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def test_ppo_with_two_learner_ranks_learns_cartpole():
    out = run_script("mpi", "10", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "TRAINED on mpi with 2 learners (gloo)" in out.stdout
    first, last = map(float, re.search(r"first ([\d.]+) last ([\d.]+)", out.stdout).groups())
    assert last > 30 and last > 1.5 * first, out.stdout


def test_a_failing_learner_rank_ends_the_job_with_its_rank_and_traceback():
    start = time.monotonic()
    out = run_script("mpi", "3", "2", "failing", env={"FAIL_ON_LEARNER": "1"})
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert "LearnerError: learner rank 1 of 2 on MPI rank 3 (learn)" in out.stderr
    assert "ValueError: loss failure on learner 1" in out.stderr
    assert "in failing_loss" in out.stderr
    assert "TRAINED" not in out.stdout
    assert elapsed < 60, f"took {elapsed:.0f}s to fail"
