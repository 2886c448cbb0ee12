"""Under MPI: each worker rank records its own batch file, and a checkpoint restored in
a new mpiexec job continues exactly (real mpiexec, real ranks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent / "mpi_resume_script.py"
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich, or load the cluster's MPI)"
)


def mpiexec(mode: str, directory: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [MPIEXEC, "-n", "3", sys.executable, str(SCRIPT), mode, str(directory), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0 and f"DONE {mode}" in out.stdout, out.stdout + out.stderr


def test_checkpoint_restored_in_a_new_mpi_job_continues_exactly(tmp_path):
    mpiexec("first", tmp_path)
    mpiexec("second", tmp_path)
    straight, resumed = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert set(straight.files) == set(resumed.files)
    for name in straight.files:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
    files = sorted((tmp_path / "batches").glob("*.h5"))
    assert len(files) == 4  # one per worker rank and job
    recorded = []
    for path in files:
        with h5py.File(path, "r", swmr=True) as f:
            recorded.append((int(f.attrs["worker_index"]), f["index"].shape[0]))
    # one batch per rank and iteration: 4 in the first job, 2 in the second
    assert sorted(recorded) == [(1, 2), (1, 4), (2, 2), (2, 4)]


def test_dqn_with_its_replay_buffer_continues_exactly_in_a_new_mpi_job(tmp_path):
    mpiexec("first", tmp_path, "DQN")
    mpiexec("second", tmp_path, "DQN")
    straight, resumed = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    for name in straight.files:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)
