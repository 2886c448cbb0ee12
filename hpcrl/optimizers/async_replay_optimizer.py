"""AsyncReplayOptimizer: Ape-X, distributed prioritised replay (Horgan et al. 2018).

Three roles, each placed by the backend (MPI ranks, Dask actors, or objects
in this process with ``local``):

- **Rollout workers** sample without pause through a backend stream
  (``Backend.stream``, credits as in IMPALA) and, with
  ``worker_side_prioritization``, compute the first priorities of their rows
  (``RolloutWorker.sample_with_priorities``) so the driver never does.
- **Replay shards** (``ReplayShard`` actors, ``num_replay_buffer_shards``,
  each holding ``buffer_size / shards`` rows per policy): each batch from a
  worker goes to one shard; once a shard holds its part of
  ``learning_starts``, it streams replayed train batches to the driver, with
  ``max_requests_in_flight_per_replay_shard`` of them outstanding.
- **The learner**: a thread on the driver (``LearnerThread``, as in IMPALA)
  learns on the replayed batches from a bounded queue; the priorities it
  finds go back to the shard that served each batch.

The driver only routes: a worker's batch to a shard, a shard's batch to the
learner queue, priorities back to their shard, and new weights to a worker
once it has sampled ``max_weight_sync_delay`` steps since its last ones.
Batches do pass through the driver on their way to a shard: the backend
interface has no channel from one actor to another (under MPI every message
goes to or from rank 0), so a batch moves twice.

Everything is bounded: worker and shard streams by their credits, the
learner queue by ``learner_queue_size`` (a shard's batches wait, and it gets
no new credit, while the queue is full), and the adds waiting at each shard
by ``max_adds_in_flight_per_shard`` (beyond that a worker's batch is dropped
and counted in ``num_dropped_batches``: sampling never waits for replay).

The decisions (which shard, whether replay may start, when a worker is due
weights, whether to drop) are made by ``ApexPlan``, a plain class with no
backend.

Failures: an error in a worker or shard is raised by ``step()`` (under MPI
that ends the job, naming the rank). A lost Dask worker is re-created; a lost
Dask shard is re-created empty and counted in ``num_shard_restarts``.

Checkpoints: the counters are in ``save()``; each shard writes its own HDF5
file (``replay_shard_<i>.h5``) into the checkpoint directory
(``save_files``), all shards at once. As for IMPALA, a resumed run continues
from the saved state but not bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from collections import deque
from typing import Any

import numpy as np

from hpcrl.backends.base import Future, WorkerLostError
from hpcrl.evaluation.rollout_worker import count_steps
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.async_samples_optimizer import LearnerQueueOptimizer, LearnerThread
from hpcrl.optimizers.sync_replay_optimizer import update_target
from hpcrl.policy.sample_batch import MultiAgentBatch
from hpcrl.replay import BATCH_INDEXES
from hpcrl.replay.replay_shard import ReplayShard

TD_ERROR = "td_error"


class ApexPlan:
    """Ape-X's decisions, with no backend: where each batch goes, when replay starts,
    when a worker is due new weights, what is dropped.

    Example:
        >>> plan = ApexPlan(num_workers=2, num_shards=2, learning_starts=100,
        ...                 max_weight_sync_delay=60, max_adds_in_flight=1)
        >>> plan.route(50), plan.route(50)  # round robin over the shards
        (0, 1)
        >>> plan.add_done(0); plan.route(50)  # shard 1 still has its add waiting
        0
        >>> plan.route(50) is None  # both full: this batch is dropped
        True
        >>> plan.add_done(0); plan.add_done(1)
        >>> plan.replay_ready(0), plan.replay_ready(1)  # 100 and 50 rows of 50 needed
        (True, True)
        >>> plan.sampled(0, 50), plan.sampled(0, 50)  # weights after 60 steps
        (False, True)
    """

    def __init__(
        self,
        num_workers: int,
        num_shards: int,
        learning_starts: int,
        max_weight_sync_delay: int,
        max_adds_in_flight: int,
    ) -> None:
        if num_shards < 1:
            raise ValueError(f"num_replay_buffer_shards must be >= 1, got {num_shards}")
        if max_adds_in_flight < 1:
            raise ValueError(f"max_adds_in_flight_per_shard must be >= 1, got {max_adds_in_flight}")
        if max_weight_sync_delay < 1:
            raise ValueError(f"max_weight_sync_delay must be >= 1, got {max_weight_sync_delay}")
        self.num_shards = num_shards
        self.max_adds_in_flight = max_adds_in_flight
        self.max_weight_sync_delay = max_weight_sync_delay
        # rows a shard must hold before it replays: its part of learning_starts
        self.shard_starts = -(-max(0, learning_starts) // num_shards)
        self.rows = [0] * num_shards  # rows sent to each shard since it was (re)made
        self.adds_in_flight = [0] * num_shards
        self.unsynced = [0] * num_workers  # steps each worker sampled since its weights
        self.num_dropped = 0
        self._next = 0

    def route(self, rows: int) -> int | None:
        """The shard for a batch of ``rows`` rows: the next in turn with room for
        another add; None (the batch is dropped, and counted) if none has."""
        for turn in range(self.num_shards):
            shard = (self._next + turn) % self.num_shards
            if self.adds_in_flight[shard] < self.max_adds_in_flight:
                self._next = (shard + 1) % self.num_shards
                self.adds_in_flight[shard] += 1
                self.rows[shard] += rows
                return shard
        self.num_dropped += 1
        return None

    def add_done(self, shard: int) -> None:
        self.adds_in_flight[shard] -= 1

    def replay_ready(self, shard: int) -> bool:
        """Whether ``shard`` holds its part of ``learning_starts`` (its adds done)."""
        return self.adds_in_flight[shard] == 0 and self.rows[shard] >= max(1, self.shard_starts)

    def shard_lost(self, shard: int) -> None:
        """``shard`` was re-created empty."""
        self.rows[shard] = 0
        self.adds_in_flight[shard] = 0

    def sampled(self, worker: int, rows: int) -> bool:
        """``worker`` sampled ``rows`` more; whether it is due new weights."""
        self.unsynced[worker] += rows
        return self.unsynced[worker] >= self.max_weight_sync_delay

    def weights_sent(self, worker: int) -> None:
        self.unsynced[worker] = 0


class AsyncReplayOptimizer(LearnerQueueOptimizer):
    """Ape-X: see the module docstring.

    Args:
        workers: the WorkerSet (at least one remote worker).
        learning_starts: rows sampled before replay starts (split over the shards).
        buffer_size: rows per policy over all shards.
        prioritized_replay, prioritized_replay_alpha, prioritized_replay_beta,
        final_prioritized_replay_beta, prioritized_replay_beta_annealing_timesteps,
        prioritized_replay_eps: as for ``SyncReplayOptimizer``.
        train_batch_size: rows per replayed batch.
        num_replay_buffer_shards: shard actors.
        max_weight_sync_delay: steps a worker samples between new weights.
        max_sample_requests_in_flight_per_worker: credits of each worker.
        max_requests_in_flight_per_replay_shard: replayed batches asked of each shard.
        max_adds_in_flight_per_shard: adds waiting at a shard before batches drop.
        learner_queue_size: replayed batches waiting for the learner, at most.
        learner_queue_timeout: seconds without a batch for the learner (once replay
            has started) before ``step()`` raises, naming the silent shards.
        target_network_update_freq: sampled steps between target network updates.
        worker_side_prioritization: workers compute their rows' first priorities.
        seed: base seed of the shards' sampling generators.
        shard_class: the shard actors' class (``ReplayShard`` or a subclass).
    """

    def __init__(
        self,
        workers: WorkerSet,
        learning_starts: int = 50_000,
        buffer_size: int = 2_000_000,
        prioritized_replay: bool = True,
        prioritized_replay_alpha: float = 0.6,
        prioritized_replay_beta: float = 0.4,
        final_prioritized_replay_beta: float = 0.4,
        prioritized_replay_beta_annealing_timesteps: int = 20_000,
        prioritized_replay_eps: float = 1e-6,
        train_batch_size: int = 512,
        num_replay_buffer_shards: int = 4,
        max_weight_sync_delay: int = 400,
        max_sample_requests_in_flight_per_worker: int = 2,
        max_requests_in_flight_per_replay_shard: int = 2,
        max_adds_in_flight_per_shard: int = 16,
        learner_queue_size: int = 16,
        learner_queue_timeout: float = 300.0,
        target_network_update_freq: int = 500_000,
        worker_side_prioritization: bool = True,
        seed: int | None = None,
        shard_class: type[ReplayShard] = ReplayShard,
    ) -> None:
        super().__init__(workers)
        self._remote = workers.remote_workers()
        if not self._remote:
            raise ValueError(
                "Ape-X samples on remote rollout workers only: set num_workers >= 1 (got 0)"
            )
        for name, value in (
            ("train_batch_size", train_batch_size),
            ("max_sample_requests_in_flight_per_worker", max_sample_requests_in_flight_per_worker),
            ("max_requests_in_flight_per_replay_shard", max_requests_in_flight_per_replay_shard),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if learner_queue_timeout <= 0:
            raise ValueError(f"learner_queue_timeout must be > 0 s, got {learner_queue_timeout}")
        self.plan = ApexPlan(
            len(self._remote),
            num_replay_buffer_shards,
            learning_starts,
            max_weight_sync_delay,
            max_adds_in_flight_per_shard,
        )
        self.train_batch_size = train_batch_size
        self.prioritized = prioritized_replay
        self.worker_side_prioritization = worker_side_prioritization and prioritized_replay
        self.worker_credits = max_sample_requests_in_flight_per_worker
        self.shard_credits = max_requests_in_flight_per_replay_shard
        self.learner_queue_timeout = learner_queue_timeout
        self.target_network_update_freq = target_network_update_freq
        shard_capacity = max(1, -(-buffer_size // num_replay_buffer_shards))
        try:
            self.backend.check_capacity(num_replay_buffer_shards, "replay shard")
        except ValueError as err:
            raise ValueError(
                f"Ape-X places {len(self._remote)} rollout worker(s) and "
                f"{num_replay_buffer_shards} replay shard(s), one actor each: {err}"
            ) from None
        # Each shard's generators get their own seed, so shards draw differently.
        self.shards = [
            self.backend.spawn(
                shard_class,
                shard_capacity,
                num_replay_buffer_shards,
                prioritized_replay,
                prioritized_replay_alpha,
                prioritized_replay_eps,
                prioritized_replay_beta,
                final_prioritized_replay_beta,
                prioritized_replay_beta_annealing_timesteps,
                None if seed is None else seed + 1000 * (i + 1),
                count=1,
                role="replay shard",
            )[0]
            for i in range(num_replay_buffer_shards)
        ]
        self.learner = LearnerThread(workers.local_worker(), learner_queue_size)
        method = "sample_with_priorities" if self.worker_side_prioritization else "sample"
        self._samples = self.backend.stream(self._remote, method)
        self._replays = self.backend.stream(self.shards, "replay", train_batch_size)
        self._replaying = [False] * len(self.shards)
        # replayed (shard, its generation, batch), for a full learner queue
        self._waiting: deque[tuple[int, int, Any]] = deque()
        self._adds: list[tuple[int, int, Future]] = []  # (shard, its generation, add call)
        self._generation = [0] * len(self.shards)  # times each shard was re-created
        self._other_calls: list[Future] = []  # weights and priorities sent, not yet answered
        self._started = False
        self.num_target_updates = 0
        self.num_shard_restarts = 0
        self.num_late_priority_updates = 0  # for rows of a shard since re-created
        self.num_weight_syncs = 0
        self._last_target_update = 0
        self._replay_started_at: float | None = None

    # -- the driver loop -------------------------------------------------
    def step(self) -> dict[str, Any]:
        """Route what arrived (samples to shards, replays to the learner, priorities
        back) for about a second; returns the fetches of the last learner update
        since the last call (empty if none yet)."""
        if not self._started:
            self._start()
        deadline = time.monotonic() + 1.0
        fetches: dict[str, Any] = {}
        while True:
            self._check_learner()
            with self._timed("wait"):
                samples = self._samples.take(timeout=0.005)
            for index, value in self.arrivals(samples, self._recreate_worker):
                self._on_sample(index, value)
            self._collect_adds()
            self._start_replays()
            replays = self._replays.take(timeout=0.0)
            for shard, batch in self.arrivals(replays, self._restart_shard):
                self._on_replay(shard, batch)
            self._feed_learner()
            fetches = self._drain_learner() or fetches
            self._update_target()
            self._collect_other_calls()
            now = time.monotonic()
            if now >= deadline and (fetches or self._replay_started_at is None):
                return fetches
            self._check_starved(now)

    def _start(self) -> None:
        self.learner.last_batch_time = time.monotonic()
        self.learner.start()
        self.workers.sync_weights()
        for index in range(len(self._remote)):
            self._samples.grant(index, self.worker_credits)
        self._started = True

    def _recreate_worker(self, index: int, error: WorkerLostError) -> None:
        """Re-create a lost worker with the current weights; its stream starts anew."""
        self._samples.reset(index)
        with self.learner.weights_lock:
            self.workers.recreate_worker(self._remote[index], error)
        self.plan.weights_sent(index)
        self._samples.grant(index, self.worker_credits)

    def _on_sample(self, index: int, value: Any) -> None:
        batch, priorities = value if self.worker_side_prioritization else (value, None)
        local = self.workers.local_worker()
        rows = count_steps(batch, local.count_steps_by)
        self.num_steps_sampled += rows
        self._sampled_since += rows
        shard = self.plan.route(batch.count)
        if shard is not None:
            batches = local.trainable_batches(batch)
            if batches:
                rows_by_policy = MultiAgentBatch(batches, batch.count)
                add = self.backend.call([self.shards[shard]], "add", rows_by_policy, priorities)
                self._adds.append((shard, self._generation[shard], add[0]))
            else:
                self.plan.add_done(shard)
        if self.plan.sampled(index, rows):
            with self._timed("send_weights"), self.learner.weights_lock:
                weights = local.get_weights()
            global_vars = {"timestep": self.num_steps_sampled}
            actor = [self._remote[index]]
            self._other_calls += self.backend.call(actor, "set_weights", weights, global_vars)
            self.plan.weights_sent(index)
            self.num_weight_syncs += 1
        self._samples.grant(index)

    def _collect_adds(self) -> None:
        if not self._adds:
            return
        done, _ = self.backend.wait([f for _, _, f in self._adds], len(self._adds), timeout=0)
        finished = {id(f) for f in done}
        waiting = []
        for shard, generation, future in self._adds:
            if id(future) not in finished:
                waiting.append((shard, generation, future))
            elif generation == self._generation[shard]:  # else: to a shard since re-created
                self.plan.add_done(shard)
                try:
                    future.result()
                except WorkerLostError as err:
                    self._restart_shard(shard, err)
        self._adds = waiting

    def _restart_shard(self, shard: int, error: WorkerLostError) -> None:
        """Re-create a lost shard, empty; its replays and adds under way are gone (the
        stream's reset drops its replays; its adds, of an earlier generation, are
        skipped when they end)."""
        self._generation[shard] += 1
        self._replays.reset(shard)
        self._replaying[shard] = False
        self.backend.restart(self.shards[shard])
        self.plan.shard_lost(shard)
        self.num_shard_restarts += 1

    def _start_replays(self) -> None:
        for shard, replaying in enumerate(self._replaying):
            if not replaying and self.plan.replay_ready(shard):
                self._replays.grant(shard, self.shard_credits)
                self._replaying[shard] = True
                if self._replay_started_at is None:
                    self._replay_started_at = time.monotonic()
                    self.learner.last_batch_time = self._replay_started_at

    def _on_replay(self, shard: int, batch: Any) -> None:
        if batch is None:  # emptied meanwhile (cannot happen unless re-created): ask again
            self._replays.grant(shard)
            return
        # the shard's generation now: priorities for it go back only to this incarnation
        self._waiting.append((shard, self._generation[shard], batch))

    def _feed_learner(self) -> None:
        """Replayed batches onto the learner queue while it has room; each one queued
        earns its shard a new credit."""
        while self._waiting:
            shard, generation, batch = self._waiting[0]
            indexes = {pid: b[BATCH_INDEXES] for pid, b in batch.policy_batches.items()}
            try:
                self.learner.inqueue.put_nowait((batch, (shard, generation, indexes)))
            except queue.Full:
                return
            self._waiting.popleft()
            # a batch of an earlier incarnation earns the re-created shard nothing
            if self._replaying[shard] and generation == self._generation[shard]:
                self._replays.grant(shard)

    def _on_update(self, fetches: dict[str, Any], info: Any) -> None:
        if self.prioritized and info:
            self._send_priorities(*info, fetches)

    def _send_priorities(
        self, shard: int, generation: int, indexes: dict[str, np.ndarray], fetches: dict
    ) -> None:
        updates = {}
        for pid, result in fetches.items():
            if TD_ERROR not in result:
                raise ValueError(
                    f"prioritised replay needs the loss of policy {pid!r} to return a per-row "
                    f"{TD_ERROR!r} (LossOutput.per_row); it returned {sorted(result)}"
                )
            updates[pid] = (indexes[pid], np.abs(result[TD_ERROR]))
        if generation != self._generation[shard]:  # the shard was re-created since: too late
            self.num_late_priority_updates += 1
        else:
            self._other_calls += self.backend.call(
                [self.shards[shard]], "update_priorities", updates
            )

    def _update_target(self) -> None:
        if self.num_steps_sampled - self._last_target_update < self.target_network_update_freq:
            return
        self._last_target_update = self.num_steps_sampled
        with self.learner.weights_lock:
            self.workers.local_worker().foreach_trainable_policy(update_target)
        self.num_target_updates += 1

    def _collect_other_calls(self) -> None:
        """Raise the failures of weight and priority calls that are done."""
        if not self._other_calls:
            return
        done, pending = self.backend.wait(self._other_calls, len(self._other_calls), timeout=0)
        self._other_calls = pending
        for future in done:
            with contextlib.suppress(WorkerLostError):  # the stream reports it too
                future.result()

    def _check_starved(self, now: float) -> None:
        """Once replay has started, a learner without a batch for ``learner_queue_timeout``
        is an error naming the shards that had requests and sent nothing."""
        if self._replay_started_at is None or not self.learner.inqueue.empty() or self._waiting:
            return
        if now - self.learner.last_batch_time <= self.learner_queue_timeout:
            return
        silent = [
            repr(self.shards[s]) for s in range(len(self.shards)) if self._replays.in_flight(s)
        ]
        raise RuntimeError(
            f"no replayed batch reached the learner for {self.learner_queue_timeout:g}s "
            f"(learner_queue_timeout); replay shards asked and silent: "
            f"{', '.join(silent) or 'none'}"
        )

    # -- reporting and checkpoints ---------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            **self.learner_report(),
            "num_learner_updates": self.num_learner_updates,
            "num_target_updates": self.num_target_updates,
            "num_weight_syncs": self.num_weight_syncs,
            "num_dropped_batches": self.plan.num_dropped,
            "num_shard_restarts": self.num_shard_restarts,
            "num_late_priority_updates": self.num_late_priority_updates,
            "num_worker_restarts": self.workers.num_worker_restarts,
            "replay_shard_rows": list(self.plan.rows),
            "learner": self.learner_stats,
        }

    def save(self) -> dict[str, Any]:
        return {
            **super().save(),
            "num_learner_updates": self.num_learner_updates,
            "num_target_updates": self.num_target_updates,
            "last_target_update": self._last_target_update,
            "shard_rows": np.asarray(self.plan.rows, dtype=np.int64),
        }

    def restore(self, data: dict[str, Any]) -> None:
        super().restore(data)
        self.num_learner_updates = int(data["num_learner_updates"])
        self.num_target_updates = int(data["num_target_updates"])
        self._last_target_update = int(data["last_target_update"])

    def save_files(self, directory: str) -> None:
        """Each shard writes ``replay_shard_<i>.h5`` into ``directory``, all at once."""
        paths = [shard_file(directory, i) for i in range(len(self.shards))]
        calls = [
            self.backend.call([shard], "save", path)[0] for shard, path in zip(self.shards, paths)
        ]
        self.backend.get(calls)

    def restore_files(self, directory: str) -> None:
        """Each shard reads its file back (a checkpoint with other shard counts is an
        error naming both)."""
        paths = [shard_file(directory, i) for i in range(len(self.shards))]
        missing = [p for p in paths if not os.path.isfile(p)]
        found = sorted(n for n in os.listdir(directory) if n.startswith("replay_shard_"))
        if missing or len(found) != len(paths):
            raise ValueError(
                f"checkpoint {directory!r} holds {len(found)} replay shard file(s) "
                f"({', '.join(found) or 'none'}) and this run has {len(self.shards)} shard(s): "
                "set num_replay_buffer_shards to the saved run's"
            )
        calls = [
            self.backend.call([shard], "load", path)[0] for shard, path in zip(self.shards, paths)
        ]
        rows = self.backend.get(calls)
        for shard, count in enumerate(rows):
            self.plan.rows[shard] = max(self.plan.rows[shard], count)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the learner thread, the streams and the shards."""
        if self.learner.is_alive():
            self.learner.stop()
        self._samples.close(timeout)
        self._replays.close(timeout)
        calls = [f for _, _, f in self._adds] + self._other_calls
        if calls:
            done, _ = self.backend.wait(calls, len(calls), timeout=timeout)
            for future in done:
                with contextlib.suppress(Exception):
                    future.result()
        self._adds, self._other_calls = [], []
        for shard in self.shards:
            with contextlib.suppress(Exception):
                self.backend.kill(shard)
        self.shards = []
        self._started = False


def shard_file(directory: str, index: int) -> str:
    return os.path.join(directory, f"replay_shard_{index}.h5")
