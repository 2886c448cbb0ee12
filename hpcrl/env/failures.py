"""Failing sub-envs: an exception (or a step that takes too long) in one env copy.

A rollout worker steps ``num_envs_per_worker`` copies of its env. When one of
them raises in ``step`` or ``reset``:

- by default the worker stops with an ``EnvError`` naming the worker, the
  sub-env, the env and the step, with the env's own traceback. It costs
  nothing while envs behave: the samplers only catch around the env calls
  they make, and the index of the failing copy of a gymnasium
  ``SyncVectorEnv`` or ``AsyncVectorEnv`` is read from the traceback
  (``failed_sub_env``).
- with ``recreate_failed_envs`` the copy is rebuilt from its creator and reset,
  and sampling goes on; the samplers drop the episode it was playing
  (``GuardedEnvs``, ``hpcrl.env.guarded_vector_env``).
- with ``env_step_timeout_s`` a ``step`` or ``reset`` that takes longer is a
  failure like an exception. A call running in the worker's process cannot be
  interrupted safely, so the copies are then called in a stepping thread while
  the worker watches the clock (one hand-over per vector step, not per copy).
  A copy that overruns is given up: the worker goes on with a new stepping
  thread and never touches that copy again (it is not even closed). The old
  thread is asked to stop with an asynchronous exception, which takes effect
  when the env next runs Python code: a busy loop in Python ends, a call stuck
  in C code keeps its (daemon) thread until it returns.

Example:
    >>> failures = FailurePolicy(recreate=True, worker_index=1, env_name="CartPole-v1")
    >>> failures.guarded, failures.where(3)
    (True, "rollout worker 1: sub-env 3 of env 'CartPole-v1'")
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

logger = logging.getLogger("hpcrl.env.failures")

# A sub-env that fails again in its first reset right after it was rebuilt is rebuilt
# again, this many times in all; then rebuilding does not help and the worker stops.
REBUILD_ATTEMPTS = 3

_RECREATE_HINT = "set recreate_failed_envs: true to rebuild failing sub-envs and go on"


class EnvError(RuntimeError):
    """A sub-env raised in ``step``/``reset`` or took longer than ``env_step_timeout_s``.

    The message names the worker, the sub-env, the env and the step and carries the
    env's own traceback (or, for a timeout, where the env was when it was given up).
    Reaches the driver through every backend as the cause of a ``RemoteError``.

    Attributes:
        worker_index: the rollout worker (0: the driver's).
        sub_env_index: the env copy within the worker (None when the vector env
            steps its copies in one call and cannot say which one failed).
        env_name: the env's id or name.
        method: "step" or "reset".
    """

    worker_index: int
    sub_env_index: int | None
    env_name: str
    method: str

    def __repr__(self) -> str:
        # One line: a RemoteError shows repr(cause) above the remote traceback, which
        # holds the whole message, the env's traceback included.
        return f"{type(self).__name__}({str(self).splitlines()[0]!r})"


@dataclass(frozen=True)
class FailurePolicy:
    """What a rollout worker does when one of its sub-envs fails, and how it names them.

    Attributes:
        recreate: rebuild a failing sub-env and go on (``recreate_failed_envs``).
        timeout_s: seconds a ``step``/``reset`` may take (``env_step_timeout_s``;
            None: no limit).
        worker_index: the worker's index, for messages.
        env_name: the env's id or name, for messages.
    """

    recreate: bool = False
    timeout_s: float | None = None
    worker_index: int = 0
    env_name: str = "env"

    @classmethod
    def from_config(cls, config: dict[str, Any], worker_index: int, env: Any) -> FailurePolicy:
        """From ``recreate_failed_envs`` and ``env_step_timeout_s``; a bad value is an error."""
        timeout = config.get("env_step_timeout_s")
        bad_number = isinstance(timeout, bool) or not isinstance(timeout, (int, float))
        if timeout is not None and (bad_number or not timeout > 0):
            raise ValueError(
                f"config key 'env_step_timeout_s' must be a number of seconds > 0 (None: no "
                f"limit), got {timeout!r}"
            )
        recreate = config.get("recreate_failed_envs", False)
        if not isinstance(recreate, bool):
            raise ValueError(
                f"config key 'recreate_failed_envs' must be True or False, got {recreate!r}"
            )
        timeout = None if timeout is None else float(timeout)
        # A remote worker gets the creator registered under config["env"]: name it so.
        named = config.get("env") if isinstance(config.get("env"), str) else env
        return cls(recreate, timeout, worker_index, env_name(named))

    @property
    def guarded(self) -> bool:
        """Whether the sub-envs are called one by one, each one's failure caught."""
        return self.recreate or self.timeout_s is not None

    def where(self, index: int | None, which: str | None = None) -> str:
        """Names sub-env ``index`` (``which``: how to name it instead)."""
        sub_env = which or ("a sub-env" if index is None else f"sub-env {index}")
        return f"rollout worker {self.worker_index}: {sub_env} of env {self.env_name!r}"

    def error(
        self,
        index: int | None,
        method: str,
        failure: CallFailure,
        *,
        steps: int | None = None,
        what: str | None = None,
        fix: str = _RECREATE_HINT,
        which: str | None = None,
    ) -> EnvError:
        """The ``EnvError`` for ``failure`` of ``method`` on sub-env ``index`` (None:
        unknown) after ``steps`` steps of its episode; ``what`` replaces the account of
        what happened, ``which`` the sub-env's name."""
        if what is None:
            if failure.timed_out:
                what = f"took longer than env_step_timeout_s={self.timeout_s:g}s in {method}()"
            else:
                what = f"raised {failure.error} in {method}()"
            if method == "step" and steps is not None:
                what += f" after {steps} steps of its episode"
        heading = (
            "where the env was when it was given up" if failure.timed_out else "the env's traceback"
        )
        error = EnvError(
            f"{self.where(index, which)} {what}; {fix}\n--- {heading} ---\n"
            f"{failure.traceback.rstrip()}"
        )
        # Plain attributes: an exception pickles its args and its __dict__, so they
        # survive the trip to the driver.
        error.worker_index = self.worker_index
        error.sub_env_index = index
        error.env_name = self.env_name
        error.method = method
        return error


def env_name(env: Any) -> str:
    """How messages name ``env``: its id or registered name, or its creator's name."""
    if isinstance(env, str):
        return env
    return getattr(env, "__qualname__", None) or getattr(env, "__name__", None) or repr(env)


@dataclass(frozen=True)
class CallFailure:
    """A call to a sub-env that raised, or that was given up after the timeout."""

    error: str  # repr of the exception ("" for a timeout)
    traceback: str  # the env's traceback, or the stack where it was given up
    timed_out: bool = False

    @classmethod
    def of(cls, err: BaseException, env_traceback: str | None = None) -> CallFailure:
        text = env_traceback or "".join(traceback.format_exception(err))
        return cls(repr(err), text)


def failed_sub_env(vector_env: Any, err: BaseException) -> tuple[int | None, str | None]:
    """(index of the sub-env that raised ``err``, its traceback when it ran elsewhere),
    read from the frames ``err`` passed through: gymnasium's ``SyncVectorEnv`` calls its
    copies in a loop over ``i``; ``AsyncVectorEnv`` re-raises a copy's error in
    ``_raise_if_errors`` with its ``index`` and traceback text. (None, None) for other
    vector envs, which step their copies in one call."""
    index, remote_traceback = None, None
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if isinstance(owner, gym.vector.SyncVectorEnv):
            found = frame.f_locals.get("i")
            index = found if isinstance(found, int) else index
        elif isinstance(owner, gym.vector.AsyncVectorEnv) and "index" in frame.f_locals:
            index, remote_traceback = frame.f_locals["index"], frame.f_locals.get("trace")
        tb = tb.tb_next
    return index, remote_traceback


class EnvCall(NamedTuple):
    """One call of a sub-env's ``method`` (with ``steps``, the steps of its running
    episode, for messages)."""

    index: int
    method: str
    args: tuple = ()
    kwargs: dict | None = None
    steps: int = 0


class GuardedEnvs:
    """A worker's sub-envs, called one by one, each one's failure caught: a failing
    sub-env is rebuilt (``policy.recreate``) or reported as an ``EnvError``.

    Args:
        envs: the sub-envs; the list is changed in place when one is rebuilt.
        make_env: ``make_env(index)`` builds sub-env ``index`` anew.
        policy: what to do on a failure, and the names for messages.

    Example:
        >>> envs = [gym.make("CartPole-v1") for _ in range(2)]
        >>> guarded = GuardedEnvs(envs, lambda i: gym.make("CartPole-v1"),
        ...                       FailurePolicy(recreate=True))
        >>> outcomes, rebuilt = guarded.call([EnvCall(0, "reset"), EnvCall(1, "reset")])
        >>> len(outcomes), rebuilt
        (2, None)
    """

    def __init__(
        self, envs: list[Any], make_env: Callable[[int], Any], policy: FailurePolicy
    ) -> None:
        self.envs = envs
        self.make_env = make_env
        self.policy = policy
        self._caller = SubEnvCaller(policy.timeout_s)
        self._given_up: set[int] = set()
        self._restarts = 0

    def call(self, calls: Sequence[EnvCall]) -> tuple[list[Any], np.ndarray | None]:
        """Make ``calls``; returns (what each returned, which were rebuilt: None when
        none failed). A rebuilt sub-env's entry is what its fresh ``reset()`` returned."""
        thunks = [self._thunk(call) for call in calls]
        outcomes = self._caller.run(thunks)
        rebuilt = None
        for j, outcome in enumerate(outcomes):
            if isinstance(outcome, CallFailure):
                outcomes[j] = self._recover(calls[j], outcome)
                if rebuilt is None:
                    rebuilt = np.zeros(len(calls), dtype=bool)
                rebuilt[j] = True
        return outcomes, rebuilt

    def pop_restarts(self) -> int:
        """Sub-envs rebuilt since the last call."""
        restarts, self._restarts = self._restarts, 0
        return restarts

    def close(self) -> None:
        """Close every sub-env but those given up (their step may still be running)."""
        self._caller.close()
        for i, env in enumerate(self.envs):
            if i not in self._given_up:
                env.close()

    def _thunk(self, call: EnvCall) -> Callable[[], Any]:
        method = getattr(self.envs[call.index], call.method)
        return functools.partial(method, *call.args, **(call.kwargs or {}))

    def _recover(self, call: EnvCall, failure: CallFailure) -> Any:
        policy = self.policy
        self._note(call.index, failure)
        if not policy.recreate:
            raise policy.error(call.index, call.method, failure, steps=call.steps)
        rebuilding = "rebuilding it (recreate_failed_envs)"
        report = policy.error(call.index, call.method, failure, steps=call.steps, fix=rebuilding)
        logger.warning("%s", report)
        for _ in range(REBUILD_ATTEMPTS):
            self._replace(call.index)
            [outcome] = self._caller.run([self.envs[call.index].reset])
            if not isinstance(outcome, CallFailure):
                return outcome
            failure = outcome
            self._note(call.index, failure)
        raise policy.error(
            call.index,
            "reset",
            failure,
            what=f"failed in reset() each of the {REBUILD_ATTEMPTS} times it was rebuilt "
            f"(last: {'took too long' if failure.timed_out else 'raised ' + failure.error})",
            fix="rebuilding does not help: fix the env",
        )

    def _note(self, index: int, failure: CallFailure) -> None:
        if failure.timed_out:
            self._given_up.add(index)  # its call may still be running: never touch it

    def _replace(self, index: int) -> None:
        if index not in self._given_up:
            with contextlib.suppress(Exception):  # it failed already; closing may too
                self.envs[index].close()
        try:
            self.envs[index] = self.make_env(index)
        except Exception as err:
            raise self.policy.error(
                index,
                "reset",
                CallFailure.of(err),
                what=f"could not be rebuilt: its creator raised {err!r}",
                fix="fix the env's creator",
            ) from None
        self._given_up.discard(index)
        self._restarts += 1


class _GivenUp(BaseException):
    """Raised asynchronously in a stepping thread whose env call took too long."""


class _Batch:
    """Calls a stepping thread makes one after another, with the clock the caller
    watches: ``current``, (the call running, when it started), set in one assignment."""

    def __init__(self, calls: Sequence[Callable[[], Any]], results: list, start: int) -> None:
        self.calls = calls
        self.results = results
        self.current = (start, time.monotonic())
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.given_up = False


class _SteppingThread:
    """A daemon thread that runs batches of calls until it is given up on."""

    def __init__(self) -> None:
        self.batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name="hpcrl-env-steps", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(_GivenUp):
            while (batch := self.batches.get()) is not None and self._run(batch):
                pass

    def _run(self, batch: _Batch) -> bool:
        calls, results, lock = batch.calls, batch.results, batch.lock
        for k in range(batch.current[0], len(calls)):
            outcome = _call_once(calls[k])
            with lock:  # the caller gives up on call k under this lock
                if batch.given_up:
                    return False
                results[k] = outcome
                batch.current = (k + 1, time.monotonic())
        batch.done.set()
        return True

    def stack(self) -> str:
        """Where the thread is now, below this module's frames."""
        frame = sys._current_frames().get(self.thread.ident)
        if frame is None:
            return "(the stepping thread has ended)"
        frames = traceback.extract_stack(frame)
        ours = (threading.__file__, __file__)
        below = [f for f in frames if f.filename not in ours] or frames
        return "Stack (most recent call last):\n" + "".join(traceback.format_list(below))

    def give_up(self) -> None:
        """Ask the thread to stop: an exception raised in it when it next runs Python."""
        if self.thread.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.thread.ident), ctypes.py_object(_GivenUp)
            )

    def stop(self) -> None:
        self.batches.put(None)


class SubEnvCaller:
    """Makes calls one after another, returning each one's value or a ``CallFailure``;
    with ``timeout_s``, in a stepping thread, a call that overruns is given up.

    Example:
        >>> SubEnvCaller(None).run([lambda: 1, lambda: 1 / 0])[1].error
        "ZeroDivisionError('division by zero')"
    """

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s
        self._thread: _SteppingThread | None = None

    def run(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        if self.timeout_s is None:
            return [_call_once(call) for call in calls]
        if self._thread is None:
            self._thread = _SteppingThread()
        results: list[Any] = [None] * len(calls)
        start = 0
        while start < len(calls):
            batch = _Batch(calls, results, start)
            self._thread.batches.put(batch)
            start = self._watch(batch)
        return results

    def _watch(self, batch: _Batch) -> int:
        """Wait for ``batch``; returns where the next batch starts (all done: its end)."""
        timeout = self.timeout_s
        while not batch.done.wait(max(0.0, batch.current[1] + timeout - time.monotonic())):
            with batch.lock:
                k, started = batch.current
                if k == len(batch.calls) or time.monotonic() - started < timeout:
                    continue  # done meanwhile, or a later call started: watch that one
                batch.given_up = True
                stack = self._thread.stack()
            batch.results[k] = CallFailure("", stack, timed_out=True)
            self._thread.give_up()
            self._thread = _SteppingThread()
            return k + 1
        return len(batch.calls)

    def close(self) -> None:
        """Let the stepping thread end (a later ``run`` starts another)."""
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def __del__(self) -> None:
        self.close()


def _call_once(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - any env failure is reported or recovered
        # The env's traceback, from the call down (this frame left out).
        below = traceback.format_exception(type(err), err, err.__traceback__.tb_next)
        return CallFailure.of(err, "".join(below))
