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
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.backends.base import Backend, Future, RemoteError, WorkerLostError
from hpcrl.backends.local import LocalBackend
from hpcrl.learners.rendezvous import assign_devices, check_learner_options, plan_rendezvous
from hpcrl.policy.loss_output import LEARNER_STATS_KEY
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.sgd import mean_stats, plan_minibatches, shard_sizes

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


def trained_policy_specs(
    local_worker: Any,
) -> dict[str, tuple[type[Policy], gym.Space, gym.Space, dict[str, Any]]]:
    """``LearnerGroup``'s ``policy_specs`` of the worker's policies in ``policies_to_train``."""
    return {
        pid: (type(p), p.observation_space, p.action_space, p.config)
        for pid, p in local_worker.policy_map.items()
        if pid in local_worker.policies_to_train
    }


class LearnerGroup:
    """K learners on a backend, learning together on each train batch.

    Args:
        backend: where the learners run (see the module docstring).
        policy_specs: policy id -> ``(TorchPolicy subclass, observation space,
            action space, config)`` of every policy the learners train.
        num_learners: K.
        num_gpus_per_learner: 0 (CPU, gloo) or 1 (a GPU each; NCCL unless forced).
        learner_backend: "auto", "nccl" or "gloo".
        timeout_s: seconds a learner waits in the rendezvous or a collective
            for the others before failing.
        actors: existing actors that learn besides their own job (DD-PPO's
            workers), left to their owner; None: the group spawns its learners.
        gpus_key: the config key that errors about GPUs name.

    Example:
        >>> import gymnasium as gym
        >>> from hpcrl.algorithms.ppo import PPOTorchPolicy
        >>> spec = (PPOTorchPolicy, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), {})
        >>> group = LearnerGroup(LocalBackend(), {"default_policy": spec}, num_learners=1)
        >>> group.process_group_backend, group.devices
        ('gloo', ['cpu'])
        >>> group.stop()
    """

    def __init__(
        self,
        backend: Backend,
        policy_specs: dict[str, tuple[type[Policy], gym.Space, gym.Space, dict[str, Any]]],
        *,
        num_learners: int = 2,
        num_gpus_per_learner: int = 0,
        learner_backend: str = "auto",
        timeout_s: float = 300.0,
        actors: Sequence[Any] | None = None,
        gpus_key: str = "num_gpus_per_learner",
    ) -> None:
        if actors is not None:  # actors that learn besides their own job (DD-PPO's workers)
            num_learners = len(actors)
        if isinstance(num_learners, bool) or not isinstance(num_learners, int) or num_learners < 1:
            raise ValueError(f"num_learners must be an int >= 1, got {num_learners!r}")
        self.num_learners = num_learners
        self._own_actors = actors is None
        self.timeout_s = timeout_s
        self._failed = False
        # Seconds of the last learn() in the slowest learner: all of it, and all-reduces.
        self.timings = {"sgd_s": 0.0, "allreduce_s": 0.0}
        self._own_backend = (
            self._own_actors and isinstance(backend, LocalBackend) and num_learners > 1
        )
        configs = [spec[3] for spec in policy_specs.values()]
        threads = configs[0].get("num_torch_threads") if configs else None
        if self._own_backend:
            from hpcrl.learners.processes import ProcessBackend

            backend = ProcessBackend()
            threads = threads or max(1, (os.cpu_count() or 1) // num_learners)
        self.backend = backend
        self.learners: list[Any] = []
        try:
            if actors is not None:
                self.learners = list(actors)
            else:
                backend.check_capacity(num_learners, "learner")
                self.learners = backend.spawn(
                    _learner_class(),
                    policy_specs,
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
                plan, [d["gpus"] for d in described], num_gpus_per_learner, learner_backend,
                gpus_key,
            )  # fmt: skip
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

    def set_policy_state(self, states: dict[str, dict[str, Any]]) -> None:
        """Send the driver policies' weights and coefficients (by policy id) to every
        learner."""
        self.backend.broadcast(self.learners, "set_policy_state", states)

    def learn(
        self,
        policy_batches: dict[str, SampleBatch],
        num_sgd_iter: int,
        sgd_minibatch_size: int,
        rng: np.random.Generator,
        seq_lens: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Split each policy's batch into contiguous shards, one per learner, and run
        ``num_sgd_iter`` epochs of minibatch SGD on them (see ``plan_minibatches``).
        ``seq_lens[pid]``: a recurrent policy's sequences (``Policy.sequence_lengths``),
        which shards and minibatches keep whole.

        Columns of Python objects (``infos``) are not sent. Returns, per policy
        id, what ``minibatch_sgd`` returns for the whole batch: the learner stats
        of the last epoch averaged over learners by rows, and the per-row outputs
        in the batch's row order.
        """
        return self.learn_planned(
            self.plan(policy_batches, num_sgd_iter, sgd_minibatch_size, rng, seq_lens)
        )

    def plan(
        self,
        policy_batches: dict[str, SampleBatch],
        num_sgd_iter: int,
        sgd_minibatch_size: int,
        rng: np.random.Generator,
        seq_lens: dict[str, Any] | None = None,
    ) -> dict[str, tuple[SampleBatch, Sequence[int], Sequence[Any]]]:
        """The shard sizes and minibatch plans of ``learn``, by policy id."""
        plans = {}
        for pid, samples in policy_batches.items():
            batch = SampleBatch({k: v for k, v in samples.items() if v.dtype != object})
            lens = (seq_lens or {}).get(pid)
            sizes = shard_sizes(batch.count, self.num_learners, lens)
            plans[pid] = (
                batch,
                sizes,
                plan_minibatches(sizes, num_sgd_iter, sgd_minibatch_size, rng, lens),
            )
        return plans

    def learn_planned(
        self, plans: dict[str, tuple[SampleBatch, Sequence[int], Sequence[Any]]]
    ) -> dict[str, dict[str, Any]]:
        """``learn`` with given shard sizes and minibatch plans: ``plans[pid] =
        (batch, sizes, plan)`` with ``plan[k][epoch][j]`` the rows of learner ``k``."""
        results, _ = self.finish_learning(self.start_learning(plans))
        return results

    def start_learning(
        self,
        plans: dict[str, tuple[SampleBatch, Sequence[int], Sequence[Any]]],
        then_get_weights: bool = False,
    ) -> PendingLearning:
        """Send each learner its shards and return at once (``finish_learning``
        collects the results); with ``then_get_weights``, learner 0's weights after
        the update are asked for in the same go (its calls run in order)."""
        shards: list[dict[str, Any]] = [{} for _ in self.learners]
        for pid, (batch, sizes, plan) in plans.items():
            bounds = np.concatenate(([0], np.cumsum(sizes)))
            for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                shards[k][pid] = (batch.slice(int(a), int(b)), plan[k])
        futures = [
            self.backend.call([learner], "learn", part)[0]
            for learner, part in zip(self.learners, shards)
        ]
        weights = None
        if then_get_weights:
            weights = self.backend.call(self.learners[:1], "get_weights")[0]
        return PendingLearning(list(plans), futures, weights)

    def learning_done(self, pending: PendingLearning) -> bool:
        """Whether every call of ``pending`` has answered."""
        calls = pending.calls()
        done, _ = self.backend.wait(calls, num_returns=len(calls), timeout=0)
        return len(done) == len(calls)

    def finish_learning(
        self, pending: PendingLearning
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
        """The merged results of ``start_learning``'s update (waiting for them), and
        the weights asked for with it (else None)."""
        answers = self._gather(pending.futures)
        self.timings = {key: max(r[key] for r in answers) for key in ("sgd_s", "allreduce_s")}
        results = {
            pid: _merge_results([r["results"][pid] for r in answers]) for pid in pending.pids
        }
        weights = None if pending.weights is None else self._gather([pending.weights])[0]
        return results, weights

    def get_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """The weights by policy id (learner 0's; every learner has the same)."""
        return self.call("get_weights", first=True)[0]

    def call(self, method: str, *args: Any, first: bool = False) -> list[Any]:
        """``method(*args)`` on every learner (``first``: on learner 0 only); the
        answers in rank order."""
        learners = self.learners[:1] if first else self.learners
        return self._gather(self.backend.call(learners, method, *args))

    def stop(self) -> None:
        """Leave the process group and end the learners (at once after a failure);
        actors given to the group are left to their owner."""
        if not self._own_actors:
            pass
        elif self._own_backend:
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
        if isinstance(error, WorkerLostError):
            # Its process is gone: the owner of the actors may re-create it and form a
            # new group (DD-PPO's workers, ``DDPPOOptimizer``).
            raise error
        raise LearnerError(
            f"learner rank {rank} of {self.num_learners} on {error.where}",
            error.cause,
            error.remote_traceback,
        )


@dataclass
class PendingLearning:
    """An update under way on a ``LearnerGroup`` (``start_learning``)."""

    pids: list[str]
    futures: list[Future]
    weights: Future | None = None

    def calls(self) -> list[Future]:
        return [*self.futures, *([self.weights] if self.weights is not None else [])]


def _merge_results(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One ``minibatch_sgd`` result from the learners' results on their shards: stats
    averaged by rows, per-row outputs concatenated in shard order."""
    stats = mean_stats([p["result"][LEARNER_STATS_KEY] for p in parts], [p["rows"] for p in parts])
    merged: dict[str, Any] = {LEARNER_STATS_KEY: stats}
    for key in parts[0]["result"]:
        if key != LEARNER_STATS_KEY:
            merged[key] = np.concatenate([p["result"][key] for p in parts])
    return merged


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
