"""AsyncSamplesOptimizer: the IMPALA architecture.

Rollout workers sample all the time; a learner thread on the driver learns from
their batches as they come. Written against the backend interface only, so it
runs unchanged on the ``local``, ``mpi`` and ``dask`` backends:

- The remote workers sample through a backend stream (``Backend.stream``):
  each holds up to ``max_sample_requests_in_flight_per_worker`` credits (2 by
  default) and, while it has one, samples and pushes the batch to the driver
  without being asked (under MPI the worker rank sends it unasked; on Dask and
  local, one queued ``sample`` call stands for each credit). A worker cannot
  run ahead by more batches than its credits (back-pressure: a fast worker
  cannot fill the driver's memory).
- When a batch arrives the driver grants that worker one credit back at once,
  preceded by a ``set_weights`` call when the learner has made at least
  ``broadcast_interval`` updates since the weights the worker has. No call
  waits for all workers: there is no barrier.
- Batches are concatenated to ``train_batch_size`` rows and put on the
  learner's bounded queue (``learner_queue_size``); when it is full the driver
  stops taking results off the wire, and the workers' queued calls then bound
  them as above.
- The learner thread serves each train batch ``num_sgd_iter`` times from a
  ring of ``minibatch_buffer_size`` batches, and, with ``replay_proportion``
  > 0, mixes in batches replayed from ``replay_buffer_num_slots`` slots.

The decisions (who has how many calls in flight, who gets weights next, the
policy lag of a batch) are made by ``SampleStream``, and which batches are
replayed by ``ReplaySlots``: plain classes with no backend, tested alone.

``step()`` returns within about a second with the learner stats of the
updates made since the last call. A learner that has had no batch for
``learner_queue_timeout`` seconds is an error naming the workers that sent
nothing, not a hang; an exception in the learner thread or in a worker is
raised by the next ``step()``.

With no remote workers the driver's local worker samples inside ``step()``,
taking turns with the learner thread (they share the policy).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import numpy as np

from hpcrl.backends.base import Future, RemoteError, WorkerLostError
from hpcrl.evaluation.rollout_worker import count_steps
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer
from hpcrl.policy.loss_output import LEARNER_STATS_KEY
from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch, concat_samples

Batch = SampleBatch | MultiAgentBatch


class SampleStream:
    """Bookkeeping of a stream of sample calls: no backend, no networking.

    Tracks, per worker, the calls in flight (each tagged with the learner
    version of the weights that will sample it), the version the worker holds,
    and when each worker was last heard from.

    Example:
        >>> s = SampleStream(["a", "b"], max_in_flight=2, broadcast_interval=1)
        >>> s.requests_due()
        ['a', 'a', 'b', 'b']
        >>> for w in s.requests_due(): s.requested(w)
        >>> s.learner_updated(); s.learner_updated()
        >>> s.arrived("a")  # sampled with version 0, consumed at version 2
        2
        >>> s.weights_due("a"), s.requests_due()
        (True, ['a'])
        >>> s.weights_sent("a"); s.requested("a")
        >>> s.in_flight("a"), s.weights_due("a")
        (2, False)
    """

    def __init__(
        self, workers: Iterable[Hashable], max_in_flight: int = 2, broadcast_interval: int = 1
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(
                f"max_sample_requests_in_flight_per_worker must be >= 1, got {max_in_flight}"
            )
        if broadcast_interval < 1:
            raise ValueError(f"broadcast_interval must be >= 1, got {broadcast_interval}")
        self.max_in_flight = max_in_flight
        self.broadcast_interval = broadcast_interval
        self.version = 0  # learner updates so far
        self._held: dict[Hashable, int] = {}  # worker -> version of the weights it holds
        self._calls: dict[Hashable, deque[int]] = {}  # worker -> versions of calls in flight
        self._heard: dict[Hashable, float] = {}
        for worker in workers:
            self.add(worker)

    def add(self, worker: Hashable) -> None:
        """A worker holding the current weights, with no calls in flight."""
        self._held[worker] = self.version
        self._calls[worker] = deque()
        self._heard[worker] = time.monotonic()

    def requests_due(self) -> list[Hashable]:
        """One entry per call to queue now: each worker up to ``max_in_flight``."""
        return [
            worker
            for worker, calls in self._calls.items()
            for _ in range(self.max_in_flight - len(calls))
        ]

    def requested(self, worker: Hashable) -> None:
        """A sample call was queued on ``worker`` (after any weights sent before it)."""
        calls = self._calls[worker]
        if len(calls) >= self.max_in_flight:
            raise RuntimeError(
                f"worker {worker!r} already has {len(calls)} sample calls in flight "
                f"(max_sample_requests_in_flight_per_worker={self.max_in_flight})"
            )
        calls.append(self._held[worker])

    def arrived(self, worker: Hashable) -> int:
        """The oldest call of ``worker`` returned a batch; its policy lag: the learner
        updates between the weights that sampled it and now."""
        sampled_with = self._calls[worker].popleft()
        self._heard[worker] = time.monotonic()
        return self.version - sampled_with

    def lost(self, worker: Hashable) -> None:
        """``worker`` was re-created with the current weights: its calls are gone."""
        self.add(worker)

    def learner_updated(self) -> None:
        self.version += 1

    def weights_due(self, worker: Hashable) -> bool:
        """Whether ``worker``'s next call should be preceded by new weights."""
        return self.version - self._held[worker] >= self.broadcast_interval

    def weights_sent(self, worker: Hashable) -> None:
        self._held[worker] = self.version

    def in_flight(self, worker: Hashable) -> int:
        return len(self._calls[worker])

    def silent(self, seconds: float) -> list[Hashable]:
        """Workers with calls in flight that have sent nothing for ``seconds``."""
        now = time.monotonic()
        return [w for w, calls in self._calls.items() if calls and now - self._heard[w] >= seconds]


class ReplaySlots:
    """IMPALA's replay of recent train batches: ``num_slots`` slots, overwritten in
    turn; after each new batch, a Poisson(``proportion``) number of batches drawn
    uniformly from the slots is learned from again.

    Example:
        >>> slots = ReplaySlots(num_slots=2, proportion=0.0, seed=0)
        >>> slots.add("b1"); slots.replays()
        []
    """

    def __init__(self, num_slots: int, proportion: float, seed: int | None = None) -> None:
        if proportion < 0:
            raise ValueError(f"replay_proportion must be >= 0, got {proportion}")
        if proportion > 0 and num_slots < 1:
            raise ValueError(
                f"replay_proportion={proportion} needs replay_buffer_num_slots >= 1, got "
                f"{num_slots}: set replay_buffer_num_slots (e.g. 100), or replay_proportion 0"
            )
        self.num_slots = num_slots
        self.proportion = proportion
        self._slots: list[Any] = []
        self._next = 0
        self._rng = np.random.default_rng(seed)

    def add(self, batch: Any) -> None:
        if self.num_slots == 0:
            return
        if len(self._slots) < self.num_slots:
            self._slots.append(batch)
        else:
            self._slots[self._next] = batch
        self._next = (self._next + 1) % self.num_slots

    def replays(self) -> list[Any]:
        """Batches to learn from again after the one just added."""
        if self.proportion == 0 or not self._slots:
            return []
        count = int(self._rng.poisson(self.proportion))
        return [self._slots[i] for i in self._rng.integers(len(self._slots), size=count)]


class MinibatchBuffer:
    """A ring of ``size`` train batches, each served ``num_passes`` times (RLlib's
    ``minibatch_buffer``): with size 1 a batch is learned from ``num_passes`` times in
    a row; larger rings interleave passes over different batches.

    ``get(take)`` calls ``take()`` for a new batch whenever the slot to serve is
    empty or used up.

    Example:
        >>> new = iter(["a", "b", "c"])
        >>> ring = MinibatchBuffer(size=2, num_passes=2)
        >>> [ring.get(lambda: next(new)) for _ in range(4)]
        ['a', 'b', 'a', 'b']
    """

    def __init__(self, size: int, num_passes: int) -> None:
        if size < 1 or num_passes < 1:
            raise ValueError(
                f"minibatch_buffer_size and num_sgd_iter must be >= 1, got {size} and {num_passes}"
            )
        self.num_passes = num_passes
        self._batches: list[Any] = [None] * size
        self._left = [0] * size
        self._index = 0
        # Whether the last get() took a new batch (False: another pass over one).
        self.took_new = False

    def get(self, take: Any) -> Any:
        i = self._index
        self.took_new = self._left[i] == 0
        if self.took_new:
            self._batches[i] = take()
            self._left[i] = self.num_passes
        self._left[i] -= 1
        self._index = (i + 1) % len(self._batches)
        return self._batches[i]


class _Stopped(Exception):
    """The learner thread was asked to stop."""


class LearnerThread(threading.Thread):
    """Learns on the driver's local worker from batches put on ``inqueue``.

    Items on ``inqueue`` are ``(batch, info)``; after each update the thread
    puts ``(rows trained, learner fetches, info)`` on ``outqueue``, with the
    item's ``info`` (IMPALA: the batches' policy lags; Ape-X: where the batch
    was replayed from) the first time the batch is learned on and ``[]`` on
    later passes or replays. The local
    worker's weights change only under ``weights_lock``, which the driver takes
    to read consistent weights. An exception ends the thread; it is kept in
    ``error`` for the driver to raise.
    """

    def __init__(
        self,
        local_worker: Any,
        learner_queue_size: int = 16,
        minibatch_buffer_size: int = 1,
        num_sgd_iter: int = 1,
        replay: ReplaySlots | None = None,
    ) -> None:
        super().__init__(name="hpcrl-learner", daemon=True)
        if learner_queue_size < 1:
            raise ValueError(f"learner_queue_size must be >= 1, got {learner_queue_size}")
        self.local_worker = local_worker
        self.inqueue: queue.Queue[tuple[Batch, Any]] = queue.Queue(learner_queue_size)
        self.outqueue: queue.Queue[tuple[int, dict[str, Any], Any]] = queue.Queue()
        self.weights_lock = threading.Lock()
        self.minibatches = MinibatchBuffer(minibatch_buffer_size, num_sgd_iter)
        self.replay = replay or ReplaySlots(0, 0.0)
        self.error: BaseException | None = None
        self.last_batch_time = time.monotonic()
        self.queue_wait_s = 0.0
        self.learn_s = 0.0
        self.num_updates = 0
        self.num_new = 0  # train batches taken off the queue
        self.num_replayed = 0  # updates on replayed batches
        self._stop_event = threading.Event()
        self._pending_replays: list[tuple[Batch, list[int]]] = []

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self._step()
        except _Stopped:
            pass
        except BaseException as err:  # noqa: BLE001 - handed to the driver's step()
            self.error = err

    def _take(self) -> tuple[Batch, list[int]]:
        start = time.perf_counter()
        while True:
            try:
                item = self.inqueue.get(timeout=0.1)
                break
            except queue.Empty:
                if self._stop_event.is_set():
                    raise _Stopped() from None
        self.queue_wait_s += time.perf_counter() - start
        self.last_batch_time = time.monotonic()
        self.replay.add(item)
        self._pending_replays = self.replay.replays()
        return item

    def _step(self) -> None:
        if self._pending_replays:
            batch, lags = self._pending_replays.pop()[0], []
            self.num_replayed += 1
        else:
            batch, lags = self.minibatches.get(self._take)
            if self.minibatches.took_new:
                self.num_new += 1
            else:
                lags = []  # each batch's policy lags count once
        start = time.perf_counter()
        with self.weights_lock:
            fetches = self.local_worker.learn_on_batch(batch)
        self.learn_s += time.perf_counter() - start
        self.num_updates += 1
        self.outqueue.put((count_steps(batch, self.local_worker.count_steps_by), fetches, lags))

    def poll(self) -> None:
        """Nothing: this learner runs in its own thread (``GroupLearner`` needs polls)."""

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


class GroupLearner:
    """The learner of ``AsyncSamplesOptimizer`` with data-parallel learners
    (``num_learners`` > 1, or GPUs): a ``LearnerGroup`` driven from the driver's
    own thread.

    It has ``LearnerThread``'s queues, lock and counters, but no thread of its
    own: the backends talk to their actors from one thread, so the driver's loop
    calls ``poll()``, which collects a finished update (the new weights, learner
    0's, go to the driver's policies, which the workers get theirs from) and
    starts the next one on a queued train batch. Each train batch is split into
    one contiguous shard per learner and learned from ``num_sgd_iter`` times in
    one call, with one gradient all-reduce per pass; ``replay_proportion``
    replays as the thread does. The learners keep the whole policy state (target
    networks and coefficients change there, as APPO's); the driver's copy is
    refreshed from learner 0 for checkpoints (``sync_driver_state``) and sent to
    the learners once at the start and after a restore.
    """

    def __init__(
        self,
        workers: WorkerSet,
        learner_queue_size: int = 16,
        num_sgd_iter: int = 1,
        replay: ReplaySlots | None = None,
        num_learners: int = 2,
        num_gpus_per_learner: int = 0,
        learner_backend: str = "auto",
        learner_timeout_s: float = 300.0,
    ) -> None:
        from hpcrl.learners.learner_group import LearnerGroup, trained_policy_specs

        if learner_queue_size < 1:
            raise ValueError(f"learner_queue_size must be >= 1, got {learner_queue_size}")
        if num_sgd_iter < 1:
            raise ValueError(f"num_sgd_iter must be >= 1, got {num_sgd_iter}")
        local = workers.local_worker()
        self.local_worker = local
        self.group = LearnerGroup(
            workers.backend,
            trained_policy_specs(local),
            num_learners=num_learners,
            num_gpus_per_learner=num_gpus_per_learner,
            learner_backend=learner_backend,
            timeout_s=learner_timeout_s,
        )
        self.num_sgd_iter = num_sgd_iter
        self.inqueue: queue.Queue[tuple[Batch, Any]] = queue.Queue(learner_queue_size)
        self.outqueue: queue.Queue[tuple[int, dict[str, Any], Any]] = queue.Queue()
        # Reentrant: the driver's thread holds it around a checkpoint and takes it
        # again to apply the weights of the update it waits for.
        self.weights_lock = threading.RLock()
        self.replay = replay or ReplaySlots(0, 0.0)
        self.error: BaseException | None = None
        self.last_batch_time = time.monotonic()
        self.queue_wait_s = 0.0
        self.learn_s = 0.0
        self.num_updates = 0
        self.num_new = 0
        self.num_replayed = 0
        self._jobs: deque[tuple[Batch, Any]] = deque()
        self._pending: Any = None
        self._pending_job: tuple[int, Any, float] | None = None
        self._state_due = True
        self._idle_since: float | None = time.perf_counter()
        self._rng = np.random.default_rng(0)
        self._started = False

    def start(self) -> None:
        self._started = True

    def is_alive(self) -> bool:
        return self._started

    def poll(self) -> None:
        """Collect a finished update; start the next one if a batch is waiting."""
        if self._pending is not None:
            if not self.group.learning_done(self._pending):
                return
            self._finish()
        if not self._jobs:
            try:
                item = self.inqueue.get_nowait()
            except queue.Empty:
                return
            self.last_batch_time = time.monotonic()
            self.num_new += 1
            self.replay.add(item)
            self._jobs.append(item)
            replays = self.replay.replays()
            self.num_replayed += len(replays)
            self._jobs.extend((batch, []) for batch, _ in replays)
        batch, info = self._jobs.popleft()
        if self._state_due:
            self._send_driver_state()
        if self._idle_since is not None:
            self.queue_wait_s += time.perf_counter() - self._idle_since
            self._idle_since = None
        local = self.local_worker
        batches = local.trainable_batches(batch)
        seq_lens = {pid: local.get_policy(pid).sequence_lengths(b) for pid, b in batches.items()}
        plans = self.group.plan(batches, self.num_sgd_iter, 0, self._rng, seq_lens)
        self._pending = self.group.start_learning(plans, then_get_weights=True)
        self._pending_job = (count_steps(batch, local.count_steps_by), info, time.perf_counter())

    def _finish(self) -> None:
        results, weights = self.group.finish_learning(self._pending)
        rows, info, started = self._pending_job
        self._pending, self._pending_job = None, None
        with self.weights_lock:
            for pid, policy_weights in weights.items():
                self.local_worker.get_policy(pid).set_weights(policy_weights)
        now = time.perf_counter()
        self.learn_s += now - started
        self._idle_since = now
        self.num_updates += 1
        self.outqueue.put((rows, results, info))

    def _send_driver_state(self) -> None:
        local = self.local_worker
        self.group.set_policy_state(
            {
                pid: local.get_policy(pid).get_state(include_optimizer=False)
                for pid in local.policies_to_train
            }
        )
        self._state_due = False

    def sync_driver_state(self) -> dict[str, Any]:
        """Wait for the update under way, copy learner 0's policy state (weights,
        target networks, coefficients) into the driver's policies, and return the
        learners' optimizer state: what a checkpoint needs."""
        if self._pending is not None:
            self._finish()
        if self._state_due:  # nothing learned since the driver's state was set
            return {}
        [states] = self.group.call("get_policy_state", first=True)
        with self.weights_lock:
            for pid, state in states.items():
                self.local_worker.get_policy(pid).set_state(state)
        return self.group.call("get_optimizer_state", first=True)[0]

    def restore(self, optimizer_state: dict[str, Any]) -> None:
        """After a restore: the driver's policies go to the learners before the next
        update, with the saved optimizer state."""
        if optimizer_state:
            self.group.call("set_optimizer_state", optimizer_state)
        self._state_due = True

    def stop(self) -> None:
        if self._pending is not None:
            with contextlib.suppress(Exception):
                self._finish()
        self.group.stop()
        self._started = False


class LearnerQueueOptimizer(PolicyOptimizer):
    """What the optimizers with a learner behind a queue (IMPALA's, Ape-X's) share:
    the learner's failure raised on the driver, step rates, the learner's state
    in the reports, the pause for checkpoints."""

    learner: LearnerThread | GroupLearner
    _started: bool

    def __init__(self, workers: WorkerSet) -> None:
        super().__init__(workers)
        self._rates_since = time.perf_counter()
        self._sampled_since = 0
        self._trained_since = 0
        self._last_rates = {"sampled_steps_per_s": 0.0, "trained_steps_per_s": 0.0}
        self.num_learner_updates = 0
        self.learner_stats: dict[str, Any] = {}

    def _check_learner(self) -> None:
        if self.learner.error is not None:
            raise RuntimeError(
                f"the learner thread failed: {self.learner.error!r}"
            ) from self.learner.error
        if self._started and not self.learner.is_alive():
            raise RuntimeError("the learner thread ended unexpectedly")

    def learner_report(self) -> dict[str, Any]:
        """Sampled and trained steps/s since the last report (the last figures again
        if nothing moved), and the learner's queue and times."""
        now = time.perf_counter()
        elapsed = now - self._rates_since
        if elapsed > 0 and (self._sampled_since or self._trained_since):
            self._last_rates = {
                "sampled_steps_per_s": self._sampled_since / elapsed,
                "trained_steps_per_s": self._trained_since / elapsed,
            }
            self._rates_since, self._sampled_since, self._trained_since = now, 0, 0
        return {
            **self._last_rates,
            "learner_queue_size": self.learner.inqueue.qsize(),
            "learner_queue_wait_s": round(self.learner.queue_wait_s, 4),
            "learner_learn_s": round(self.learner.learn_s, 4),
        }

    def paused(self) -> Any:
        """The learner's weights lock: while held, the learner changes nothing."""
        return self.learner.weights_lock

    def _drain_learner(self) -> dict[str, Any]:
        """Count the updates the learner made since the last call (``_on_update`` for
        each); the fetches of the last one (empty if none)."""
        self.learner.poll()
        fetches: dict[str, Any] = {}
        while True:
            try:
                rows, fetches, info = self.learner.outqueue.get_nowait()
            except queue.Empty:
                return fetches
            self.num_steps_trained += rows
            self._trained_since += rows
            self.num_learner_updates += 1
            self.learner_stats = {pid: r[LEARNER_STATS_KEY] for pid, r in fetches.items()}
            self._on_update(fetches, info)

    def _on_update(self, fetches: dict[str, Any], info: Any) -> None:
        """One learner update was counted; ``info`` is what its batch was queued with."""

    @staticmethod
    def arrivals(items: list[tuple[int, Future]], on_lost: Any) -> Iterator[tuple[int, Any]]:
        """The values of what ``Stream.take`` returned, in order. The first
        ``WorkerLostError`` of an actor calls ``on_lost(index, error)`` (which
        re-creates it and resets its stream); the actor's later items in ``items``
        come from before the loss and are dropped, so none earns a credit twice."""
        lost = set()
        for index, future in items:
            if index in lost:
                continue
            try:
                value = future.result()
            except WorkerLostError as err:
                lost.add(index)
                on_lost(index, err)
                continue
            yield index, value


class AsyncSamplesOptimizer(LearnerQueueOptimizer):
    """Asynchronous sampling with a learner thread (IMPALA, APPO); see the module
    docstring for the architecture.

    Args:
        workers: the WorkerSet (0 remote workers: the driver samples in ``step``).
        train_batch_size: rows per learner update.
        max_sample_requests_in_flight_per_worker: sample calls queued per worker.
        broadcast_interval: learner updates between weights sent to a worker.
        learner_queue_size: train batches waiting for the learner, at most.
        learner_queue_timeout: seconds without a batch for the learner before
            ``step()`` raises, naming the silent workers.
        num_sgd_iter: passes over each train batch.
        minibatch_buffer_size: train batches interleaved by those passes.
        replay_proportion: mean replayed batches per new one (Poisson).
        replay_buffer_num_slots: train batches kept for replay.
        seed: seed of the replay draws.
        num_learners: data-parallel learners (> 1: a ``GroupLearner`` in place of
            the learner thread).
        num_gpus_per_learner, learner_backend, learner_timeout_s: as for
            ``DataParallelOptimizer``.

    Example:
        >>> from hpcrl.algorithms.a2c import A2CTorchPolicy
        >>> opt = AsyncSamplesOptimizer.make(
        ...     "CartPole-v1", A2CTorchPolicy, num_workers=2,
        ...     worker_config={"rollout_fragment_length": 50}, train_batch_size=100)
        >>> while opt.num_steps_trained < 400:
        ...     _ = opt.step()
        >>> opt.stats()["policy_lag_max"] >= 0
        True
        >>> opt.stop()
        >>> opt.workers.stop()
    """

    def __init__(
        self,
        workers: WorkerSet,
        train_batch_size: int = 500,
        max_sample_requests_in_flight_per_worker: int = 2,
        broadcast_interval: int = 1,
        learner_queue_size: int = 16,
        learner_queue_timeout: float = 300.0,
        num_sgd_iter: int = 1,
        minibatch_buffer_size: int = 1,
        replay_proportion: float = 0.0,
        replay_buffer_num_slots: int = 0,
        seed: int | None = None,
        num_learners: int = 1,
        num_gpus_per_learner: int = 0,
        learner_backend: str = "auto",
        learner_timeout_s: float = 300.0,
    ) -> None:
        super().__init__(workers)
        if train_batch_size < 1:
            raise ValueError(f"train_batch_size must be >= 1, got {train_batch_size}")
        if learner_queue_timeout <= 0:
            raise ValueError(f"learner_queue_timeout must be > 0 s, got {learner_queue_timeout}")
        self.train_batch_size = train_batch_size
        self.learner_queue_timeout = learner_queue_timeout
        self._remote = workers.remote_workers()
        self.stream = SampleStream(
            range(len(self._remote)), max_sample_requests_in_flight_per_worker, broadcast_interval
        )
        replay = ReplaySlots(replay_buffer_num_slots, replay_proportion, seed)
        self.learner: LearnerThread | GroupLearner
        if num_learners > 1 or num_gpus_per_learner > 0:
            if minibatch_buffer_size != 1:
                raise ValueError(
                    f"minibatch_buffer_size={minibatch_buffer_size} needs the learner thread; "
                    f"with num_learners={num_learners} each train batch is learned from "
                    "num_sgd_iter times in one go: set minibatch_buffer_size to 1"
                )
            self.learner = GroupLearner(
                workers,
                learner_queue_size,
                num_sgd_iter,
                replay,
                num_learners,
                num_gpus_per_learner,
                learner_backend,
                learner_timeout_s,
            )
        else:
            self.learner = LearnerThread(
                workers.local_worker(),
                learner_queue_size,
                minibatch_buffer_size,
                num_sgd_iter,
                replay,
            )
        self._samples = workers.backend.stream(self._remote, "sample") if self._remote else None
        self._weight_calls: list[Future] = []
        self._pending: list[Batch] = []  # batches not yet making a train batch
        self._pending_lags: list[int] = []
        self._pending_rows = 0
        self._lags: list[int] = []
        self._started = False

    # -- the driver loop -------------------------------------------------
    def step(self) -> dict[str, Any]:
        """Take what the workers sent, feed the learner, keep every worker busy;
        returns the fetches of the last learner update made since the last call
        (empty if none)."""
        if not self._started:
            self._start()
        deadline = time.monotonic() + 1.0
        fetches: dict[str, Any] = {}
        while True:
            self._check_learner()
            if self._remote:
                self._receive(timeout=0.05)
            else:
                # The local worker's policy is the learner's: sampling takes the lock
                # the learner updates it under (a forward pass during an update can
                # read the model's half-written state).
                with self._timed("sample"), self.learner.weights_lock:
                    batch = self.workers.local_worker().sample()
                self._add(batch, 0)
            fetches = self._drain_learner() or fetches
            now = time.monotonic()
            if fetches and now >= deadline:
                return fetches
            starved_s = now - self.learner.last_batch_time
            if self.learner.inqueue.empty() and starved_s > self.learner_queue_timeout:
                self._raise_starved()

    def _start(self) -> None:
        self.learner.last_batch_time = time.monotonic()
        self.learner.start()
        if self._remote:
            self.workers.sync_weights()
            for index in self.stream.requests_due():
                self._request(index)
        self._started = True

    def _request(self, index: int) -> None:
        """Grant worker ``index`` one more batch, after new weights if they are due."""
        if self.stream.weights_due(index):
            with self._timed("send_weights"), self.learner.weights_lock:
                weights = self.workers.local_worker().get_weights()
            global_vars = {"timestep": self.num_steps_sampled}
            actor = [self._remote[index]]
            self._weight_calls += self.backend.call(actor, "set_weights", weights, global_vars)
            self.stream.weights_sent(index)
        self._samples.grant(index)
        self.stream.requested(index)

    def _receive(self, timeout: float) -> None:
        with self._timed("wait"):
            items = self._samples.take(timeout)
        for index, batch in self.arrivals(items, self._recreate):
            lag = self.stream.arrived(index)
            self._add(batch, lag)
            self._request(index)
        self._collect_weight_calls()

    def _recreate(self, index: int, error: WorkerLostError) -> None:
        """Re-create a lost worker (with the current weights) and restart its stream;
        the batches it had in flight are gone."""
        self._samples.reset(index)
        with self.learner.weights_lock:
            self.workers.recreate_worker(self._remote[index], error)
        self.stream.lost(index)
        for _ in range(self.stream.max_in_flight):
            self._request(index)

    def _collect_weight_calls(self) -> None:
        """Surface the errors of weight calls that are done; keep the others."""
        if not self._weight_calls:
            return
        done, pending = self.backend.wait(
            self._weight_calls, num_returns=len(self._weight_calls), timeout=0
        )
        self._weight_calls = pending
        for future in done:
            with contextlib.suppress(WorkerLostError):  # the sample call reports it too
                self.backend.get([future])

    def _add(self, batch: Batch, lag: int) -> None:
        """Count a batch in and, once ``train_batch_size`` rows are in, put them on the
        learner's queue (waiting while it is full)."""
        rows = count_steps(batch, self.workers.local_worker().count_steps_by)
        self.num_steps_sampled += rows
        self._sampled_since += rows
        self._pending.append(batch)
        self._pending_lags.append(lag)
        self._pending_rows += rows
        if self._pending_rows < self.train_batch_size:
            return
        train_batch = concat_samples(self._pending)
        item = (train_batch, self._pending_lags)
        self._pending, self._pending_lags, self._pending_rows = [], [], 0
        with self._timed("learner_queue_put"):
            while True:
                self._check_learner()
                try:
                    self.learner.inqueue.put(item, timeout=0.1)
                    return
                except queue.Full:
                    self._drain_learner()
                    if time.monotonic() - self.learner.last_batch_time > self.learner_queue_timeout:
                        raise RuntimeError(
                            f"the learner took no batch for {self.learner_queue_timeout:g}s "
                            "(learner_queue_timeout) with its queue full: it is stuck"
                        ) from None

    def _on_update(self, fetches: dict[str, Any], lags: Any) -> None:
        self.stream.learner_updated()
        self._lags.extend(lags)

    def _raise_starved(self) -> None:
        silent = self.stream.silent(self.learner_queue_timeout)
        names = [repr(self._remote[i]) for i in silent]
        raise RuntimeError(
            f"no batch reached the learner for {self.learner_queue_timeout:g}s "
            f"(learner_queue_timeout); workers that sent nothing in that time: "
            f"{', '.join(names) or 'none (the driver could not keep up)'}"
        )

    # -- reporting and checkpoints ---------------------------------------
    def stats(self) -> dict[str, Any]:
        lags, self._lags = self._lags, []
        return {
            **super().stats(),
            **self.learner_report(),
            "num_learner_updates": self.num_learner_updates,
            "num_replayed_batches": self.learner.num_replayed,
            "policy_lag_mean": float(np.mean(lags)) if lags else 0.0,
            "policy_lag_max": int(max(lags)) if lags else 0,
            "learner": self.learner_stats,
            **self._group_stats(),
        }

    def _group_stats(self) -> dict[str, Any]:
        if not isinstance(self.learner, GroupLearner):
            return {}
        group = self.learner.group
        return {
            "num_learners": group.num_learners,
            "learner_backend": group.process_group_backend,
            "learner_allreduce_s": round(group.timings["allreduce_s"], 4),
        }

    def save(self) -> dict[str, Any]:
        """Counters; with data-parallel learners, learner 0's policy state is copied
        into the driver's policies first (what the checkpoint holds of them) and the
        learners' optimizer state is saved here."""
        data = {**super().save(), "num_learner_updates": self.num_learner_updates}
        if isinstance(self.learner, GroupLearner):
            optimizer_state = self.learner.sync_driver_state()
            if optimizer_state:
                data["learner_optimizer_state"] = optimizer_state
        return data

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        self.num_learner_updates = int(data.get("num_learner_updates", 0))
        if isinstance(self.learner, GroupLearner):
            self.learner.restore(data.get("learner_optimizer_state", {}))

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the learner thread; wait up to ``timeout`` seconds for the calls still in
        flight (a worker stuck in a call is left to the backend's shutdown)."""
        if self.learner.is_alive():
            self.learner.stop()
        if self._samples is not None:
            self._samples.close(timeout)
        futures = self._weight_calls
        if futures:
            done, _ = self.backend.wait(futures, num_returns=len(futures), timeout=timeout)
            for future in done:
                with contextlib.suppress(RemoteError):
                    self.backend.get([future])
        self._weight_calls.clear()
        self._started = False
