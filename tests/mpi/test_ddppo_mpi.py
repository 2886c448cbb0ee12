"""DD-PPO under mpiexec: identical weights on every rank, learning, a failing rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
TUNED = HERE.parents[1] / "examples" / "tuned"
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich, or load the cluster's MPI)"
)


def mpirun(args: list[str], ranks: int = 3, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [MPIEXEC, "-n", str(ranks), sys.executable, *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_every_worker_holds_the_same_weights_and_the_driver_copies_worker_0():
    out = mpirun([str(HERE / "ddppo_script.py")])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "IDENTICAL 3 on 2 workers" in out.stdout


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"
)
def test_workers_on_gpus_all_reduce_over_nccl_and_hold_the_same_weights():
    out = mpirun([str(HERE / "ddppo_script.py"), "gpu"])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "IDENTICAL 3 on 2 workers" in out.stdout


def test_reaches_100_on_cartpole_v0_within_100k_steps(tmp_path):
    out = mpirun(
        ["-m", "hpcrl", "train", "-f", str(TUNED / "cartpole-ddppo.yaml"), "--backend", "mpi",
         "--local-dir", str(tmp_path), "-q"],
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "stopped by episode_reward_mean" in out.stdout, out.stdout[-2000:]
    [results] = tmp_path.glob("*/*/result.json")
    last = json.loads(results.read_text().splitlines()[-1])
    assert last["episode_reward_mean"] >= 100 and last["timesteps_total"] <= 100_000


def test_a_raising_rank_ends_the_job_naming_it():
    start = time.monotonic()
    out = mpirun([str(HERE / "ddppo_script.py"), "2"], timeout=120)
    elapsed = time.monotonic() - start
    assert out.returncode != 0 and "IDENTICAL" not in out.stdout
    assert "MPI rank 2" in out.stderr and "env failure on worker" in out.stderr, out.stderr[-2000:]
    assert elapsed < 60, f"took {elapsed:.0f}s to fail"
