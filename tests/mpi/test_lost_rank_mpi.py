"""A rank killed with SIGKILL under mpiexec ends the job non-zero within 60 s, for
the synchronous, asynchronous and replay patterns.

MPICH's mpiexec kills the other ranks within milliseconds of the first death,
and its "BAD TERMINATION" box then names the pid of the lowest rank it killed
(usually the driver's), not the dead rank's. The backend's lifelines name the
dead rank when rank 0's thread gets to log before mpiexec kills it, which is a
race: so here the name is checked only where it appears, and never wrong. Under
srun, which leaves the other ranks running, the name is always there: see
tests/slurm/test_lost_rank_slurm.py.
"""

from __future__ import annotations

import os
import re
import shutil

import pytest
from lost_rank_script import PATTERNS, kill_mid_training  # this folder is on sys.path

MPIEXEC = shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(
    MPIEXEC is None, reason="no mpiexec on PATH (pip install mpich, or load the cluster's MPI)"
)


@pytest.mark.parametrize("algo, ranks, victim, role", PATTERNS, ids=[p[0] for p in PATTERNS])
def test_killed_rank_ends_the_job(algo, ranks, victim, role, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outcome = kill_mid_training([MPIEXEC], algo, ranks, victim, tmp_path, env)
    assert outcome.returncode != 0, outcome.output[-3000:]
    assert outcome.seconds < 60
    assert "NOT KILLED" not in outcome.output
    # the backend logged every rank's role, pid and host at the start
    assert f"MPI rank {victim} ({role}, pid {outcome.pid} on " in outcome.output
    named = re.findall(r"hpcrl: (MPI rank .*) died \(", outcome.output)
    assert all(f"MPI rank {victim} ({role}, pid {outcome.pid} " in n for n in named), named
