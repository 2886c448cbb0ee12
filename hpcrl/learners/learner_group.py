"""LearnerGroup: K learners doing data-parallel minibatch SGD, started on a backend.

Where the learners run:

- **mpi**: each learner is an MPI rank in its serve loop (the ranks after the
  rollout workers'); the driver, rank 0, is not a learner.
- **dask**: each learner is a Dask actor.
- **local** with one learner: the learner is an object in the driver process.
- **local** with K > 1 learners: torch.distributed needs a process per rank,
  which the local backend does not have, so the group starts K child
  processes itself (``hpcrl.learners.processes``).

The driver is never a learner. It stays free to watch every learner (a
failure is reported as soon as any learner's answer says so, rather than
the driver itself being stuck in an all-reduce with the others); the same
code serves every backend, the driver's own device and memory are not
needed, and under Slurm each learner can be a task bound to one GPU while
the driver shares a node with the rollout workers. The cost is one more
process and sending every learner its shard.

Rendezvous (``rendezvous.py``): the driver asks each learner for its host,
learner 0 opens the store on a free port, and the driver sends every learner
its rank, world size, node-local rank (its GPU), the master's address, the
backend (NCCL when every learner has a GPU, gloo otherwise) and its device.
DESIGN.md has the address broadcast over MPI from the first learner; here
the driver relays it in the backend's messages (MPI messages under MPI)
instead, because learner ranks sit in their serve loops with no
communicator of their own, and one relay then serves every backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.backends.base import Backend, Future, RemoteError
from hpcrl.backends.local import LocalBackend
from hpcrl.learners.rendezvous import assign_devices, check_learner_options, plan_rendezvous
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch

# Seconds to wait, after a first learner error, for the others to report theirs,
# so that the error reported is the cause and not a peer's failed all-reduce.
_ROOT_CAUSE_WAIT_S = 5.0


class LearnerError(RemoteError):
    """A learner raised: names its rank in the group, where it ran, and its traceback."""


def uses_learner_group(config: dict[str, Any]) -> bool:
    """True when the config asks for data-parallel learners (more than one, or GPUs).

    GPUs are asked for per learner (``num_gpus_per_learner``); there is no
    separate ``num_gpus`` key, which would say the same twice.

    Example:
        >>> uses_learner_group({"num_learners": 2}), uses_learner_group({"num_learners": 1})
        (True, False)
    """
    return config.get("num_learners", 1) > 1 or config.get("num_gpus_per_learner", 0) > 0


def check_learner_config(config: dict[str, Any]) -> None:
    """Raise ValueError, naming the key and the fix, for learner settings that cannot work.

    Example:
        >>> check_learner_config({"num_learners": 0})
        Traceback (most recent call last):
        ...
        ValueError: num_learners must be >= 1, got 0 (1: the driver's policy learns by itself)
    """
    num_learners = config.get("num_learners", 1)
    if num_learners < 1:
        raise ValueError(
            f"num_learners must be >= 1, got {num_learners} (1: the driver's policy learns by "
            "itself)"
        )
    check_learner_options(
        config.get("num_gpus_per_learner", 0), config.get("learner_backend", "auto")
    )
    minibatch = config.get("sgd_minibatch_size", 0)
    if uses_learner_group(config) and 0 < minibatch < num_learners:
        raise ValueError(
            f"sgd_minibatch_size={minibatch} cannot be split over num_learners={num_learners}; "
            f"make sgd_minibatch_size at least {num_learners}"
        )


def num_learner_actors(config: dict[str, Any]) -> int:
    """Backend actors the config's learners take (0 when the driver's policy learns)."""
    return int(config.get("num_learners", 1)) if uses_learner_group(config) else 0


def shard_sizes(count: int, num_learners: int) -> list[int]:
    """Rows of each learner's contiguous shard of a ``count``-row batch.

    Example:
        >>> shard_sizes(10, 3)
        [4, 3, 3]
    """
    return [len(part) for part in np.array_split(np.arange(count), num_learners)]


def plan_minibatches(
    sizes: Sequence[int], num_sgd_iter: int, sgd_minibatch_size: int, rng: np.random.Generator
) -> list[list[list[np.ndarray]]]:
    """Each learner's minibatches: ``plan[k][epoch][j]`` are rows of shard ``k``.

    Global minibatch ``j`` of an epoch is the union of the learners' ``j``-th
    parts. There are ``total // sgd_minibatch_size`` of them per epoch (one,
    the whole batch, when ``sgd_minibatch_size`` is 0 or covers the batch);
    each learner shuffles its shard every epoch and cuts it into that many
    near-equal parts, so every row is used once per epoch.

    Example:
        >>> plan = plan_minibatches([4, 4], 1, 4, np.random.default_rng(0))
        >>> [[len(part) for part in plan[k][0]] for k in range(2)]
        [[2, 2], [2, 2]]

    Raises:
        ValueError: a learner's shard has fewer rows than there are minibatches.
    """
    total = sum(sizes)
    if sgd_minibatch_size <= 0 or sgd_minibatch_size >= total:
        num_minibatches = 1
    else:
        num_minibatches = total // sgd_minibatch_size
    if min(sizes) < num_minibatches:
        raise ValueError(
            f"a train batch of {total} rows over {len(sizes)} learners leaves a learner "
            f"{min(sizes)} rows for {num_minibatches} minibatches of {sgd_minibatch_size}; "
            f"make sgd_minibatch_size at least {len(sizes)} (num_learners) or use fewer learners"
        )
    return [
        [np.array_split(rng.permutation(size), num_minibatches) for _ in range(num_sgd_iter)]
        for size in sizes
    ]


def global_minibatch_order(
    plan: Sequence[Sequence[Sequence[np.ndarray]]], sizes: Sequence[int]
) -> list[list[np.ndarray]]:
    """The plan as one learner over the whole batch would run it: ``[epoch][j]`` rows.

    Example:
        >>> plan = [[[np.array([1, 0])]], [[np.array([0])]]]
        >>> global_minibatch_order(plan, [2, 1])
        [[array([1, 0, 2])]]
    """
    offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    epochs = len(plan[0])
    return [
        [
            np.concatenate([offset + plan[k][e][j] for k, offset in enumerate(offsets)])
            for j in range(len(plan[0][e]))
        ]
        for e in range(epochs)
    ]


class LearnerGroup:
    """K learners on a backend, learning together on each train batch.

    Args:
        backend: where the learners run (see the module docstring).
        policy_class: a ``TorchPolicy`` subclass.
        observation_space: the policy's observation space.
        action_space: the policy's action space.
        config: the policy config.
        num_learners: K.
        num_gpus_per_learner: 0 (CPU, gloo) or 1 (a GPU each; NCCL unless forced).
        learner_backend: "auto", "nccl" or "gloo".
        timeout_s: seconds a learner waits in the rendezvous or a collective
            for the others before failing.

    Example:
        >>> import gymnasium as gym
        >>> from hpcrl.algorithms.ppo import PPOTorchPolicy
        >>> group = LearnerGroup(LocalBackend(), PPOTorchPolicy, gym.spaces.Box(-1, 1, (4,)),
        ...                      gym.spaces.Discrete(2), {}, num_learners=1)
        >>> group.process_group_backend, group.devices
        ('gloo', ['cpu'])
        >>> group.stop()
    """

    def __init__(
        self,
        backend: Backend,
        policy_class: type[Policy],
        observation_space: gym.Space,
        action_space: gym.Space,
        config: dict[str, Any],
        *,
        num_learners: int = 2,
        num_gpus_per_learner: int = 0,
        learner_backend: str = "auto",
        timeout_s: float = 300.0,
    ) -> None:
        if isinstance(num_learners, bool) or not isinstance(num_learners, int) or num_learners < 1:
            raise ValueError(f"num_learners must be an int >= 1, got {num_learners!r}")
        self.num_learners = num_learners
        self.timeout_s = timeout_s
        self._failed = False
        # Seconds of the last learn() in the slowest learner: all of it, and all-reduces.
        self.timings = {"sgd_s": 0.0, "allreduce_s": 0.0}
        self._own_backend = isinstance(backend, LocalBackend) and num_learners > 1
        threads = config.get("num_torch_threads")
        if self._own_backend:
            from hpcrl.learners.processes import ProcessBackend

            backend = ProcessBackend()
            threads = threads or max(1, (os.cpu_count() or 1) // num_learners)
        self.backend = backend
        self.learners: list[Any] = []
        try:
            backend.check_capacity(num_learners, "learner")
            self.learners = backend.spawn(
                _learner_class(),
                policy_class,
                observation_space,
                action_space,
                config,
                count=num_learners,
                role="learner",
                num_torch_threads=threads,
            )
            described = self._gather(backend.call(self.learners, "describe"))
            port = 0
            if num_learners > 1:
                [port] = self._gather(backend.call(self.learners[:1], "open_store", timeout_s))
            plan = plan_rendezvous([d["host"] for d in described], port)
            self.process_group_backend, self.devices = assign_devices(
                plan, [d["gpus"] for d in described], num_gpus_per_learner, learner_backend
            )
            self._gather(
                [
                    backend.call(
                        [learner], "join", rdv, self.process_group_backend, device, timeout_s
                    )[0]
                    for learner, rdv, device in zip(self.learners, plan, self.devices)
                ]
            )
        except BaseException:
            self.stop()
            raise

    def set_policy_state(self, state: dict[str, Any]) -> None:
        """Send the driver policy's weights and coefficients to every learner."""
        self.backend.broadcast(self.learners, "set_policy_state", state)

    def learn(
        self,
        samples: SampleBatch,
        num_sgd_iter: int,
        sgd_minibatch_size: int,
        rng: np.random.Generator,
    ) -> dict[str, float]:
        """Split ``samples`` into contiguous shards, one per learner, and run
        ``num_sgd_iter`` epochs of minibatch SGD on them (see ``plan_minibatches``).

        Columns of Python objects (``infos``) are not sent. Returns the learner
        stats of the last epoch, averaged over learners by rows.
        """
        batch = SampleBatch({k: v for k, v in samples.items() if v.dtype != object})
        sizes = shard_sizes(batch.count, self.num_learners)
        plan = plan_minibatches(sizes, num_sgd_iter, sgd_minibatch_size, rng)
        return self.learn_planned(batch, sizes, plan)

    def learn_planned(
        self, batch: SampleBatch, sizes: Sequence[int], plan: Sequence[Any]
    ) -> dict[str, float]:
        """``learn`` with given shard sizes and minibatch plan (``plan[k][epoch][j]``)."""
        from hpcrl.learners.learner import mean_stats

        bounds = np.concatenate(([0], np.cumsum(sizes)))
        futures = [
            self.backend.call([learner], "learn", batch.slice(int(a), int(b)), part)[0]
            for learner, a, b, part in zip(self.learners, bounds[:-1], bounds[1:], plan)
        ]
        results = self._gather(futures)
        self.timings = {key: max(r[key] for r in results) for key in ("sgd_s", "allreduce_s")}
        return mean_stats([r["stats"] for r in results], [r["rows"] for r in results])

    def get_weights(self) -> dict[str, np.ndarray]:
        """The weights (learner 0's; every learner has the same)."""
        return self.call("get_weights", first=True)[0]

    def call(self, method: str, *args: Any, first: bool = False) -> list[Any]:
        """``method(*args)`` on every learner (``first``: on learner 0 only); the
        answers in rank order."""
        learners = self.learners[:1] if first else self.learners
        return self._gather(self.backend.call(learners, method, *args))

    def stop(self) -> None:
        """Leave the process group and end the learners (at once after a failure)."""
        if self._own_backend:
            if self._failed:
                for learner in self.learners:
                    self.backend.kill(learner)
            self.backend.shutdown()
        elif not self._failed:
            for learner in self.learners:
                self.backend.kill(learner)
        self.learners = []

    def _gather(self, futures: Sequence[Future]) -> list[Any]:
        """Results in order; the first learner error raises ``LearnerError`` at once."""
        if self._failed:
            raise RuntimeError(
                "a learner of this group failed (see the LearnerError raised then) and the "
                "group is broken; stop the trainer and start a new one"
            )
        index = {id(f): rank for rank, f in enumerate(futures)}
        values: dict[int, Any] = {}
        pending = list(futures)
        while pending:
            done, pending = self.backend.wait(pending, num_returns=1, timeout=self.timeout_s)
            for position, future in enumerate(done):
                values[id(future)], error = _outcome(future)
                if error is not None:
                    others = [*done[position + 1 :], *pending]
                    self._raise_root_cause([(index[id(future)], error)], others, index)
        return [values[id(f)] for f in futures]

    def _raise_root_cause(
        self,
        errors: list[tuple[int, RemoteError]],
        pending: list[Future],
        index: dict[int, int],
    ) -> None:
        """Raise the learner error that caused the others: a learner whose all-reduce
        failed (``CollectiveError``) is reported only if no other learner failed."""
        self._failed = True
        deadline = time.monotonic() + _ROOT_CAUSE_WAIT_S
        while pending and all(_is_collective(e) for _, e in errors):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            done, pending = self.backend.wait(pending, 1, left)
            errors += [(index[id(f)], e) for f in done if (e := _outcome(f)[1]) is not None]
        rank, error = min(errors, key=lambda entry: _is_collective(entry[1]))
        raise LearnerError(
            f"learner rank {rank} of {self.num_learners} on {error.where}",
            error.cause,
            error.remote_traceback,
        )


def _outcome(future: Future) -> tuple[Any, RemoteError | None]:
    """``(value, None)`` or ``(None, error)`` of a done future (read once: some
    backends hand a result out only once)."""
    try:
        return future.result(), None
    except RemoteError as err:
        return None, err


def _is_collective(error: RemoteError) -> bool:
    cause = error.cause
    text = cause if isinstance(cause, str) else type(cause).__name__
    return "CollectiveError" in text


def _learner_class() -> type:
    # Imported here: the learner module imports torch, which the driver of a
    # config without learners does not need.
    from hpcrl.learners.learner import Learner

    return Learner
