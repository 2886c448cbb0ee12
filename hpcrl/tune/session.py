"""What a function trainable calls from inside its trial: ``tune.report``,
``tune.get_checkpoint``, ``tune.save_checkpoint``, ``tune.get_trial_id``,
``tune.get_trial_dir``.

Example (run with ``tune.run(objective, config={"x": tune.uniform(0, 1)})``)::

    def objective(config):
        state = tune.get_checkpoint() or {"step": 0, "total": 0.0}
        for step in range(state["step"], 100):
            state["total"] += config["x"]
            tune.report(score=state["total"])           # iteration step + 1
            tune.save_checkpoint({"step": step + 1, "total": state["total"]})

``report`` blocks until the driver has decided what the trial does next. When
the trial is to stop (a stop criterion, its scheduler), ``report`` does not
return: the function is unwound and the trial ends. When it is to stop with a
checkpoint (paused by its scheduler, ``checkpoint_at_end``, a preemption
signal), ``report`` returns once, and the trial ends inside the next
``save_checkpoint`` (after saving) or ``report``: so save right after
reporting, as above, and no step is lost.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from hpcrl.tune.function_checkpoint import load_function_checkpoint, save_function_checkpoint

if TYPE_CHECKING:
    from hpcrl.tune.preemption import PreemptionWatch
    from hpcrl.tune.trial_protocol import TrialChannel, TrialSpec


class TrialEnd(BaseException):
    """Unwinds a function trainable when its trial is to stop (a BaseException, so
    that ``except Exception`` in the function does not keep it running)."""

    def __init__(self, preempted: bool) -> None:
        super().__init__("the trial was told to stop")
        self.preempted = preempted


class FunctionSession:
    """The trial a function trainable runs in: counts its reports, sends them,
    saves and restores its checkpoints."""

    def __init__(self, spec: TrialSpec, channel: TrialChannel, watch: PreemptionWatch) -> None:
        self.spec = spec
        self.channel = channel
        self.watch = watch
        self.iteration = 0
        self.time_total_s = 0.0
        self.restored_state: dict[str, Any] | None = None
        if spec.restore_from:
            self.restored_state, meta = load_function_checkpoint(spec.restore_from)
            self.iteration = int(meta["iteration"])
            self.time_total_s = float(meta["time_total_s"])
        self._ended: TrialEnd | None = None
        self._since = time.monotonic()

    def report(self, metrics: dict[str, Any]) -> None:
        from hpcrl.tune.trial_protocol import RESULT, TrialEvent

        if self._ended is not None:
            raise self._ended
        now = time.monotonic()
        self.iteration += 1
        self.time_total_s += now - self._since
        result = {
            **metrics,
            "training_iteration": self.iteration,
            "time_this_iter_s": now - self._since,
            "time_total_s": self.time_total_s,
            "timestamp": time.time(),
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
        }
        self.channel.send(TrialEvent(self.spec.trial_id, RESULT, result))
        decision = self.channel.receive()
        self._since = time.monotonic()
        if decision.stop or self.watch.signal_name:
            preempted = self.watch.signal_name is not None
            self._ended = TrialEnd(preempted)
            if not (decision.save or preempted):
                raise self._ended
            # A checkpoint is wanted: return once, so the function can save it; the
            # trial ends at its next save_checkpoint (or report).

    def save_checkpoint(self, state: dict[str, Any]) -> str:
        from hpcrl.io.checkpoint import prune_checkpoints
        from hpcrl.tune.trial_protocol import CHECKPOINT, TrialEvent

        path = save_function_checkpoint(self.spec.logdir, state, self.iteration, self.time_total_s)
        prune_checkpoints(self.spec.logdir, self.spec.keep_checkpoints_num, keep=path)
        data = {"path": path, "iteration": self.iteration}
        self.channel.send(TrialEvent(self.spec.trial_id, CHECKPOINT, data))
        if self._ended is not None:
            raise self._ended
        return path


_current: FunctionSession | None = None


def _session(caller: str) -> FunctionSession:
    if _current is None:
        raise RuntimeError(
            f"tune.{caller} was called outside a trial: call it from a function trainable "
            "run by tune.run(my_function, ...)"
        )
    return _current


def set_session(session: FunctionSession | None) -> None:
    global _current
    _current = session


def report(**metrics: Any) -> None:
    """Report one iteration's metrics (``tune.report(score=0.9, loss=0.1)``).

    The result gets ``training_iteration``, ``time_this_iter_s`` and
    ``time_total_s`` added; it goes to the driver, which logs it and decides
    whether the trial goes on. Returns when it does; when it stops, the
    function is unwound (the trial ends), right here or, when the driver wants
    a checkpoint first, in the next ``save_checkpoint``."""
    _session("report").report(metrics)


def get_checkpoint() -> dict[str, Any] | None:
    """The state saved by ``save_checkpoint`` that this trial continues from (after a
    failure, a resume or a population-based training exploit), else None."""
    return _session("get_checkpoint").restored_state


def save_checkpoint(state: dict[str, Any]) -> str:
    """Save ``state`` (a dict of numbers, strings, lists, dicts and numpy arrays) as
    this trial's checkpoint at the current iteration (the reports so far); returns
    its directory. A retried, resumed or exploiting trial gets it back from
    ``get_checkpoint()`` and counts its iterations on from there."""
    return _session("save_checkpoint").save_checkpoint(state)


def get_trial_id() -> str:
    """The id of the trial this function runs in."""
    return _session("get_trial_id").spec.trial_id


def get_trial_dir() -> str:
    """The directory of the trial this function runs in (for files of its own)."""
    return _session("get_trial_dir").spec.logdir
