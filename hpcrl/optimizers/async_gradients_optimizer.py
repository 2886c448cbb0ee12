"""AsyncGradientsOptimizer: workers compute gradients, the driver applies them as they arrive."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np

from hpcrl.backends.base import Future, RemoteError, WorkerLostError
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.optimizers.policy_optimizer import PolicyOptimizer
from hpcrl.policy.loss_output import LEARNER_STATS_KEY


class GradientStaleness:
    """Pure bookkeeping of weight versions: no backend, no networking.

    The driver's weights have a version, bumped by every applied gradient. When
    weights are sent to a worker, ``sent`` records the version it got; when
    that worker's gradient is applied, ``applied`` returns its staleness: the
    number of updates applied in between (0 = computed on the current weights).

    Example:
        >>> s = GradientStaleness()
        >>> s.sent("a"), s.sent("b")
        (0, 0)
        >>> s.next_to_apply(["b", "a"])
        ['a', 'b']
        >>> s.applied("a"), s.applied("b")
        (0, 1)
        >>> s.summary()
        {'staleness_mean': 0.5, 'staleness_max': 1, 'num_gradients': 2}
    """

    def __init__(self) -> None:
        self.version = 0
        self._sent: dict[Hashable, tuple[int, int]] = {}  # worker -> (version, send order)
        self._order = 0
        self._window: list[int] = []

    def sent(self, worker_id: Hashable) -> int:
        """Record that ``worker_id`` now works on the current weights; returns their version."""
        self._sent[worker_id] = (self.version, self._order)
        self._order += 1
        return self.version

    def next_to_apply(self, ready: Iterable[Hashable]) -> list[Hashable]:
        """The workers with a gradient ready, in the order they were sent weights (oldest first)."""
        return sorted(ready, key=lambda worker_id: self._sent[worker_id][1])

    def applied(self, worker_id: Hashable) -> int:
        """Record that ``worker_id``'s gradient was applied; returns its staleness."""
        if worker_id not in self._sent:
            raise KeyError(f"worker {worker_id!r} has no gradient in flight (call sent() first)")
        version, _ = self._sent.pop(worker_id)
        staleness = self.version - version
        self.version += 1
        self._window.append(staleness)
        return staleness

    def in_flight(self) -> list[Hashable]:
        """Workers sent weights whose gradient has not been applied yet."""
        return list(self._sent)

    def summary(self, reset: bool = True) -> dict[str, Any]:
        """Mean and max staleness of the gradients applied since the last reset."""
        window = self._window
        if reset:
            self._window = []
        return {
            "staleness_mean": float(np.mean(window)) if window else 0.0,
            "staleness_max": int(max(window)) if window else 0,
            "num_gradients": len(window),
        }


class AsyncGradientsOptimizer(PolicyOptimizer):
    """Asynchronous gradients (A3C).

    Each remote worker samples a fragment and computes gradients on it with
    its own copy of the weights. The driver applies whichever gradient arrives
    first to the local worker's policy, sends the new weights to that worker
    only, and asks it for its next gradients; the other workers keep working.
    Calls stay in flight between ``step()`` calls. A worker lost while
    computing is re-created by the WorkerSet (with the current weights) and
    asked again; its lost gradient is not counted.

    Args:
        workers: the WorkerSet; needs at least one remote worker.
        grads_per_step: gradients applied per ``step()``.

    Example:
        >>> from hpcrl.algorithms.a2c import A2CTorchPolicy
        >>> opt = AsyncGradientsOptimizer.make("CartPole-v1", A2CTorchPolicy, num_workers=2,
        ...                                    worker_config={"rollout_fragment_length": 10},
        ...                                    grads_per_step=4)
        >>> stats = opt.step()
        >>> opt.num_steps_sampled, "vf_loss" in stats["default_policy"]["learner_stats"]
        (40, True)
        >>> opt.stats()["staleness_max"] <= 1
        True
        >>> opt.stop()
        >>> opt.workers.stop()
    """

    def __init__(self, workers: WorkerSet, grads_per_step: int = 100) -> None:
        super().__init__(workers)
        if not workers.remote_workers():
            raise ValueError(
                "A3C needs num_workers >= 1 (gradients are computed on remote workers); "
                "got 0 remote workers: set num_workers to 1 or more"
            )
        if grads_per_step < 1:
            raise ValueError(f"grads_per_step must be >= 1, got {grads_per_step}")
        self.grads_per_step = grads_per_step
        self.staleness = GradientStaleness()
        self.learner_stats: dict[str, Any] = {}
        self.last_staleness: dict[str, Any] = self.staleness.summary()
        self._remote = workers.remote_workers()
        self._futures: dict[int, Future] = {}  # worker index -> its pending gradient call
        self._weight_futures: dict[int, Future] = {}  # worker index -> its last set_weights call
        self._started = False

    def _dispatch(self, index: int) -> None:
        actor = self._remote[index]
        [self._futures[index]] = self.backend.call([actor], "sample_and_compute_gradients")
        self.staleness.sent(index)

    def _collect(self, index: int) -> tuple[list, dict[str, Any], int]:
        # The worker ran set_weights before this gradient call: its future is done
        # by now, and getting it surfaces any error it raised.
        pending = [self._weight_futures.pop(index)] if index in self._weight_futures else []
        [*_, result] = self.backend.get([*pending, self._futures.pop(index)])
        return result

    def step(self) -> dict[str, Any]:
        local = self.workers.local_worker()
        if not self._started:
            self.workers.sync_weights()
            for index in range(len(self._remote)):
                self._dispatch(index)
            self._started = True
        applied = 0
        fetches: dict[str, Any] = {}
        while applied < self.grads_per_step:
            with self._timed("wait"):
                done, _ = self.backend.wait(list(self._futures.values()), num_returns=1)
            ready = {id(future) for future in done}
            indices = [i for i, future in self._futures.items() if id(future) in ready]
            for index in self.staleness.next_to_apply(indices):
                if applied == self.grads_per_step:
                    break
                try:
                    gradients, info, rows = self._collect(index)
                except WorkerLostError as err:
                    self.workers.recreate_worker(self._remote[index], err)
                    self._dispatch(index)
                    continue
                with self._timed("apply"):
                    local.apply_gradients(gradients)
                self.staleness.applied(index)
                with self._timed("send"):
                    [self._weight_futures[index]] = self.backend.call(
                        [self._remote[index]], "set_weights", local.get_weights()
                    )
                    self._dispatch(index)
                self.learner_stats = {pid: r[LEARNER_STATS_KEY] for pid, r in info.items()}
                fetches = info
                self.num_steps_sampled += rows
                self.num_steps_trained += rows
                applied += 1
        self.last_staleness = self.staleness.summary()
        return fetches

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "staleness_mean": self.last_staleness["staleness_mean"],
            "staleness_max": self.last_staleness["staleness_max"],
            "learner": self.learner_stats,
        }

    def stop(self) -> None:
        """Wait for the gradient calls still in flight and drop their results."""
        for future in [*self._weight_futures.values(), *self._futures.values()]:
            with contextlib.suppress(RemoteError):
                self.backend.get([future])
        self._futures.clear()
        self._weight_futures.clear()
        self._started = False
