"""The Dask backend: every actor is a Dask actor on a Dask worker of its own.

Where the workers come from:

- by default a ``distributed.LocalCluster`` on this machine: one worker
  process per actor, one thread each, scheduler and dashboard bound to
  127.0.0.1 (the dashboard's address is printed). It grows as actors are
  spawned and is closed by ``shutdown()``.
- with ``address`` (``dask_address`` in the config, ``--dask-address`` on the
  command line) the backend joins a running scheduler, puts each actor on a
  Dask worker that holds no other actor of this backend, and leaves the
  cluster running at ``shutdown()``.

With ``security`` (``dask_security`` in the config, ``--dask-tls-*`` on the
command line; see ``hpcrl.backends.dask_tls``) every connection uses TLS: the
local cluster is started with ``protocol="tls"``, and a joined scheduler must
accept hpcrl's certificate. Joining fails within ``timeout_s`` (at most 30 s)
with a ConnectionError naming the cause and the fix.

Each actor is hosted by an ``ActorHost`` Dask actor, which runs the actor's
methods in the Dask worker's actor thread and sends an exception back with
its traceback; it reaches the driver as ``RemoteError`` naming the actor and
its Dask worker. ``broadcast`` serialises the payload once and sends the same
frames to every actor's worker. Waiting for any result waits on the actor
futures in the client's event loop.

Worker loss: the backend follows the scheduler's ``remove-worker`` events.
A call to an actor whose Dask worker died (process killed, node gone) ends in
``WorkerLostError`` naming the actor, its Dask worker and process, and why
(the nanny's word, such as "killed by signal 9", when it has one);
``restart(actor)`` re-creates the actor on a free live Dask worker.
``WorkerSet`` does that and hands the new actor the current weights.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import socket
import sys
import time
import traceback
import uuid
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hpcrl.backends.base import (
    Backend,
    Future,
    RemoteError,
    WorkerLostError,
    WorkerTimeoutError,
    picklable_error,
)
from hpcrl.backends.prestart import start_dask_forkserver

try:
    import dask.config
    import distributed
    from distributed.protocol import Serialized, serialize
except ImportError as _err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "backend='dask' needs dask and distributed: `pip install -e .[dask]` "
        f"(or `pip install dask distributed`); import failed with: {_err}"
    ) from _err
from hpcrl.backends.dask_tls import connect_client, make_security  # noqa: E402 - needs distributed

# How long a failed call waits for the scheduler to confirm that the worker left.
LOSS_CONFIRM_S = 5.0
# How often a wait looks at the actors' state besides the events that wake it.
WAIT_SLICE_S = 1.0
# Seconds between "waiting for Dask workers" lines.
PROGRESS_EVERY_S = 10.0


class ActorCallError(Exception):
    """An exception raised by a hosted actor: ``args = (error, traceback text)``."""


class ActorHost:
    """Hosts one actor inside a Dask worker (this class is the Dask actor).

    Runs the actor's methods in the worker's actor thread and turns their
    exceptions into ``ActorCallError`` carrying the traceback text, which
    Dask would otherwise drop.
    """

    def __init__(self, cls: type, args: tuple, kwargs: dict, num_torch_threads: int | None) -> None:
        try:
            # One torch thread per worker process unless configured (torch is already
            # imported here if the arguments needed it).
            if num_torch_threads is not None or "torch" in sys.modules:
                import torch

                torch.set_num_threads(num_torch_threads or 1)
            self.instance = cls(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - sent to the driver with its traceback
            raise ActorCallError(picklable_error(err), traceback.format_exc()) from None

    def call(self, method: str, args: tuple, kwargs: dict) -> Any:
        try:
            return getattr(self.instance, method)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - sent to the driver with its traceback
            raise ActorCallError(picklable_error(err), traceback.format_exc()) from None

    def call_with(self, method: str, payload: Any) -> Any:
        """``method(payload)``; the payload comes as a top-level argument, so frames
        serialised once by the driver arrive without being pickled again."""
        return self.call(method, (payload,), {})

    def where(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "address": distributed.get_worker().address,
        }

    def stop(self) -> None:
        """The actor's ``stop()``, if it has one."""
        if hasattr(self.instance, "stop"):
            self.call("stop", (), {})


class DaskActor:
    """Handle of an actor living on a Dask worker.

    Attributes:
        index: 1, 2, ... among the backend's actors of the same role.
        role: what the actor is ("rollout worker", "learner", ...).
        address: the Dask worker it runs on.
        pid: that worker's process id.
        restarts: how often it was re-created.
    """

    def __init__(self, index: int, role: str, factory: tuple[type, tuple, dict]) -> None:
        self.index = index
        self.role = role
        self._factory = factory
        self.key = ""
        self.address = ""
        self.host = ""
        self.pid = 0
        self.nanny: str | None = None
        self.restarts = 0
        self._handle: Any = None  # distributed.Actor of the ActorHost
        self._creation: Any = None  # the distributed.Future that made it

    def describe(self) -> str:
        return f"{self.role} {self.index} (Dask worker {self.address}, pid {self.pid})"

    def __repr__(self) -> str:
        return f"DaskActor({self.role} {self.index} on {self.address})"


class DaskFuture(Future):
    """The result of one call to one Dask actor."""

    def __init__(
        self, backend: DaskBackend, actor: DaskActor, method: str, inner: Any, error: Any = None
    ) -> None:
        self.backend = backend
        self.actor = actor
        self.method = method
        self.key = actor.key
        self.where = actor.describe()
        self._creation = actor._creation
        self._inner = inner  # distributed ActorFuture, None if the call could not be made
        # (True, value) or (False, exception) once known
        self._outcome: tuple[bool, Any] | None = None if error is None else (False, error)

    def done(self) -> bool:
        return self._outcome is not None or self._inner.done() or self.backend._is_lost(self)

    def result(self, timeout: float | None = None) -> Any:
        self.backend._wait_for([self], 1, timeout)
        return self.backend._result(self)


class DaskBackend(Backend):
    """Actors as Dask actors, one Dask worker process and one thread each.

    Args:
        address: scheduler to join (``tcp://host:8786``); None starts a
            ``LocalCluster`` that ``shutdown()`` closes.
        num_workers: Dask workers the local cluster starts with (it grows as
            actors are spawned).
        timeout_s: seconds a call may go unanswered before
            ``WorkerTimeoutError``; also how long to wait for a free Dask
            worker (None: wait forever).
        num_torch_threads: torch threads per worker process (default 1).
        dashboard_address: where the local cluster serves its dashboard.
        security: the ``dask_security`` config: TLS files and options (see
            ``hpcrl.backends.dask_tls``); None: Dask's own configuration.
        verbose: print the cluster, dashboard and lost-worker lines.

    Example::

        backend = DaskBackend()               # or DaskBackend("tcp://head:8786")
        # TLS: DaskBackend("tls://head:8786", security={"tls_ca_file": "ca.pem",
        #          "tls_client_cert": "cert.pem", "tls_client_key": "key.pem"})
        actors = backend.spawn(Counter, count=2)
        backend.get(backend.call(actors, "add", 1))
        backend.shutdown()
    """

    name = "dask"
    loses_actors = True

    def __init__(
        self,
        address: str | None = None,
        *,
        num_workers: int | None = None,
        timeout_s: float | None = None,
        num_torch_threads: int | None = None,
        dashboard_address: str = "127.0.0.1:8787",
        security: Mapping[str, Any] | None = None,
        verbose: bool = True,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise TypeError(
                f"dask_address must be a string like 'tcp://host:8786', got {address!r}"
            )
        self.timeout_s = timeout_s
        self.num_torch_threads = num_torch_threads
        self.verbose = verbose
        self.cluster: Any = None
        self.address = address
        self._actors: list[DaskActor] = []
        self._lost: dict[str, str] = {}  # actor key -> what the scheduler said
        self._reasons: dict[str, str] = {}  # actor key -> why it was lost, in words
        self._wakeup: asyncio.Event | None = None
        self._watched: set[str] = set()  # Dask workers whose events this backend follows
        self._closed = False
        self.security = make_security(security, local_cluster=address is None)
        if address is None:
            self.cluster = start_local_cluster(
                num_workers or 0, dashboard_address, security=self.security
            )
            self.address = self.cluster.scheduler_address
            self._say(_cluster_line(self.cluster))
        try:
            self.client = connect_client(
                self.cluster or address,
                self.security,
                timeout_s=30 if timeout_s is None else min(timeout_s, 30),
                direct_to_workers=True,
            )
        except ConnectionError:
            if self.cluster is not None:
                self.cluster.close()
            raise
        atexit.register(self.shutdown)

    # -- actors ----------------------------------------------------------
    def default_num_workers(self) -> int:
        """Local cluster: one per core; joined cluster: its Dask workers free now (at least 1)."""
        if self.cluster is not None:
            return os.cpu_count() or 1
        return max(1, len(choose_workers(self._live_workers(), self._occupancy(), None)))

    def spawn(
        self, cls: type, *args: Any, count: int = 1, role: str = "worker", **kwargs: Any
    ) -> list[DaskActor]:
        addresses = self._reserve_workers(count, role)
        first = 1 + sum(actor.role == role for actor in self._actors)
        actors = [DaskActor(first + i, role, (cls, args, kwargs)) for i in range(count)]
        for actor, address in zip(actors, addresses):
            self._submit(actor, address)
        for actor in actors:
            self._finish_creation(actor)
        self._actors.extend(actors)
        return actors

    def call(
        self, actors: Sequence[DaskActor], method: str, *args: Any, **kwargs: Any
    ) -> list[Future]:
        return [self._call(actor, method, "call", method, args, kwargs) for actor in actors]

    def broadcast(self, actors: Sequence[DaskActor], method: str, payload: Any) -> None:
        """``method(payload)`` on each actor; returns once every actor has applied it.

        The payload is serialised once; each actor's worker gets the same frames.
        (``Client.scatter(broadcast=True)`` would also send it once, but through
        the scheduler and a replication round: for 100 KB to two workers that
        alone takes over twice a whole round of plain actor calls; see
        benchmarks/README.md.)
        """
        frames = Serialized(*serialize(payload))
        self.get([self._call(actor, method, "call_with", method, frames) for actor in actors])

    def wait(
        self, futures: Sequence[Future], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[Future], list[Future]]:
        self._wait_for(futures, num_returns, timeout, raise_on_timeout=False)
        done = [f for f in futures if f.done()]
        return done, [f for f in futures if not f.done()]

    def get(self, futures: Sequence[Future]) -> list[Any]:
        """Results in order, once all calls have ended; raises the first failure."""
        self._wait_for(futures, len(futures), None)
        return [self._result(f) for f in futures]

    def is_alive(self, actor: DaskActor) -> bool:
        return actor.key not in self._lost and _creation_ok(actor._creation)

    def kill(self, actor: DaskActor) -> None:
        """Stop the actor and free its Dask worker."""
        self._stop(actor)
        self._actors.remove(actor)

    def restart(self, actor: DaskActor) -> DaskActor:
        """Create the actor anew from its original arguments, on a free live Dask worker
        (the one it ran on, if that one is alive)."""
        prefer = actor.address if self.is_alive(actor) else None
        self._stop(actor)
        [address] = self._reserve_workers(1, actor.role, prefer=prefer)
        actor.restarts += 1
        self._submit(actor, address)
        self._finish_creation(actor)
        return actor

    def shutdown(self) -> None:
        """Stop every actor; close the client, and the local cluster if this backend started it."""
        if self._closed:
            return
        atexit.unregister(self.shutdown)
        try:
            alive = [a for a in self._actors if self.is_alive(a)]
            stops = [self._call(a, "stop", "stop") for a in alive]
            with contextlib.suppress(Exception):
                self._wait_for(stops, len(stops), 10.0, raise_on_timeout=False)
            for actor in self._actors:
                _release(actor)
            self._actors.clear()
        finally:
            self._closed = True
            for address in list(self._watched):
                with contextlib.suppress(Exception):
                    self.client.unsubscribe_topic(address)
            with contextlib.suppress(Exception):
                self.client.close()
            if self.cluster is not None:
                with contextlib.suppress(Exception):
                    self.cluster.close()

    # -- placing and creating actors -------------------------------------
    def _live_workers(self) -> list[str]:
        return sorted(self.client.nthreads())

    def _occupancy(self) -> Counter[str]:
        """Actors per Dask worker: this backend's, and any other client's the scheduler knows."""
        mine = Counter(a.address for a in self._actors if self.is_alive(a))
        try:
            theirs = self.client.run_on_scheduler(_actors_per_worker)
        except Exception:  # noqa: BLE001 - e.g. a scheduler that refuses to run functions
            return mine
        return mine | Counter(theirs)

    def _reserve_workers(self, count: int, role: str, prefer: str | None = None) -> list[str]:
        """``count`` live Dask workers holding no actor; the local cluster grows to
        have them, a joined cluster is waited for (with progress lines)."""
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        next_line = time.monotonic() + PROGRESS_EVERY_S
        if self.cluster is not None:
            wanted = len(self._occupancy()) + count
            if len(self.cluster.worker_spec) < wanted:
                self.cluster.scale(wanted)
        while True:
            live = self._live_workers()
            free = choose_workers(live, self._occupancy(), count, prefer)
            if len(free) == count:
                return free
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WorkerTimeoutError(
                    f"asked for {count} {role}(s) but only {len(free)} of the "
                    f"{len(live)} Dask workers at {self.address} are free after "
                    f"{self.timeout_s:g}s (each actor takes a Dask worker of its own); add "
                    f"workers to the cluster or ask for fewer"
                )
            if now >= next_line:
                self._say(
                    f"waiting for Dask workers at {self.address}: {len(free)} of {count} "
                    f"free for {role}s ({len(live)} connected)"
                )
                next_line = now + PROGRESS_EVERY_S
            time.sleep(0.1)

    def _submit(self, actor: DaskActor, address: str) -> None:
        cls, args, kwargs = actor._factory
        if address not in self._watched:
            # The scheduler logs a worker's removal under the worker's address.
            self.client.subscribe_topic(address, functools.partial(self._on_worker_event, address))
            self._watched.add(address)
        actor.key = f"hpcrl-{actor.role.replace(' ', '-')}-{actor.index}-{uuid.uuid4().hex[:8]}"
        actor.address = address
        actor._creation = self.client.submit(
            ActorHost,
            cls,
            args,
            kwargs,
            self.num_torch_threads,
            actor=True,
            key=actor.key,
            workers=[address],
            allow_other_workers=False,
            pure=False,
        )

    def _finish_creation(self, actor: DaskActor) -> None:
        where = f"{actor.role} {actor.index} (Dask worker {actor.address})"
        try:
            # Deserialised under this client, the handle talks through it.
            with self.client.as_current():
                actor._handle = actor._creation.result(timeout=self.timeout_s)
        except ActorCallError as err:
            raise RemoteError(f"{where} (__init__)", err.args[0], err.args[1]) from None
        except TimeoutError as err:
            raise WorkerTimeoutError(
                f"{where} was not created within {self.timeout_s:g}s; raise worker_timeout_s "
                "if the Dask workers are just slow to start"
            ) from err
        except Exception as err:
            if actor.address in self.client.nthreads():
                raise
            # Its Dask worker died while making it: a loss like any other.
            self._lost[actor.key] = "hpcrl-not-listed"
            raise WorkerLostError(
                where, f"its Dask worker left the cluster while creating it ({err!r})", actor
            ) from err
        info = self._call(actor, "where", "where").result()
        actor.pid, actor.host = info["pid"], info["host"]
        worker = self.client.scheduler_info(n_workers=-1)["workers"].get(actor.address, {})
        actor.nanny = worker.get("nanny")

    def _stop(self, actor: DaskActor) -> None:
        if self.is_alive(actor):
            with contextlib.suppress(RemoteError, WorkerTimeoutError):
                self._call(actor, "stop", "stop").result(timeout=30.0)
        _release(actor)

    # -- calls and results -----------------------------------------------
    def _call(self, actor: DaskActor, method: str, host_method: str, *host_args: Any) -> DaskFuture:
        if self._closed:
            raise RuntimeError("the Dask backend was shut down")
        try:
            inner = getattr(actor._handle, host_method)(*host_args)
        except Exception as err:  # noqa: BLE001 - e.g. Dask saying the actor's worker is gone
            return DaskFuture(self, actor, method, None, error=err)
        return DaskFuture(self, actor, method, inner)

    def _is_lost(self, future: DaskFuture) -> bool:
        return future.key in self._lost or not _creation_ok(future._creation)

    def _result(self, future: DaskFuture) -> Any:
        if future._outcome is None and self._is_lost(future):
            raise self._lost_error(future)
        assert future._outcome is not None, "result of a call that has not ended"
        ok, value = future._outcome
        if ok:
            return value
        where = f"{future.where} ({future.method})"
        if isinstance(value, ActorCallError):
            raise RemoteError(where, value.args[0], value.args[1])
        # Dask could not run the call: a lost worker, or a failure in Dask itself.
        if self._confirm_loss(future):
            raise self._lost_error(future)
        raise RemoteError(where, value, "".join(traceback.format_exception(value)))

    def _wait_for(
        self,
        futures: Sequence[Future],
        num_returns: int,
        timeout: float | None,
        raise_on_timeout: bool = True,
    ) -> None:
        timeout = self.timeout_s if timeout is None else timeout
        dask_futures = [f for f in futures if isinstance(f, DaskFuture)]
        if len(dask_futures) != len(futures):
            raise TypeError("DaskBackend can only wait for the futures its own calls returned")
        self.client.sync(self._wait_on_loop, dask_futures, num_returns, timeout)
        if raise_on_timeout and sum(f.done() for f in dask_futures) < num_returns:
            late = [f for f in dask_futures if not f.done()]
            raise WorkerTimeoutError.for_calls(
                ", ".join(sorted({f.where for f in late})), timeout, (f.method for f in late)
            )

    async def _wait_on_loop(
        self, futures: list[DaskFuture], num_returns: int, timeout: float | None
    ) -> None:
        """In the client's event loop: wait until ``num_returns`` calls have ended
        (or their actors are lost), collecting every outcome that is in."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        tasks: dict[asyncio.Task, DaskFuture] = {}
        wake: asyncio.Task | None = None
        try:
            while True:
                for future in futures:
                    if future._outcome is None and future._inner.done():
                        future._outcome = await _capture(future._inner)
                if sum(f.done() for f in futures) >= num_returns:
                    return
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                for future in futures:
                    if not future.done() and future not in tasks.values():
                        tasks[asyncio.ensure_future(_capture(future._inner))] = future
                if wake is None or wake.done():
                    self._wakeup.clear()
                    wake = asyncio.ensure_future(self._wakeup.wait())
                slice_s = WAIT_SLICE_S if remaining is None else min(remaining, WAIT_SLICE_S)
                finished, _ = await asyncio.wait(
                    [*tasks, wake], timeout=slice_s, return_when=asyncio.FIRST_COMPLETED
                )
                for task in finished:
                    if task in tasks:
                        tasks.pop(task)._outcome = task.result()
        finally:
            for task in [*tasks, *([wake] if wake else [])]:
                task.cancel()

    # -- worker loss -----------------------------------------------------
    def _on_worker_event(self, address: str, event: tuple[float, dict[str, Any]]) -> None:
        """Called in the client's event loop for each event about a Dask worker in use."""
        _, message = event
        if not isinstance(message, dict) or message.get("action") != "remove-worker":
            return
        self._watched.discard(address)
        self.client.unsubscribe_topic(address)
        stimulus = str(message.get("stimulus_id", ""))
        for actor in self._actors:
            if actor.address == address and actor.key not in self._lost:
                self._lost[actor.key] = stimulus
        if self._wakeup is not None:
            self._wakeup.set()

    def _confirm_loss(self, future: DaskFuture) -> bool:
        """After a call Dask could not make: wait briefly for the scheduler to say
        whether the actor's worker left."""
        deadline = time.monotonic() + LOSS_CONFIRM_S
        while time.monotonic() < deadline:
            if self._is_lost(future):
                return True
            with contextlib.suppress(Exception):
                if future.actor.address not in self.client.nthreads():
                    self._lost.setdefault(future.key, "hpcrl-not-listed")
                    return True
            time.sleep(0.1)
        return False

    def _lost_error(self, future: DaskFuture) -> WorkerLostError:
        return WorkerLostError(future.where, self._loss_reason(future), future.actor)

    def _loss_reason(self, future: DaskFuture) -> str:
        if future.key not in self._reasons:
            stimulus = self._lost.get(future.key, "")
            reason = f"its Dask worker left the cluster ({stimulus_meaning(stimulus)})"
            nanny_word = self._nanny_word(future.actor)
            self._reasons[future.key] = f"{reason}: {nanny_word}" if nanny_word else reason
        return self._reasons[future.key]

    def _nanny_word(self, actor: DaskActor) -> str | None:
        """What the worker's nanny logged about the process's end ("... killed by signal 9")."""
        if actor.nanny is None:
            return None
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                logs = self.client.sync(self.client.rpc(actor.nanny).get_logs, n=200)
            except Exception:  # noqa: BLE001 - the nanny may be gone too
                return None
            word = find_death_message(logs, actor.pid)
            if word:
                return word
            time.sleep(0.2)
        return None

    def _say(self, line: str) -> None:
        if self.verbose:
            print(f"hpcrl: {line}", flush=True)


# -- pure decisions (no Dask needed) ---------------------------------------
def choose_workers(
    live: Iterable[str], occupancy: Mapping[str, int], count: int | None, prefer: str | None = None
) -> list[str]:
    """Up to ``count`` (None: all) of the ``live`` Dask workers that hold no actor,
    ``prefer`` first when it is one of them, then in the order given.

    Example:
        >>> choose_workers(["tcp://a", "tcp://b", "tcp://c"], {"tcp://a": 1}, 1)
        ['tcp://b']
        >>> choose_workers(["tcp://a", "tcp://b", "tcp://c"], {}, 2, prefer="tcp://c")
        ['tcp://c', 'tcp://a']
    """
    free = [address for address in live if not occupancy.get(address)]
    if prefer in free:
        free.remove(prefer)
        free.insert(0, prefer)
    return free if count is None else free[:count]


def stimulus_meaning(stimulus_id: str) -> str:
    """The scheduler's reason for removing a worker, in words.

    Example:
        >>> stimulus_meaning("handle-worker-cleanup-1712.5")
        'its connection to the scheduler closed'
    """
    meanings = {
        "handle-worker-cleanup": "its connection to the scheduler closed",
        "worker-close": "it closed",
        "check-worker-ttl": "it stopped sending heartbeats",
        "retire-workers": "it was retired",
        "worker-exit": "its process exited",
        "hpcrl-not-listed": "the scheduler no longer lists it",
    }
    for prefix, meaning in meanings.items():
        if stimulus_id.startswith(prefix):
            return meaning
    return f"scheduler stimulus {stimulus_id!r}" if stimulus_id else "no reason given"


def find_death_message(logs: Iterable[Any], pid: int) -> str | None:
    """The nanny's log line about process ``pid`` ending, if there is one.

    Example:
        >>> find_death_message([("INFO", "Worker process 42 was killed by signal 9")], 42)
        'Worker process 42 was killed by signal 9'
        >>> find_death_message([("INFO", "Worker process 7 exited with status 1")], 42) is None
        True
    """
    marker = f"Worker process {pid} "
    for entry in logs:
        message = entry[1] if isinstance(entry, (tuple, list)) else str(entry)
        if marker in message:
            return message[message.index(marker) :].strip()
    return None


# -- helpers ----------------------------------------------------------------
def _actors_per_worker(dask_scheduler: Any) -> dict[str, int]:
    """Run on the scheduler: how many actors each Dask worker holds."""
    return {address: len(ws.actors) for address, ws in dask_scheduler.workers.items()}


async def _capture(inner: Any) -> tuple[bool, Any]:
    try:
        return True, await inner
    except Exception as err:  # noqa: BLE001 - kept as the call's outcome
        return False, err


def _creation_ok(creation: Any) -> bool:
    return creation is None or creation.status not in ("error", "cancelled", "lost")


def _release(actor: DaskActor) -> None:
    """Let the scheduler forget the actor, so its Dask worker is free at once (the
    handle holds a reference of its own, which a plain release would leave)."""
    if actor._creation is not None:
        with contextlib.suppress(Exception):
            actor._creation.client.cancel([actor._creation], force=True)
    actor._handle = None


# Dask configuration the workers of a local cluster get over this process's (see
# start_local_cluster).
WORKER_CONFIG = {"distributed": {"worker": {"profile": {"enabled": False}}}}


def local_worker_config() -> dict[str, Any]:
    """This process's Dask configuration with ``WORKER_CONFIG`` over it. Whole: a
    ``Nanny`` merges its ``config`` over the process's only at the top level."""
    return dask.config.merge(dask.config.config, WORKER_CONFIG)


def start_local_cluster(
    num_workers: int, dashboard_address: str | None = None, security: Any = None
) -> Any:
    """A ``distributed.LocalCluster`` as hpcrl runs one: ``num_workers`` worker
    processes of one thread each, scheduler (and dashboard, None: no dashboard)
    on 127.0.0.1, Dask's log lines below ERROR not shown; with ``security`` (a
    ``distributed.security.Security``, see ``dask_tls.make_security``), over TLS.

    The worker processes are forked from a forkserver with torch, distributed and
    hpcrl's rollout worker imported (``start_dask_forkserver``), so they start
    without importing them again; this sets this process's
    ``distributed.worker.multiprocessing-method`` to "forkserver". They get this
    process's environment variables as they are when the cluster starts.

    The workers' statistical profiler is off: it keeps the call trees of the last
    1000 one-second cycles (``distributed.admin.low-level-log-length``), which grew
    a rollout worker by ~4 MiB a minute over the first ~17 minutes of a run
    (benchmarks/soak.py)."""
    tls = {} if security is None else {"protocol": "tls", "security": security}
    # Worker processes are forked from a server that has imported what they need
    # (see hpcrl.backends.prestart); this process's Dask config says so for every
    # worker the nannies start, also the ones that replace lost workers.
    start_dask_forkserver()
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    with warnings.catch_warnings():
        # "Port 8787 is already in use": another port is taken, and printed below.
        warnings.simplefilter("ignore", UserWarning)
        return distributed.LocalCluster(
            n_workers=num_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
            silence_logs=logging.ERROR,
            config=local_worker_config(),
            # This process's environment now, as a spawned worker would have it (a
            # forked one has the forkserver's, from when that started).
            env=dict(os.environ),
            **tls,
        )


def _cluster_line(cluster: Any) -> str:
    line = (
        f"started a Dask LocalCluster, scheduler {cluster.scheduler_address}, "
        f"dashboard {cluster.dashboard_link}"
    )
    try:
        import bokeh  # noqa: F401 - the dashboard needs it
    except ImportError:
        line += " (install bokeh>=3.1 to see it)"
    return line
