"""WorkerSet: the driver's local RolloutWorker plus N remote ones on a backend."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from hpcrl.backends import Backend, WorkerLostError, make_backend
from hpcrl.env.registry import registered_envs, resolve_env_creator
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.learners.learner_group import num_learner_actors
from hpcrl.policy.policy import Policy


def restart_refusal(restarts_so_far: int, recreate: bool, max_restarts: int) -> str | None:
    """Why a lost worker must not be re-created, or None to re-create it.

    Example:
        >>> restart_refusal(0, True, 3) is None
        True
        >>> restart_refusal(3, True, 3)
        'max_worker_restarts=3 restarts were already made; raise max_worker_restarts to go on'
        >>> restart_refusal(0, False, 3)
        'recreate_failed_workers is off; set it to True to re-create lost workers and go on'
    """
    if not recreate:
        return "recreate_failed_workers is off; set it to True to re-create lost workers and go on"
    if restarts_so_far >= max_restarts:
        return (
            f"max_worker_restarts={max_restarts} restarts were already made; "
            "raise max_worker_restarts to go on"
        )
    return None


class WorkerSet:
    """A local worker (which learns) and ``num_workers`` remote workers (which sample).

    With ``num_workers=0`` the local worker samples too. Remote workers are
    backend actors: call them through ``call_remote`` or ``self.backend``
    (``call``, ``get``, ``broadcast``), so the same driver code runs on every
    backend.

    Observation filters (``config["observation_filter"]``): ``sync_filters``
    merges what every remote worker's filters saw since the last sync into
    the local worker's (the driver's) and sends the result back; the Trainer
    calls it once per iteration.

    A remote worker whose process dies (on backends that outlive that, such
    as dask) is re-created with the local worker's current weights,
    observation filters and the last global vars when
    ``config["recreate_failed_workers"]`` is on (the default), at most
    ``config["max_worker_restarts"]`` times in all; ``call_remote`` and
    ``sync_weights`` do it and then go on.
    ``num_worker_restarts`` counts the restarts.

    Example:
        >>> from hpcrl.algorithms.pg import PGTorchPolicy
        >>> workers = WorkerSet(policy=PGTorchPolicy, env_creator="CartPole-v1",
        ...                     num_workers=2, config={"rollout_fragment_length": 10})
        >>> futures = workers.backend.call(workers.remote_workers(), "sample")
        >>> [b.count for b in workers.backend.get(futures)]
        [10, 10]
        >>> workers.stop()
    """

    def __init__(
        self,
        *,
        policy: type[Policy],
        env_creator: str | Callable[..., Any],
        num_workers: int | None = 0,
        config: dict[str, Any] | None = None,
        backend: Backend | str = "local",
        worker_class: type[RolloutWorker] = RolloutWorker,
    ) -> None:
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.config = dict(config or {})
        self.policy_class = policy
        self.env_creator = env_creator
        self.num_worker_restarts = 0
        self._global_vars: dict[str, Any] = {}
        # Under MPI this call does not return on the worker ranks: they serve actors.
        self.backend = make_backend(backend, self.config) if isinstance(backend, str) else backend
        if num_workers is None:
            # Data-parallel learners (hpcrl.learners) and replay shards (Ape-X) take
            # part of the backend's capacity.
            others = num_learner_actors(self.config)
            others += int(self.config.get("num_replay_buffer_shards") or 0)
            num_workers = max(0, self.backend.default_num_workers() - others)
        self.num_workers = num_workers
        self._remote: list[Any] = []
        try:
            self.backend.check_capacity(num_workers, "rollout worker")
            # With remote workers the local worker only learns: one env is enough
            # for it to know the spaces.
            self._local = RolloutWorker(
                env_creator,
                policy,
                self.config,
                worker_index=0,
                num_workers=num_workers,
                num_envs=1 if num_workers else None,
            )
            # Remote processes may not have run the driver's register_env calls
            # (Dask workers): they get the registered creator itself.
            remote_env = (
                resolve_env_creator(env_creator)
                if isinstance(env_creator, str) and env_creator in registered_envs()
                else env_creator
            )
            for index in range(1, num_workers + 1):
                self._remote += self.backend.spawn(
                    worker_class,
                    remote_env,
                    policy,
                    self.config,
                    count=1,
                    role="rollout worker",
                    worker_index=index,
                    num_workers=num_workers,
                )
            self.sync_weights()
        except BaseException:
            self.backend.shutdown()
            raise

    def local_worker(self) -> RolloutWorker:
        return self._local

    def remote_workers(self) -> list[Any]:
        return list(self._remote)

    def num_healthy_workers(self) -> int:
        """Remote workers whose process the backend does not know to be gone."""
        return sum(self.backend.is_alive(actor) for actor in self._remote)

    def call_remote(self, method: str, /, *args: Any, **kwargs: Any) -> list[Any]:
        """``method(*args, **kwargs)`` on every remote worker; the results in order.

        A worker lost during the call is re-created (``recreate_worker``) and
        asked again, so every worker's result is in.
        """
        futures = self.backend.call(self._remote, method, *args, **kwargs)
        return self.gather_remote(futures, again=(method, args, kwargs))

    def gather_remote(
        self,
        futures: list[Any],
        *,
        again: tuple[str, tuple[Any, ...], dict[str, Any]] | None = None,
        restore: Callable[[Any], None] | None = None,
    ) -> list[Any]:
        """The results of calls made on every remote worker (``futures`` in worker
        order). A worker lost during its call is re-created (``recreate_worker``),
        then ``restore(actor)`` runs (state the driver's weights do not carry,
        e.g. ES's optimizer moments), then the call ``again = (method, args,
        kwargs)`` is made on it once more; without ``again`` its result is None
        (a call whose effect the re-creation already gave it).
        """
        try:
            return self.backend.get(futures)
        except WorkerLostError:
            pass
        results = []
        for actor, future in zip(self._remote, futures):
            result = None
            while future is not None:
                try:
                    [result] = self.backend.get([future])
                    future = None
                except WorkerLostError as err:
                    self.recreate_worker(actor, err)
                    if restore is not None:
                        restore(actor)
                    future = None
                    if again is not None:
                        method, args, kwargs = again
                        [future] = self.backend.call([actor], method, *args, **kwargs)
            results.append(result)
        return results

    def recreate_worker(self, actor: Any, error: WorkerLostError) -> None:
        """Re-create the remote worker ``actor``, lost with ``error``, with the local
        worker's current weights and the last global vars (nothing to do if that
        already happened: a call made before it can report the loss later).

        Raises:
            WorkerLostError: naming the worker and why it was lost, when
                ``recreate_failed_workers`` is off or ``max_worker_restarts``
                restarts were already made.
        """
        if self.backend.is_alive(actor):
            return  # the error was about an incarnation already re-created
        max_restarts = int(self.config.get("max_worker_restarts", 100))
        while True:
            refusal = restart_refusal(
                self.num_worker_restarts,
                bool(self.config.get("recreate_failed_workers", True)),
                max_restarts,
            )
            if refusal is not None:
                raise WorkerLostError(error.where, f"{error.reason}; {refusal}", actor) from error
            self.num_worker_restarts += 1
            print(
                f"hpcrl: {error}; re-creating it with the current weights "
                f"(restart {self.num_worker_restarts} of at most {max_restarts})",
                file=sys.stderr,
                flush=True,
            )
            try:
                self.backend.restart(actor)
                # Weights, global vars and filters: the state a rollout worker gets from
                # the driver.
                futures = self.backend.call(
                    [actor], "set_weights", self._local.get_weights(), self._global_vars or None
                )
                filters = self._local.get_filter_states()
                if filters:
                    futures += self.backend.call([actor], "sync_filters", filters)
                self.backend.get(futures)
                return
            except WorkerLostError as again:
                error = again

    def sync_weights(self) -> None:
        """Send the local worker's weights to every remote worker."""
        if not self._remote:
            return
        weights = self._local.get_weights()
        try:
            self.backend.broadcast(self._remote, "set_weights", weights)
        except WorkerLostError:
            self.call_remote("set_weights", weights)

    def sync_filters(self) -> None:
        """Merge into the local worker's observation filters what each remote worker's
        saw since the last call, and send the merged filters back to them all.

        The merge is parallel Welford (count, mean, M2; ``WelfordMerge``) over every
        worker's update, in one ``Backend.reduce``: under MPI one ``Reduce`` over the
        ranks, not a message per worker; then one ``broadcast`` of the result. A
        worker takes it with what it saw meanwhile on top (``sync_filters``), so an
        asynchronous optimizer's workers lose nothing. Nothing happens when every
        policy has ``NoFilter``, or with no remote workers (the local worker's
        filters counted what it sampled).
        """
        layout = self._local.filter_layout()
        if not layout.sizes or not self._remote:
            return
        try:
            update = self.backend.reduce(
                self._remote, "pop_filter_updates", layout, layout.identity()
            )
        except WorkerLostError:
            # A worker was lost (Dask): ask again, re-creating it. The others hand
            # over what they gave the failed reduction again (it stays theirs until
            # they are synced), so only the lost worker's observations are left out.
            updates = self.call_remote("pop_filter_updates")
            update = functools.reduce(layout, updates, layout.identity())
        self._local.merge_filter_updates(update)
        states = self._local.get_filter_states()
        try:
            self.backend.broadcast(self._remote, "sync_filters", states)
        except WorkerLostError:
            self.call_remote("sync_filters", states)

    def set_global_vars(self, global_vars: dict[str, Any]) -> None:
        """``set_global_vars`` (e.g. ``{"timestep": N}``) on every worker's policies."""
        self._global_vars = dict(global_vars)
        self._local.set_global_vars(global_vars)
        if self._remote:
            self.call_remote("set_global_vars", global_vars)

    def foreach_worker(self, func: Callable[[Any], Any]) -> list[Any]:
        """``func(worker)`` on the local worker and then each remote one."""
        results = [func(self._local)]
        if self._remote:
            results += self.call_remote("apply", func)
        return results

    def foreach_policy(self, func: Callable[..., Any]) -> list[Any]:
        """``func(policy, policy_id)`` on every policy of every worker."""
        return [r for rs in self.foreach_worker(lambda w: w.foreach_policy(func)) for r in rs]

    def foreach_trainable_policy(self, func: Callable[..., Any]) -> list[Any]:
        """``func(policy, policy_id)`` on every policy in ``policies_to_train`` of every
        worker."""
        return [
            r for rs in self.foreach_worker(lambda w: w.foreach_trainable_policy(func)) for r in rs
        ]

    def stop(self) -> None:
        self._local.stop()
        self.backend.shutdown()
