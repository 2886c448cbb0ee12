"""Preemption: finish the step, checkpoint and exit on a scheduler's warning signal.

Batch schedulers warn a job before they stop it: Slurm sends SIGTERM when a
job is cancelled, preempted or reaches its time limit (then SIGKILL after
``KillWait``, 30 s by default), and SIGUSR1 (or another signal) ahead of the
time limit with ``#SBATCH --signal=USR1@120``. While an ``Experiment`` runs,
these signals do not kill the driver: the current training iteration
finishes, a checkpoint is written, and ``hpcrl train`` exits with
``EXIT_PREEMPTED``, the code a job script requeues on; ``hpcrl train
--resume`` then continues from that checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

from hpcrl.backends.base import PREEMPTION_SIGNALS

# sysexits.h EX_TEMPFAIL, "temporary failure; the user is invited to retry":
# what hpcrl train exits with after checkpointing on a preemption signal.
EXIT_PREEMPTED = 75


class TrialPreempted(Exception):
    """Training stopped on a preemption signal after writing a checkpoint.

    Attributes:
        signal_name: "SIGTERM" or "SIGUSR1".
        iteration: the last completed training iteration.
        checkpoint: path of the checkpoint written at it.
    """

    def __init__(self, signal_name: str, iteration: int, checkpoint: str) -> None:
        self.signal_name = signal_name
        self.iteration = iteration
        self.checkpoint = checkpoint
        super().__init__(
            f"preempted by {signal_name} after iteration {iteration}; checkpoint {checkpoint}"
        )


class PreemptionWatch:
    """While active (a ``with`` block), SIGTERM and SIGUSR1 are noted instead of
    ending the process; ``signal_name`` says which arrived first (None: none).

    Handlers can only be installed from the main thread; elsewhere the watch
    is inactive and the signals keep their usual effect.

    Example:
        >>> import os
        >>> with PreemptionWatch() as watch:
        ...     os.kill(os.getpid(), signal.SIGUSR1)
        ...     watch.signal_name
        'SIGUSR1'
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            print(
                f"hpcrl: received {self.signal_name}; finishing this iteration, then "
                "writing a checkpoint and exiting",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
