"""A rank killed with SIGKILL under srun ends the job non-zero within 60 s, named by
hpcrl, for the synchronous, asynchronous and replay patterns, and for the driver.

``--kill-on-bad-exit=0``, Slurm's default: srun leaves the other ranks running,
so it is the backend's lifelines that notice the dead rank and end the job (before
them, the driver waited for the dead rank until ``worker_timeout_s``). The
sbatch scripts' own ``--kill-on-bad-exit=1`` is tested with the requeue in
test_slurm_scripts.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mpi"))
from lost_rank_script import PATTERNS, kill_mid_training  # noqa: E402

SRUN = ["srun", "--overcommit", "--mpi=pmi2", "--kill-on-bad-exit=0"]


@pytest.mark.parametrize("algo, ranks, victim, role", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_killed_rank_ends_the_job_naming_it(slurm, algo, ranks, victim, role, tmp_path):
    env = {**slurm.env, "OMP_NUM_THREADS": "1"}
    outcome = kill_mid_training(SRUN, algo, ranks, victim, tmp_path, env)
    assert outcome.returncode != 0, outcome.output[-3000:]
    assert outcome.seconds < 60
    named = f"hpcrl: MPI rank {victim} ({role}, pid {outcome.pid} on "
    assert named in outcome.output and ") died (its process ended" in outcome.output, (
        outcome.output[-3000:]
    )


def test_killed_driver_ends_the_job_naming_it(slurm, tmp_path):
    env = {**slurm.env, "OMP_NUM_THREADS": "1"}
    outcome = kill_mid_training(SRUN, "PPO", 3, 0, tmp_path, env)
    assert outcome.returncode != 0, outcome.output[-3000:]
    assert outcome.seconds < 60
    assert f"rank 0 (pid {outcome.pid} on " in outcome.output, outcome.output[-3000:]
    assert "the driver, died (its connection closed and no shutdown came)" in outcome.output
