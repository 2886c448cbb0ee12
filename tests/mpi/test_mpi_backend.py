"""The MPI backend, run for real under mpiexec (MPICH from the test extra)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich, or load the cluster's MPI)"
)


def run(args: list[str], ranks: int | None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    prefix = [MPIEXEC, "-n", str(ranks)] if ranks else []
    return subprocess.run(
        [*prefix, sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("ranks", [3, 2])
def test_backend_contract(ranks):
    out = run([str(HERE / "contract_script.py")], ranks)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CONTRACT OK" in out.stdout


# PPO: test_same_weights_on_local_and_mpi
@pytest.mark.parametrize("algo", ["A3C", "A2C", "IMPALA", "APPO-two-policies"])
def test_training_under_mpiexec(algo, tmp_path):
    out = run([str(HERE / "train_script.py"), algo, "mpi", "3", str(tmp_path / "w.npz")], 3)
    assert out.returncode == 0, out.stdout + out.stderr
    trained = algo.removesuffix("-two-policies")
    assert f"TRAINED {trained} on mpi" in out.stdout and "2 workers" in out.stdout


@pytest.mark.parametrize("algo", ["PPO", "PPO-two-policies"])
def test_same_weights_on_local_and_mpi(tmp_path, algo):
    local = run([str(HERE / "train_script.py"), algo, "local", "3", str(tmp_path / "l.npz")], 0)
    assert local.returncode == 0, local.stderr
    mpi = run([str(HERE / "train_script.py"), algo, "mpi", "3", str(tmp_path / "m.npz")], 3)
    assert mpi.returncode == 0, mpi.stderr
    assert "TRAINED PPO on mpi" in mpi.stdout and "2 workers" in mpi.stdout
    a, b = np.load(tmp_path / "l.npz"), np.load(tmp_path / "m.npz")
    assert set(a.files) == set(b.files)
    policies = {name.split("/")[0] for name in a.files}
    assert policies == ({"even", "odd"} if algo == "PPO-two-policies" else {"default_policy"})
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("algo", ["PPO", "IMPALA"])
def test_worker_error_ends_the_job_naming_the_rank(tmp_path, algo):
    start = time.monotonic()
    out = run([str(HERE / "train_script.py"), algo, "mpi", "50", str(tmp_path / "w.npz"), "2"], 3)
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert "MPI rank 2" in out.stderr and "env failure on worker" in out.stderr
    assert elapsed < 60, f"took {elapsed:.0f}s to fail"


def cli(tmp_path: Path, *extra: str) -> list[str]:
    """``python -m hpcrl train`` of PG on CartPole with the MPI backend."""
    return [
        "-m", "hpcrl", "train", "--run", "PG", "--env", "CartPole-v1", "--backend", "mpi",
        "--local-dir", str(tmp_path), "-q", "--config", '{"model": {"fcnet_hiddens": [8]}}',
        *extra,
    ]  # fmt: skip


def test_cli_under_mpiexec_and_without_launcher(tmp_path):
    args = cli(tmp_path, "--stop", '{"training_iteration": 2}')
    out = run(args, 3)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done: stopped by training_iteration after 2 iterations" in out.stdout
    params = next(tmp_path.glob("*/*/params.json")).read_text()
    assert '"num_workers": 2' in params  # size - 1 by default
    alone = run(args, None)
    assert alone.returncode == 2
    assert "found 1 MPI rank" in alone.stderr and "mpiexec -n 3" in alone.stderr


def test_more_workers_than_ranks_is_a_clear_error(tmp_path):
    out = run(cli(tmp_path, "--num-workers", "4", "--stop", '{"training_iteration": 1}'), 3)
    assert out.returncode != 0
    assert "asked for 4 rollout workers but the MPI job has 3 ranks" in out.stderr
    assert "mpiexec -n 5" in out.stderr


def test_overhead_benchmark_runs_and_prints_every_figure():
    """A tiny run of benchmarks/mpi_overhead.py (its figures are not checked here)."""
    script = HERE.parent.parent / "benchmarks" / "mpi_overhead.py"
    small = ["--blocks", "1", "--rounds", "5", "--warmup", "2", "--samples", "1"]
    out = run([str(script), *small, "--num-envs", "2", "--fragment-length", "5"], 3)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("raw mpi4py", "bare protocol, no", "bare protocol with copies", "ratio"):
        assert line in out.stdout, out.stdout
    assert "2 worker rank(s):" in out.stdout


def test_impala_with_two_learner_ranks(tmp_path):
    """Driver, 2 rollout worker ranks and 2 learner ranks (gloo, one shard each)."""
    config = '{"num_workers": 2, "min_iter_time_s": 0, "timesteps_per_iteration": 500}'
    args = [
        "-m", "hpcrl", "train", "--run", "IMPALA", "--env", "CartPole-v1", "--backend", "mpi",
        "--num-learners", "2", "--local-dir", str(tmp_path), "-q", "--config", config,
        "--stop", '{"training_iteration": 2}',
    ]  # fmt: skip
    out = run(args, 5)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "done: stopped by training_iteration after 2 iterations" in out.stdout
    last = next(tmp_path.glob("*/*/result.json")).read_text().splitlines()[-1]
    assert '"num_learners": 2' in last and '"learner_backend": "gloo"' in last


def test_cli_verbose_shows_which_rank_runs_what(tmp_path):
    """``-v`` shows hpcrl's INFO lines: every rank's role, pid and host."""
    args = [
        "-m", "hpcrl", "train", "--run", "PG", "--env", "CartPole-v1", "--backend", "mpi",
        "--num-workers", "2", "--local-dir", str(tmp_path), "-v",
        "--stop", '{"training_iteration": 1}',
    ]  # fmt: skip
    out = run(args, 3)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("MPI rank 0 (driver, pid", "MPI rank 1 (rollout worker, pid"):
        assert f"hpcrl: {line}" in out.stderr, out.stderr
    assert "MPI rank 2 (rollout worker, pid" in out.stderr
