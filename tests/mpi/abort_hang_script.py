"""An MPI process whose C exit handlers never return, aborting from a thread.

MPICH's MPI_Abort ends with C's ``exit``, which runs the handlers registered with
``__cxa_atexit``. This script registers one that waits for ever (as a library's
exit handler or static destructor can when another thread holds what it needs),
then ends the job the way a worker rank's lifeline does: ``_abort`` from a
thread while the main thread still runs. Run without a launcher (an MPI
singleton), so that no process manager kills it: only hpcrl's deadline can.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time

from mpi4py import MPI

from hpcrl.backends.mpi import _abort

forever = threading.Event()


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _hanging_exit_handler(_: int | None) -> None:
    sys.stderr.write("exit handler: waiting for ever\n")
    sys.stderr.flush()
    forever.wait()


def main() -> None:
    ctypes.CDLL(None).__cxa_atexit(_hanging_exit_handler, None, None)
    threading.Thread(
        target=_abort, args=(MPI.COMM_WORLD, "the lifeline ends the job"), daemon=True
    ).start()
    while True:
        time.sleep(0.01)


if __name__ == "__main__":
    main()
