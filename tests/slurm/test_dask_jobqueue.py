"""slurm/dask_jobqueue_cluster.py against a real one-node Slurm: Dask workers as Slurm
jobs, hpcrl joining them with --dask-address over TLS, the jobs ended afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("dask_jobqueue")

SCRIPT = Path(__file__).resolve().parents[2] / "slurm" / "dask_jobqueue_cluster.py"


def test_trains_on_dask_workers_started_as_slurm_jobs(slurm, tmp_path):
    args = [
        sys.executable, str(SCRIPT), "--jobs", "2", "--memory", "1GB",
        "--log-dir", str(tmp_path / "logs"), "--start-timeout", "180", "--",
        "--run", "PG", "--env", "CartPole-v1", "--num-workers", "2", "-q",
        "--local-dir", str(tmp_path / "results"), "--stop", '{"training_iteration": 2}',
        "--config", '{"model": {"fcnet_hiddens": [8]}}',
    ]  # fmt: skip
    env = {**slurm.env, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(args, capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "#SBATCH" in log and "2 of 2 Dask workers joined" in log
    assert "Dask scheduler at tls://" in log and "--tls-cert" in log  # a certificate made here
    assert not list((tmp_path / "logs").glob(".hpcrl-dask-tls-*"))  # and removed
    assert "done: stopped by training_iteration after 2 iterations" in out.stdout
    params = next((tmp_path / "results").glob("*/*/params.json")).read_text()
    assert '"backend": "dask"' in params and '"num_workers": 2' in params
    queue = subprocess.run(["squeue", "-h", "-o", "%j %T"], capture_output=True, text=True, env=env)
    assert "dask-worker" not in queue.stdout.replace("COMPLETING", ""), queue.stdout
