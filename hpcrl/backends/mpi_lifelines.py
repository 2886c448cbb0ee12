"""Lifelines: how MPI ranks notice a rank whose process has ended.

A rank killed by SIGKILL or the out-of-memory killer, or one that crashed,
sends nothing, and MPI tells its peers nothing: a driver waiting for its
answer, or a worker rank waiting for the driver's next request, waits for
ever unless the launcher ends the other ranks. ``srun`` does so only with
``--kill-on-bad-exit`` (Slurm's default is to leave them running); MPICH's
``mpiexec`` does, but names the dead process by pid alone, and not always the
one that died first.

So each worker rank holds one idle TCP connection to rank 0, opened while the
backend starts. However a process ends, its kernel closes its connections at
once, and the other end reads end-of-file. On rank 0 a thread waits on the
connections of all worker ranks (``DriverLifelines.watch``), on each worker
rank a thread on its connection to rank 0 (``WorkerLifeline.watch``); each
calls back as soon as a connection closes, whatever the rank's main thread is
doing. Nothing is sent on a connection but its hello: 16 random bytes that
rank 0 broadcast over MPI, then the rank, so that a stray connection to rank
0's port, which listens only while the backend starts, is dropped unread.

Opening is collective: rank 0 calls ``DriverLifelines.open(comm)`` while
every other rank calls ``WorkerLifeline.open(comm)``. A worker rank that
cannot reach rank 0 (a firewall between nodes) logs a warning and goes on
without a lifeline; its death is then noticed only by the launcher or by
``worker_timeout_s``.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("hpcrl.backends.mpi")

_TOKEN_BYTES = 16
_HELLO = struct.Struct("<i")  # the rank, after the token

# Called with the ranks whose connection closed (rank 0), or with nothing (rank 0's
# connection closed, on a worker rank).
OnRanksEnded = Callable[[list[int]], None]
OnDriverLost = Callable[[], None]


class DriverLifelines:
    """Rank 0's ends of the worker ranks' connections.

    Example (with connected sockets, as ``open`` makes them)::

        >>> import socket
        >>> driver_end, worker_end = socket.socketpair()
        >>> lifelines = DriverLifelines({1: driver_end})
        >>> lifelines.ended()
        []
        >>> worker_end.close()  # what the kernel does when the worker's process ends
        >>> lifelines.ended(), lifelines.ended()
        ([1], [])
        >>> lifelines.close()
    """

    def __init__(self, connections: dict[int, socket.socket]) -> None:
        self.ranks = sorted(connections)  # the ranks that have a lifeline
        self._selector = selectors.DefaultSelector()
        for rank, connection in connections.items():
            connection.setblocking(False)
            self._selector.register(connection, selectors.EVENT_READ, rank)
        # close() wakes the watching thread through this pair
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector.register(self._wake_reader, selectors.EVENT_READ, None)
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, comm: Any, timeout_s: float = 30.0) -> DriverLifelines:
        """Listen, send every rank where (``bcast``), accept one connection per rank.

        Waits up to ``timeout_s`` for the ranks that could not connect, then goes on
        without them (each of them has logged why).
        """
        if socket.has_dualstack_ipv6():
            listener = socket.create_server(
                ("", 0), family=socket.AF_INET6, dualstack_ipv6=True, backlog=comm.Get_size()
            )
        else:
            listener = socket.create_server(("", 0), backlog=comm.Get_size())
        token = secrets.token_bytes(_TOKEN_BYTES)
        host = socket.gethostname()
        comm.bcast((host, listener.getsockname()[1], token, os.getpid()), root=0)
        expected = set(range(1, comm.Get_size()))
        connections: dict[int, socket.socket] = {}
        deadline = time.monotonic() + timeout_s
        with listener:
            while expected - connections.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                listener.settimeout(left)
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    break
                rank = _read_hello(connection, token)
                if rank in expected and rank not in connections:
                    connections[rank] = connection
                else:
                    connection.close()
        missing = sorted(expected - connections.keys())
        if missing:
            logger.warning(
                "MPI rank(s) %s did not connect to rank 0 (%s) within %gs (see their "
                "warnings): if one of them dies, the job ends only when the launcher ends "
                "it or after worker_timeout_s",
                missing,
                host,
                timeout_s,
            )
        return cls(connections)

    def watch(self, on_ended: OnRanksEnded) -> None:
        """Call ``on_ended(ranks)`` from a thread as soon as connections close."""
        self._thread = threading.Thread(
            target=self._watch, args=(on_ended,), name="hpcrl-mpi-lifelines", daemon=True
        )
        self._thread.start()

    def _watch(self, on_ended: OnRanksEnded) -> None:
        while True:
            ready = self._selector.select()
            if any(key.data is None for key, _ in ready):  # close()
                return
            ended = self._ended_among(ready)
            if ended:
                on_ended(ended)

    def ended(self) -> list[int]:
        """The ranks whose connection closed since the last call: their process ended."""
        return self._ended_among(self._selector.select(timeout=0))

    def _ended_among(self, ready: list[tuple[selectors.SelectorKey, int]]) -> list[int]:
        ended = []
        for key, _ in ready:
            if key.data is not None and _closed(key.fileobj):
                self._selector.unregister(key.fileobj)
                key.fileobj.close()
                ended.append(key.data)
        return sorted(ended)

    def close(self) -> None:
        """Stop watching and close every connection."""
        if self._thread is not None:
            self._wake_writer.send(b"\0")
            self._thread.join()
            self._thread = None
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()
        self._wake_writer.close()


class WorkerLifeline:
    """A worker rank's connection to rank 0.

    Example (with connected sockets, as ``open`` makes them)::

        >>> import socket, threading
        >>> driver_end, worker_end = socket.socketpair()
        >>> lost = threading.Event()
        >>> WorkerLifeline(worker_end, "rank 0").watch(lost.set, grace_s=0.0)
        >>> lost.wait(0.1)
        False
        >>> driver_end.close()  # what the kernel does when the driver's process ends
        >>> lost.wait(5.0)
        True
    """

    def __init__(self, connection: socket.socket | None, driver: str) -> None:
        self.driver = driver  # rank 0's pid and host, for messages
        self._connection = connection

    @classmethod
    def open(cls, comm: Any, timeout_s: float = 10.0) -> WorkerLifeline:
        """Connect to rank 0 (the other side of ``DriverLifelines.open``)."""
        host, port, token, pid = comm.bcast(None, root=0)
        driver = f"rank 0 (pid {pid} on {host})"
        try:
            connection = socket.create_connection((host, port), timeout=timeout_s)
            connection.sendall(token + _HELLO.pack(comm.Get_rank()))
        except OSError as err:
            logger.warning(
                "MPI rank %d cannot connect to %s at port %d (%s): it will not notice if "
                "rank 0 dies; check that the nodes reach each other over TCP",
                comm.Get_rank(),
                driver,
                port,
                err,
            )
            return cls(None, driver)
        return cls(connection, driver)

    def watch(self, on_lost: OnDriverLost, grace_s: float) -> None:
        """Call ``on_lost()`` from a thread ``grace_s`` seconds after the connection
        closed (a grace for the driver's last request, shutdown, which MPI may deliver
        after the close)."""
        if self._connection is not None:
            threading.Thread(
                target=self._watch,
                args=(on_lost, grace_s),
                name="hpcrl-mpi-lifeline",
                daemon=True,
            ).start()

    def _watch(self, on_lost: OnDriverLost, grace_s: float) -> None:
        self._connection.settimeout(None)
        while True:
            try:
                if self._connection.recv(1) == b"":
                    break
            except OSError:  # reset: rank 0 is gone too
                break
        time.sleep(grace_s)
        on_lost()


def _closed(connection: socket.socket) -> bool:
    """Whether the other end closed ``connection`` (non-blocking; it never sends)."""
    try:
        return connection.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset: the other end is gone too
        return True


def _read_hello(connection: socket.socket, token: bytes) -> int | None:
    """The rank a connection announces, or None if its token is not ``token``."""
    size = _TOKEN_BYTES + _HELLO.size
    hello = b""
    connection.settimeout(5.0)
    try:
        while len(hello) < size:
            part = connection.recv(size - len(hello))
            if not part:
                return None
            hello += part
    except OSError:
        return None
    if not hmac.compare_digest(hello[:_TOKEN_BYTES], token):
        return None
    return _HELLO.unpack(hello[_TOKEN_BYTES:])[0]
