"""WorkerSet: the driver's local RolloutWorker plus N remote ones on a backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hpcrl.backends import Backend, make_backend
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.policy.policy import Policy


class WorkerSet:
    """A local worker (which learns) and ``num_workers`` remote workers (which sample).

    With ``num_workers=0`` the local worker samples too. Remote workers are
    backend actors: call them through ``self.backend`` (``call``, ``get``,
    ``broadcast``), so the same driver code runs on every backend.

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
    ) -> None:
        if num_workers is not None and num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.config = dict(config or {})
        self.policy_class = policy
        self.env_creator = env_creator
        # Under MPI this call does not return on the worker ranks: they serve actors.
        self.backend = make_backend(backend, self.config) if isinstance(backend, str) else backend
        if num_workers is None:
            num_workers = self.backend.max_actors() or 0
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
            for index in range(1, num_workers + 1):
                self._remote += self.backend.spawn(
                    RolloutWorker,
                    env_creator,
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

    def sync_weights(self) -> None:
        """Send the local worker's weights to every remote worker."""
        if self._remote:
            self.backend.broadcast(self._remote, "set_weights", self._local.get_weights())

    def set_global_vars(self, global_vars: dict[str, Any]) -> None:
        """``set_global_vars`` (e.g. ``{"timestep": N}``) on every worker's policies."""
        self._local.set_global_vars(global_vars)
        if self._remote:
            self.backend.get(self.backend.call(self._remote, "set_global_vars", global_vars))

    def foreach_worker(self, func: Callable[[Any], Any]) -> list[Any]:
        """``func(worker)`` on the local worker and then each remote one."""
        results = [func(self._local)]
        if self._remote:
            results += self.backend.get(self.backend.call(self._remote, "apply", func))
        return results

    def foreach_policy(self, func: Callable[..., Any]) -> list[Any]:
        """``func(policy, policy_id)`` on every policy of every worker."""
        return [r for rs in self.foreach_worker(lambda w: w.foreach_policy(func)) for r in rs]

    def stop(self) -> None:
        self._local.stop()
        self.backend.shutdown()
