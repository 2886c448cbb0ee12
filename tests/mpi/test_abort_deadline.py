"""A rank that aborts the job ends within hpcrl's deadline even when MPI_Abort does
not return: C's ``exit``, which MPI_Abort calls, can wait for ever in a library's
exit handler (a rank under srun once printed MPICH's abort message and never
ended)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from hpcrl.backends.mpi import ABORT_DEADLINE_S

SCRIPT = Path(__file__).with_name("abort_hang_script.py")


def test_an_abort_whose_exit_hangs_still_ends_the_process_within_the_deadline():
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    seconds = time.monotonic() - started
    # the hang was real: MPI_Abort reached the exit handler, which never returned
    assert "exit handler: waiting for ever" in run.stderr, run.stderr
    assert "the lifeline ends the job" in run.stderr
    assert run.returncode == -signal.SIGALRM, (run.returncode, run.stderr[-2000:])
    assert seconds < ABORT_DEADLINE_S + 10
