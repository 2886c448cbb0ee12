"""Ape-X under mpiexec: driver, 2 rollout workers and 1 replay shard, each a rank.

The learning tests of APEX and APEX_DDPG run their tuned files here: every role
has its own process, as on a cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TUNED = HERE.parents[1] / "examples" / "tuned"
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich, or load the cluster's MPI)"
)


def mpirun(ranks: int, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [MPIEXEC, "-n", str(ranks), sys.executable, *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def train_tuned(name: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict]:
    out = mpirun(
        4, ["-m", "hpcrl", "train", "-f", str(TUNED / name), "--backend", "mpi",
            "--local-dir", str(tmp_path), "-q"],
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [results] = tmp_path.glob("*/*/result.json")
    last = json.loads(results.read_text().splitlines()[-1])
    return out, last


def test_apex_reaches_150_on_cartpole_v0_within_250k_steps(tmp_path):
    out, last = train_tuned("cartpole-apex.yaml", tmp_path)
    assert "stopped by evaluation/episode_reward_mean" in out.stdout, out.stdout[-2000:]
    assert last["evaluation"]["episode_reward_mean"] >= 150
    assert last["timesteps_total"] <= 250_000 + 10_000
    info = last["info"]
    assert info["num_learner_updates"] > 0 and info["num_weight_syncs"] > 0
    assert info["num_dropped_batches"] >= 0 and info["learner_queue_size"] <= 16


def test_apex_ddpg_reaches_minus_300_on_pendulum(tmp_path):
    out, last = train_tuned("pendulum-apex-ddpg.yaml", tmp_path)
    assert "stopped by episode_reward_mean" in out.stdout, out.stdout[-2000:]
    assert last["episode_reward_mean"] >= -300


def test_priorities_epsilons_and_bounds_under_mpiexec():
    out = mpirun(4, [str(HERE / "apex_script.py"), "check"], timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "APEX OK" in out.stdout


def test_a_failing_shard_ends_the_job_naming_its_rank():
    start = time.monotonic()
    out = mpirun(4, [str(HERE / "apex_script.py"), "fail"], timeout=120)
    elapsed = time.monotonic() - start
    assert out.returncode != 0 and "NO FAILURE" not in out.stdout
    assert "MPI rank 3 (replay, streamed)" in out.stderr, out.stderr[-3000:]
    assert "replay shard failure" in out.stderr
    assert elapsed < 60, f"took {elapsed:.0f}s to fail"


def test_too_few_ranks_for_workers_and_shards_is_a_clear_error(tmp_path):
    out = mpirun(
        3, ["-m", "hpcrl", "train", "--run", "APEX", "--env", "CartPole-v1", "--backend", "mpi",
            "--local-dir", str(tmp_path), "--config",
            '{"num_workers": 2, "num_replay_buffer_shards": 1}'],
        timeout=120,
    )  # fmt: skip
    assert out.returncode != 0
    assert "2 rollout worker(s) and 1 replay shard(s)" in out.stderr, out.stderr[-2000:]
    assert "mpiexec -n 4" in out.stderr
