"""Learner: one rank of a data-parallel learner group, as a backend actor.

A learner holds a copy of the policy on its device and runs minibatch SGD on
its shard of each train batch. After every backward pass the gradients of all
learners are averaged by one all-reduce of one flat buffer (weighted by rows,
so the result is the gradient of the mean loss over the global minibatch even
when the learners' parts differ by a row); then the policy clips them
(``extra_grad_process``) and its optimizer steps. Every learner applies the
same averaged gradient to the same weights with the same optimizer state, so
the weights stay identical on all of them.

``torch.distributed`` is imported only when a learner joins a group of more
than one, so ``import hpcrl`` does not load it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from hpcrl.learners.rendezvous import Rendezvous
from hpcrl.policy.observation_filter import without_filter_state
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.sgd import minibatch_sgd
from hpcrl.policy.torch_policy import TorchPolicy


class CollectiveError(RuntimeError):
    """An all-reduce failed: most often because another learner failed first."""


class Learner:
    """Copies of the trainable policies in a torch.distributed process group (one rank).

    Made by ``LearnerGroup`` through ``backend.spawn(Learner, ..., role="learner")``;
    the group then calls ``describe``, ``open_store`` (learner 0), ``join``,
    and per train batch ``set_policy_state``, ``learn`` and ``get_weights``.
    A single learner (``world_size`` 1) makes no process group.

    Args:
        policy_specs: policy id -> ``(TorchPolicy subclass, observation space,
            action space, config)``; ``device`` in each config is set by ``join``.
        num_torch_threads: torch threads of this process (None: leave as is).

    Example:
        >>> import gymnasium as gym
        >>> from hpcrl.algorithms.ppo import PPOTorchPolicy
        >>> from hpcrl.learners.rendezvous import Rendezvous
        >>> spec = (PPOTorchPolicy, gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2),
        ...         {"model": {"fcnet_hiddens": [8]}})
        >>> learner = Learner({"default_policy": spec})
        >>> learner.join(Rendezvous(0, 1, 0, "localhost", 1), "gloo", "cpu", timeout_s=10)
        >>> learner.policies["default_policy"].device, learner.rendezvous.world_size
        (device(type='cpu'), 1)
    """

    def __init__(
        self,
        policy_specs: dict[str, tuple[type[Policy], gym.Space, gym.Space, dict[str, Any]]],
        num_torch_threads: int | None = None,
    ) -> None:
        self.policy_specs = dict(policy_specs)
        if num_torch_threads:
            torch.set_num_threads(num_torch_threads)
        self.policies: dict[str, Any] = {}
        self.rendezvous: Rendezvous | None = None
        self._store: Any = None
        self.store: Any = None
        self._in_group = False
        self._allreduce_s = 0.0

    def describe(self) -> dict[str, Any]:
        """Where this learner runs: host name, ids of the CUDA devices it sees, pid."""
        gpus = []
        if torch.cuda.is_available():
            gpus = [
                str(torch.cuda.get_device_properties(i).uuid)
                for i in range(torch.cuda.device_count())
            ]
        return {"host": socket.gethostname(), "gpus": gpus, "pid": os.getpid()}

    def open_store(self, timeout_s: float) -> int:
        """Learner 0: start the rendezvous store on a free port; returns the port."""
        import torch.distributed as dist

        self._store = dist.TCPStore(
            "0.0.0.0",
            0,
            is_master=True,
            wait_for_workers=False,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        return int(self._store.port)

    def join(self, rendezvous: Rendezvous, backend: str, device: str, timeout_s: float) -> None:
        """Join the process group (blocks until every learner has) and build the policy.

        Args:
            rendezvous: this learner's rank, world size and the master's address.
            backend: "nccl" or "gloo".
            device: torch device of this learner ("cpu", "cuda:1").
            timeout_s: seconds a collective may wait for the others before failing.
        """
        self.rendezvous = rendezvous
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        if rendezvous.world_size > 1:
            # The group's store: DD-PPO's workers count there who has finished sampling.
            self.store = _init_process_group(self._store, rendezvous, backend, device, timeout_s)
            self._store = None
            self._in_group = True
        for pid, (policy_class, obs_space, act_space, config) in self.policy_specs.items():
            policy = policy_class(obs_space, act_space, {**config, "device": device})
            if not isinstance(policy, TorchPolicy):
                raise TypeError(
                    f"data-parallel learners need a TorchPolicy (its learn_on_batch averages "
                    f"gradients across learners); policy {pid!r} ({policy_class.__name__}) is "
                    "not one: set num_learners=1 and num_gpus_per_learner=0 for it"
                )
            self.policies[pid] = policy

    def set_policy_state(self, states: dict[str, dict[str, Any]]) -> None:
        """Weights, counters and coefficients (e.g. PPO's ``kl_coeff``) of the driver's
        policies, by policy id; this learner keeps its own optimizer state."""
        for pid, state in states.items():
            self.policies[pid].set_state(state)

    def learn(
        self, shards: dict[str, tuple[SampleBatch, Sequence[Sequence[np.ndarray]]]]
    ) -> dict[str, Any]:
        """SGD over each policy's shard: ``shards[pid] = (shard, epochs)`` where
        ``epochs[e][j]`` are the rows of minibatch ``j`` of epoch ``e``
        (``hpcrl.policy.sgd.minibatch_sgd``, the driver's routine too).

        Every learner of the group must get the same policies and number of
        minibatches per epoch (one all-reduce each). Returns, per policy id,
        ``minibatch_sgd``'s result for the shard and its rows (``results``), and
        the seconds spent here in all (``sgd_s``) and in all-reduces (``allreduce_s``).
        """
        try:
            return self._learn(shards)
        except Exception:
            # Leaving the group closes this learner's connections, so learners waiting
            # for it in an all-reduce fail now instead of at the group's timeout.
            self._leave_group()
            raise

    def _learn(
        self, shards: dict[str, tuple[SampleBatch, Sequence[Sequence[np.ndarray]]]]
    ) -> dict[str, Any]:
        if self.rendezvous.world_size > 1 and not self._in_group:
            raise RuntimeError(
                "this learner left its process group after an error and would now learn "
                "alone; start a new learner group (a new trainer)"
            )
        start = time.perf_counter()
        self._allreduce_s = 0.0
        results = {}
        for pid, (shard, epochs) in shards.items():
            reduce = self._all_reduce if self._in_group else None
            result = minibatch_sgd(self.policies[pid], shard, epochs, reduce)
            results[pid] = {"result": result, "rows": shard.count}
        return {
            "results": results,
            "sgd_s": time.perf_counter() - start,
            "allreduce_s": self._allreduce_s,
        }

    def _all_reduce(self, parameters: Sequence[torch.nn.Parameter], rows: int) -> None:
        start = time.perf_counter()
        all_reduce_gradients(parameters, rows)
        self._allreduce_s += time.perf_counter() - start

    def get_weights(self) -> dict[str, dict[str, np.ndarray]]:
        """Weights by policy id."""
        return {pid: policy.get_weights() for pid, policy in self.policies.items()}

    def get_policy_state(self) -> dict[str, dict[str, Any]]:
        """Each policy's state without its optimizer (weights, target networks,
        coefficients, counters), by policy id: what the driver checkpoints. Without
        the observation filter too: the driver's, merged from its rollout workers,
        is the one that counts."""
        return {
            pid: without_filter_state(p.get_state(include_optimizer=False))
            for pid, p in self.policies.items()
        }

    def get_optimizer_state(self) -> dict[str, Any]:
        """Each policy's optimizer state as numpy arrays and plain values, by policy id."""
        return {pid: p.get_state()["optimizer_state"] for pid, p in self.policies.items()}

    def set_optimizer_state(self, optimizer_states: dict[str, Any]) -> None:
        for pid, state in optimizer_states.items():
            self.policies[pid].set_state({"optimizer_state": state})

    def stop(self) -> None:
        self._leave_group()

    def _leave_group(self) -> None:
        if self._in_group:
            import torch.distributed as dist

            self._in_group = False
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _init_process_group(
    store: Any, rendezvous: Rendezvous, backend: str, device: str, timeout_s: float
) -> Any:
    """Join the default process group; returns its store."""
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=timeout_s)
    if backend == "nccl":
        # On a collective timeout, tear the communicator down and end the process
        # rather than leave it blocked on a GPU stream.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    if store is None:
        # Under torchrun, its agent already serves the store at MASTER_PORT.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
        store = dist.TCPStore(
            rendezvous.master_addr,
            rendezvous.master_port,
            world_size=rendezvous.world_size,
            is_master=rendezvous.is_master and not agent_store,
            timeout=timeout,
        )
    dist.init_process_group(
        backend,
        store=store,
        rank=rendezvous.rank,
        world_size=rendezvous.world_size,
        timeout=timeout,
        **({"device_id": torch.device(device)} if backend == "nccl" else {}),
    )
    return store


def all_reduce_gradients(parameters: Sequence[torch.nn.Parameter], rows: int) -> None:
    """Replace each gradient by the row-weighted mean of that gradient over all learners.

    One all-reduce of one flat buffer: every gradient times ``rows``, then one
    flag per parameter (1 if it has a gradient here) and ``rows``. After the
    sum, gradients are divided by the total rows; a parameter without a
    gradient on every learner keeps none. With losses that are means over the
    minibatch this is the gradient of the mean loss over the union of the
    learners' minibatches.

    Raises:
        CollectiveError: the all-reduce failed (another learner left or timed out).
    """
    import torch.distributed as dist

    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(float(rows))
    flags = [1.0 if p.grad is not None else 0.0 for p in params]
    meta = torch.tensor([*flags, float(rows)], dtype=flat.dtype, device=flat.device)
    buffer = torch.cat([flat, meta])
    try:
        dist.all_reduce(buffer)
    except Exception as err:
        raise CollectiveError(
            f"gradient all-reduce failed ({err}); another learner probably failed first"
        ) from err
    size = flat.numel()
    mean = buffer[:size].div_(buffer[-1])
    has_grad = buffer[size:-1].tolist()
    offset = 0
    for param, flag in zip(params, has_grad):
        count = param.numel()
        param.grad = mean[offset : offset + count].view_as(param) if flag > 0 else None
        offset += count
