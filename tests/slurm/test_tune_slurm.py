"""tune.run's Slurm executor against a real one-node Slurm: each trial runs in a Slurm
job (a Dask worker that dask-jobqueue started), and the jobs end with the experiment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue")

SCRIPT = Path(__file__).resolve().parent / "tune_slurm_script.py"


def test_trials_run_in_slurm_jobs_and_the_jobs_end(slurm, tmp_path):
    env = {**slurm.env, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "results"), str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    trials = json.loads(out.stdout.strip().splitlines()[-1])
    assert sorted(score for _, score, _ in trials.values()) == [3, 6, 9, 12]
    assert all(status == "TERMINATED" for status, _, _ in trials.values())
    jobs = {job for _, _, job in trials.values()}
    assert jobs and all(jobs), trials  # every trial ran inside a Slurm job
    queue = subprocess.run(["squeue", "-h", "-o", "%j %T"], capture_output=True, text=True, env=env)
    assert "hpcrl-trial" not in queue.stdout.replace("COMPLETING", ""), queue.stdout
