"""A local executor's worker process: runs trials one after another.

Started as ``python -m hpcrl.tune.local_worker FD PARENT_PID`` with ``FD`` one
end of a socket pair; the driver sends ``(trial_id, cloudpickled TrialSpec)``,
the worker runs it with ``run_trial`` over a ``PipeChannel`` and waits for the
next. It lives as long as the experiment, so torch and the trainer's modules
are imported once per worker, not once per trial. It exits when the driver
closes the socket, and (Linux) is killed with the driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from multiprocessing.connection import Connection

from hpcrl.tune.trial_protocol import (
    ENDED,
    ChannelClosed,
    TrialChannel,
    TrialDecision,
    TrialEvent,
    run_trial,
)

# Each trial's stdout and stderr, in its directory.
OUTPUT_FILE = "output.log"


class PipeChannel(TrialChannel):
    """A trial channel over a ``multiprocessing`` connection (a socket pair)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def send(self, event: TrialEvent) -> None:
        try:
            self.connection.send(event)
        except OSError as err:
            raise ChannelClosed(f"the driver is gone: {err}") from err

    def receive(self) -> TrialDecision:
        try:
            return self.connection.recv()
        except (EOFError, OSError) as err:
            raise ChannelClosed(f"the driver is gone: {err!r}") from err


def main(argv: list[str]) -> int:
    fd, parent = int(argv[1]), int(argv[2])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    connection = Connection(fd)
    hello = connection.recv()
    # Let the specs' functions and classes unpickle from the driver's modules.
    sys.path[:0] = [entry for entry in hello["sys_path"] if entry not in sys.path]
    channel = PipeChannel(connection)
    while True:
        try:
            trial_id, payload = connection.recv()
        except (EOFError, OSError):
            return 0
        try:
            import cloudpickle

            spec = cloudpickle.loads(payload)
        except Exception as err:
            text = f"the trial could not be unpickled in its process: {err!r}"
            channel.send(TrialEvent(trial_id, ENDED, {"error": text, "preempted": False}))
            continue
        os.makedirs(spec.logdir, exist_ok=True)
        try:
            with _output_to(os.path.join(spec.logdir, OUTPUT_FILE)):
                run_trial(spec, channel)
        except ChannelClosed:
            return 0


@contextlib.contextmanager
def _output_to(path: str) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _die_with_parent(parent: int) -> None:
    """Have Linux kill this process when the driver dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the worker exits when its socket closes
    if os.getppid() != parent:  # the driver died before prctl took effect
        sys.exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
