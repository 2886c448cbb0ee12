"""Actors in child processes of the driver: how a LearnerGroup runs K > 1 learners
when its backend keeps actors inside the driver process (the local backend).

torch.distributed needs one process per rank, so learners cannot be plain
objects in the driver. Each child is started with ``python -m
hpcrl.learners.processes FD`` and talks to the driver over one end of a
socket pair (``FD``). Not ``multiprocessing``'s spawn: that re-imports the
user's ``__main__`` in every child, which breaks scripts without an
``if __name__ == "__main__"`` guard and runs their top-level code again; nor
fork, which copies torch's thread pools and cannot initialise CUDA. The
child gets the driver's ``sys.path``, so classes defined in the driver's
modules unpickle there; classes made at run time go by value (cloudpickle).

Children run in their own session (a Ctrl-C reaches the driver only, which
then stops them) and exit when the driver's end of the socket closes, so a
driver that dies does not leave them behind.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import pickle
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from hpcrl.backends.base import Backend, Future, RemoteError, picklable_error


def dumps(obj: Any) -> bytes:
    """Plain pickle (fast), cloudpickle for what it cannot do (run-time classes, lambdas)."""
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:  # noqa: BLE001 - anything plain pickle cannot do
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=5)


class ProcessActor:
    """Handle of an actor living in a child process."""

    def __init__(self, index: int, role: str, process: subprocess.Popen, connection: Connection):
        self.index = index
        self.role = role
        self.process = process
        self.connection = connection
        self.sent = 0  # requests sent; answers come back in the same order
        self.answered = 0
        self.results: dict[int, tuple[bool, Any]] = {}
        self.methods: dict[int, str] = {}

    @property
    def where(self) -> str:
        return f"local {self.role} process {self.process.pid}"

    def __repr__(self) -> str:
        return f"ProcessActor({self.where})"

    def send(self, method: str, args: tuple, kwargs: dict) -> ProcessFuture:
        return self.send_packed(method, dumps((method, args, kwargs)))

    def send_packed(self, method: str, request: bytes) -> ProcessFuture:
        """Send ``request``, ``dumps((method, args, kwargs))`` made by the caller."""
        call_id = self.sent
        self.sent += 1
        self.methods[call_id] = method
        future = ProcessFuture(self, call_id)
        try:
            self.connection.send_bytes(request)
        except OSError:
            self._died()
        return future

    def receive(self) -> None:
        """Take the next answer off the connection (blocking)."""
        try:
            ok, value, remote_tb = pickle.loads(self.connection.recv_bytes())
        except (EOFError, OSError):
            self._died()
            return
        call_id = self.answered
        self.answered += 1
        where = f"{self.where} ({self.methods.pop(call_id)})"
        self.results[call_id] = (ok, value if ok else RemoteError(where, value, remote_tb))

    def _died(self) -> None:
        """The child is gone: every unanswered call fails, saying how it ended."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1.0)
        code = self.process.returncode
        how = "is still running" if code is None else f"exited with code {code}"
        for call_id in range(self.answered, self.sent):
            method = self.methods.pop(call_id, "?")
            error = RuntimeError(f"the process {how} (its stderr above says why)")
            self.results[call_id] = (False, RemoteError(f"{self.where} ({method})", error, ""))
        self.answered = self.sent


class ProcessFuture(Future):
    """The answer to one call of one process actor."""

    def __init__(self, actor: ProcessActor, call_id: int) -> None:
        self.actor = actor
        self.call_id = call_id

    def done(self) -> bool:
        while self.call_id not in self.actor.results and self.actor.connection.poll(0):
            self.actor.receive()
        return self.call_id in self.actor.results

    def result(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.call_id not in self.actor.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.actor.connection.poll(left):
                raise TimeoutError(f"{self.actor.where} did not answer within {timeout:g}s")
            self.actor.receive()
        ok, value = self.actor.results.pop(self.call_id)
        if not ok:
            raise value
        return value


class ProcessBackend(Backend):
    """One child process per actor; calls are messages over a socket pair.

    Args:
        env: extra environment variables for the children.

    Example:
        >>> backend = ProcessBackend()
        >>> [actor] = backend.spawn(list, [1, 2], count=1)
        >>> backend.get(backend.call([actor], "__len__"))
        [2]
        >>> backend.shutdown()
    """

    name = "process"

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})
        self.actors: list[ProcessActor] = []
        atexit.register(self.shutdown)

    def spawn(
        self, cls: type, *args: Any, count: int = 1, role: str = "worker", **kwargs: Any
    ) -> list[ProcessActor]:
        new = [self._start(len(self.actors) + i, role) for i in range(count)]
        self.actors.extend(new)
        futures = [actor.send("__spawn__", (cls, args, kwargs), {}) for actor in new]
        try:
            self.get(futures)
        except BaseException:
            for actor in new:
                self.kill(actor)
            raise
        return new

    def call(
        self, actors: Sequence[ProcessActor], method: str, *args: Any, **kwargs: Any
    ) -> list[Future]:
        return [actor.send(method, args, kwargs) for actor in actors]

    def broadcast(self, actors: Sequence[ProcessActor], method: str, payload: Any) -> None:
        """``method(payload)`` on each actor, the request pickled once for all."""
        request = dumps((method, (payload,), {}))
        self.get([actor.send_packed(method, request) for actor in actors])

    def wait(
        self, futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Future], list[Future]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done = [f for f in futures if f.done()]
            if len(done) >= min(num_returns, len(futures)):
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            waiting = {f.actor.connection for f in futures if f not in done}
            for connection in wait(list(waiting), left):
                for future in futures:
                    if future.actor.connection is connection:
                        future.actor.receive()
                        break
        return done, [f for f in futures if f not in done]

    def kill(self, actor: ProcessActor) -> None:
        """End the actor's process at once (it may be blocked in a collective)."""
        with contextlib.suppress(OSError):
            actor.connection.close()
        if actor.process.poll() is None:
            actor.process.terminate()
            try:
                actor.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                actor.process.kill()
                actor.process.wait()

    def restart(self, actor: ProcessActor) -> ProcessActor:
        raise NotImplementedError("process actors are not restarted; start a new group")

    def shutdown(self) -> None:
        """Ask every child to stop its actor and exit; end those that do not within 10 s."""
        for actor in self.actors:
            with contextlib.suppress(OSError):
                actor.connection.send_bytes(dumps(("__shutdown__", (), {})))
        deadline = time.monotonic() + 10.0
        for actor in self.actors:
            with contextlib.suppress(subprocess.TimeoutExpired):
                actor.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            self.kill(actor)
        self.actors.clear()
        atexit.unregister(self.shutdown)

    def _start(self, index: int, role: str) -> ProcessActor:
        ready = [i for i, (_, _, env) in enumerate(_PRESTARTED) if env == self.env]
        if ready:
            process, connection, _ = _PRESTARTED.pop(ready[0])
        else:
            process, connection = _start_child(self.env)
        return ProcessActor(index, role, process, connection)


# Children started ahead by ``prestart`` (with the extra environment they were
# started with), taken by the next spawns of a ProcessBackend with that environment.
_PRESTARTED: list[tuple[subprocess.Popen, Connection, dict[str, str]]] = []


def prestart(
    count: int,
    preload: Sequence[str] = ("hpcrl.learners.learner",),
    env: dict[str, str] | None = None,
) -> None:
    """Start ``count`` children now, with the extra environment ``env``, importing
    ``preload`` (by default the learner's modules, torch among them) while this
    process goes on; the next ``ProcessBackend.spawn`` calls of a backend with the
    same ``env`` take them instead of starting new ones.

    ``hpcrl train`` calls it before it imports torch itself when the run has
    ``num_learners`` > 1, or DD-PPO workers, on the local backend, so the
    children's imports overlap the driver's rather than follow them. Children not
    taken exit when this process does (their socket closes). Children of this
    ``env`` still waiting count towards ``count`` (a program that runs ``hpcrl
    train``'s main again and again in one process, whose runs failed before they
    took theirs, keeps at most ``count`` waiting).
    """
    env = dict(env or {})
    waiting = sum(1 for *_, their_env in _PRESTARTED if their_env == env)
    if not _PRESTARTED:
        atexit.register(_end_prestarted)
    _PRESTARTED.extend((*_start_child(env, preload), env) for _ in range(count - waiting))


def _end_prestarted() -> None:
    while _PRESTARTED:
        process, connection, _ = _PRESTARTED.pop()
        connection.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5.0)


def _start_child(
    extra_env: dict[str, str], preload: Sequence[str] = ()
) -> tuple[subprocess.Popen, Connection]:
    ours, theirs = socket.socketpair()
    env = {**os.environ, **extra_env}
    paths = [p for p in sys.path if p and os.path.exists(p)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    process = subprocess.Popen(
        [sys.executable, "-m", "hpcrl.learners.processes", str(theirs.fileno()), *preload],
        pass_fds=(theirs.fileno(),),
        env=env,
        start_new_session=True,
    )
    theirs.close()
    return process, Connection(ours.detach())


def serve(fd: int) -> None:
    """The loop of a child: build the actor, answer calls in order, exit on shutdown or EOF."""
    connection = Connection(fd)
    actor: Any = None
    while True:
        try:
            method, args, kwargs = pickle.loads(connection.recv_bytes())
        except EOFError:
            break
        if method == "__shutdown__":
            break
        try:
            if method == "__spawn__":
                cls, cls_args, cls_kwargs = args
                actor = cls(*cls_args, **cls_kwargs)
                value = None
            else:
                value = getattr(actor, method)(*args, **kwargs)
            reply = dumps((True, value, None))
        except Exception as err:  # noqa: BLE001 - sent to the driver with its traceback
            reply = dumps((False, picklable_error(err), traceback.format_exc()))
        try:
            connection.send_bytes(reply)
        except OSError:
            break
    if actor is not None and hasattr(actor, "stop"):
        actor.stop()


if __name__ == "__main__":
    # python -m hpcrl.learners.processes FD [MODULE ...]: the modules are imported
    # first (prestart); one that fails is imported again, with its error, when used.
    for module in sys.argv[2:]:
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    serve(int(sys.argv[1]))
