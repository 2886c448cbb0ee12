"""PolicyOptimizer: the base of every communication strategy."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from hpcrl.evaluation.rollout_worker import count_steps
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch, concat_samples


class PolicyOptimizer:
    """Decides who samples, who learns, and what is sent where.

    An optimizer talks to rollout workers only through the worker contract
    (``sample``, ``get_weights``, ``set_weights``, ``compute_gradients``,
    ``apply_gradients``, ``learn_on_batch``) and the backend interface, so it
    runs unchanged on every backend.

    Attributes:
        workers: the WorkerSet it drives.
        num_steps_sampled: env steps sampled so far.
        num_steps_trained: rows fed to SGD so far (rows x epochs).
    """

    def __init__(self, workers: WorkerSet) -> None:
        self.workers = workers
        self.backend = workers.backend
        self.num_steps_sampled = 0
        self.num_steps_trained = 0
        self.timers: dict[str, float] = defaultdict(float)

    @classmethod
    def make(
        cls,
        env_creator: str | Callable[..., Any],
        policy: type[Policy],
        *,
        num_workers: int = 0,
        worker_config: dict[str, Any] | None = None,
        backend: str = "local",
        **optimizer_kwargs: Any,
    ) -> PolicyOptimizer:
        """Build the WorkerSet and the optimizer in one call.

        Example:
            >>> from hpcrl.algorithms.pg import PGTorchPolicy
            >>> from hpcrl.optimizers import SyncSamplesOptimizer
            >>> opt = SyncSamplesOptimizer.make(
            ...     "CartPole-v1", PGTorchPolicy, num_workers=2,
            ...     worker_config={"num_envs_per_worker": 1, "rollout_fragment_length": 50})
            >>> stats = opt.step()
            >>> opt.num_steps_sampled
            100
        """
        workers = WorkerSet(
            policy=policy,
            env_creator=env_creator,
            num_workers=num_workers,
            config=worker_config,
            backend=backend,
        )
        return cls(workers, **optimizer_kwargs)

    def step(self) -> dict[str, Any]:
        """One round of sampling and learning; returns learner stats."""
        raise NotImplementedError(f"{type(self).__name__} must implement step")

    def stats(self) -> dict[str, Any]:
        """Counters and timings (seconds spent per phase); subclasses add the learner
        stats by policy id under ``learner``."""
        return {
            "num_steps_sampled": self.num_steps_sampled,
            "num_steps_trained": self.num_steps_trained,
            **{f"{name}_time_s": round(seconds, 4) for name, seconds in self.timers.items()},
        }

    def save(self) -> dict[str, Any]:
        """What a checkpoint keeps of this optimizer (plain values and arrays): the
        counters here; subclasses add their own state."""
        return {
            "num_steps_sampled": self.num_steps_sampled,
            "num_steps_trained": self.num_steps_trained,
        }

    def restore(self, data: dict[str, Any]) -> None:
        self.num_steps_sampled = int(data["num_steps_sampled"])
        self.num_steps_trained = int(data["num_steps_trained"])

    def save_files(self, directory: str) -> None:
        """Write state too large for ``save()`` into files of its own in the checkpoint
        ``directory`` (Ape-X's replay shards, each in parallel); nothing by default."""

    def restore_files(self, directory: str) -> None:
        """Read what ``save_files`` wrote into the checkpoint ``directory``."""

    def paused(self) -> contextlib.AbstractContextManager[Any]:
        """A context in which no learning changes the driver's policies, for reading a
        consistent state (a checkpoint); nothing to wait for when the optimizer learns
        only inside ``step()``."""
        return contextlib.nullcontext()

    def stop(self) -> None:
        """Release what the optimizer holds (the workers are stopped by their owner)."""

    def _timed(self, name: str) -> _Timer:
        return _Timer(self.timers, name)


class _Timer:
    def __init__(self, timers: dict[str, float], name: str) -> None:
        self.timers = timers
        self.name = name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.timers[self.name] += time.perf_counter() - self.start


def collect_samples(workers: WorkerSet, train_batch_size: int) -> SampleBatch | MultiAgentBatch:
    """Every remote worker samples (the local worker when there are none), repeated
    until at least ``train_batch_size`` steps are in (env or agent steps, as the
    workers' ``count_steps_by`` says); the batches concatenated."""
    remote = workers.remote_workers()
    local = workers.local_worker()
    batches: list[SampleBatch | MultiAgentBatch] = []
    steps = 0
    while steps < train_batch_size:
        # A remote worker lost on the way is re-created and samples again: the batch is whole.
        new = workers.call_remote("sample") if remote else [local.sample()]
        batches.extend(new)
        steps += sum(count_steps(b, local.count_steps_by) for b in new)
    return concat_samples(batches)
