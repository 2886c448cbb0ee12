"""Where learners meet: rank, world size, node-local rank and the master's address.

Pure functions of an environment mapping or of the learners' host names, so
every launcher's rules are testable without launching anything:

- ``rendezvous_from_torchrun_env``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT`` (torchrun, or anything that sets them).
- ``rendezvous_from_slurm_env``: ``SLURM_PROCID``, ``SLURM_NTASKS``,
  ``SLURM_LOCALID`` and the first host of ``SLURM_JOB_NODELIST`` (``srun``
  with one task per learner).
- ``rendezvous_from_environment``: whichever of the two the environment holds.
- ``plan_rendezvous``: learners started as backend actors (local processes,
  MPI ranks, Dask actors). The driver asks each learner for its host name,
  learner 0 opens the store on a free port, and the driver hands every learner
  its ``Rendezvous``: under MPI these messages are the backend's MPI messages.
- ``assign_devices``: which torch device each learner uses and whether the
  group runs on NCCL or gloo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEARNER_BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class Rendezvous:
    """One learner's place in the process group.

    Attributes:
        rank: this learner's rank in ``[0, world_size)``.
        world_size: number of learners.
        local_rank: index of this learner among the learners on its node (picks its GPU).
        master_addr: host of learner 0, which holds the rendezvous store.
        master_port: port of that store.

    Example:
        >>> Rendezvous(1, 2, 1, "node01", 29500).is_master
        False
    """

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int

    @property
    def is_master(self) -> bool:
        return self.rank == 0


def rendezvous_from_torchrun_env(env: Mapping[str, str]) -> Rendezvous:
    """The rendezvous torchrun describes in its environment variables.

    Example:
        >>> env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
        ...        "MASTER_ADDR": "gpu07", "MASTER_PORT": "29400"}
        >>> rendezvous_from_torchrun_env(env)
        Rendezvous(rank=3, world_size=4, local_rank=1, master_addr='gpu07', master_port=29400)
    """
    rank = _int_var(env, "RANK", "torchrun")
    world_size = _int_var(env, "WORLD_SIZE", "torchrun")
    local_rank = _int_var(env, "LOCAL_RANK", "torchrun") if "LOCAL_RANK" in env else 0
    master_addr = env.get("MASTER_ADDR") or "127.0.0.1"
    master_port = _int_var(env, "MASTER_PORT", "torchrun") if "MASTER_PORT" in env else 29500
    return _checked(Rendezvous(rank, world_size, local_rank, master_addr, master_port))


def rendezvous_from_slurm_env(env: Mapping[str, str]) -> Rendezvous:
    """The rendezvous of ``srun`` tasks, one learner per task.

    The master is the first host of ``SLURM_JOB_NODELIST`` (task 0 runs there
    under srun's default block distribution). The port is ``MASTER_PORT`` if
    set, else derived from ``SLURM_JOB_ID`` so that two jobs sharing a node do
    not pick the same one.

    Example:
        >>> env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
        ...        "SLURM_JOB_NODELIST": "gpu[003-006]", "SLURM_JOB_ID": "123456"}
        >>> rendezvous_from_slurm_env(env)
        Rendezvous(rank=5, world_size=8, local_rank=1, master_addr='gpu003', master_port=23456)
    """
    rank = _int_var(env, "SLURM_PROCID", "Slurm")
    world_size = _int_var(env, "SLURM_NTASKS", "Slurm")
    local_rank = _int_var(env, "SLURM_LOCALID", "Slurm") if "SLURM_LOCALID" in env else 0
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise ValueError(
            "SLURM_JOB_NODELIST is not set, so the master host is unknown; run the "
            "learners with srun inside an allocation, or set MASTER_ADDR and use torchrun "
            "variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)"
        )
    if "MASTER_PORT" in env:
        port = _int_var(env, "MASTER_PORT", "Slurm")
    else:
        port = (
            20000 + _int_var(env, "SLURM_JOB_ID", "Slurm") % 20000
            if "SLURM_JOB_ID" in env
            else 29500
        )
    return _checked(Rendezvous(rank, world_size, local_rank, first_host(nodelist), port))


def rendezvous_from_environment(env: Mapping[str, str]) -> Rendezvous:
    """torchrun's variables if ``RANK`` and ``WORLD_SIZE`` are set, else Slurm's.

    Raises:
        ValueError: neither launcher's variables are present.
    """
    if "RANK" in env and "WORLD_SIZE" in env:
        return rendezvous_from_torchrun_env(env)
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return rendezvous_from_slurm_env(env)
    raise ValueError(
        "no launcher variables found: expected RANK and WORLD_SIZE (torchrun) or "
        "SLURM_PROCID and SLURM_NTASKS (srun); start one process per learner with "
        "`torchrun --nproc-per-node K ...` or `srun -n K ...`"
    )


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list (``SLURM_JOB_NODELIST`` syntax).

    Example:
        >>> first_host("gpu[003-005,010],cpu1")
        'gpu003'
        >>> first_host("node-a,node-b")
        'node-a'
    """
    match = re.match(r"([^,\[]*)(?:\[([^\]]*)\])?", nodelist.strip())
    if match is None or not (match.group(1) or match.group(2)):
        raise ValueError(f"cannot read a host from Slurm node list {nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if ranges is None:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def plan_rendezvous(hosts: Sequence[str], master_port: int) -> list[Rendezvous]:
    """Rendezvous of learners started as actors, from each learner's host name.

    Learner 0 holds the store; each learner's local rank is its index among
    the learners on the same host, in learner order.

    Example:
        >>> [r.local_rank for r in plan_rendezvous(["a", "b", "a", "b"], 29500)]
        [0, 0, 1, 1]
    """
    if not hosts:
        raise ValueError("a learner group needs at least one learner")
    seen: dict[str, int] = {}
    plan = []
    for rank, host in enumerate(hosts):
        local_rank = seen.get(host, 0)
        seen[host] = local_rank + 1
        plan.append(Rendezvous(rank, len(hosts), local_rank, hosts[0], master_port))
    return plan


def assign_devices(
    plan: Sequence[Rendezvous],
    visible_gpus: Sequence[Sequence[str]],
    num_gpus_per_learner: int,
    learner_backend: str = "auto",
    gpus_key: str = "num_gpus_per_learner",
) -> tuple[str, list[str]]:
    """The process-group backend and each learner's torch device.

    ``visible_gpus[k]`` lists the ids (UUIDs) of the CUDA devices learner ``k``
    sees. With ``num_gpus_per_learner=1`` each learner takes the visible GPU
    numbered by its local rank (modulo the number it sees, so index 0 when the
    launcher binds one GPU per task); ``"auto"`` then means NCCL. Without GPUs
    every learner is on the CPU and ``"auto"`` means gloo. ``gpus_key`` is the
    config key the errors name (DD-PPO's workers, its learners, take
    ``num_gpus_per_worker``).

    Example:
        >>> plan = plan_rendezvous(["a", "a", "b", "b"], 29500)
        >>> gpus = [["a0", "a1"], ["a0", "a1"], ["b0", "b1"], ["b0", "b1"]]
        >>> assign_devices(plan, gpus, num_gpus_per_learner=1)
        ('nccl', ['cuda:0', 'cuda:1', 'cuda:0', 'cuda:1'])
        >>> assign_devices(plan, [[]] * 4, num_gpus_per_learner=0)
        ('gloo', ['cpu', 'cpu', 'cpu', 'cpu'])

    Raises:
        ValueError: an unknown backend, NCCL without GPUs, a learner without a
            GPU when GPUs are asked for, or two learners on one GPU.
    """
    check_learner_options(num_gpus_per_learner, learner_backend, gpus_key)
    if num_gpus_per_learner == 0:
        return "gloo", ["cpu"] * len(plan)
    devices = []
    owner: dict[str, int] = {}
    for rendezvous, gpus in zip(plan, visible_gpus):
        if not gpus:
            raise ValueError(
                f"learner {rendezvous.rank} sees no CUDA device but {gpus_key}=1; "
                "run the learners where GPUs are visible (srun --gpus-per-task=1), or set "
                f"{gpus_key}=0 to learn on CPUs over gloo"
            )
        index = rendezvous.local_rank % len(gpus)
        if gpus[index] in owner:
            raise ValueError(
                f"learners {owner[gpus[index]]} and {rendezvous.rank} would share GPU "
                f"{gpus[index]} (learner {rendezvous.rank} sees {len(gpus)} GPU(s)); one GPU "
                "per learner is needed: ask for at most as many learners per node as it has GPUs"
            )
        owner[gpus[index]] = rendezvous.rank
        devices.append(f"cuda:{index}")
    return ("gloo" if learner_backend == "gloo" else "nccl"), devices


def check_learner_options(
    num_gpus_per_learner: int, learner_backend: str, gpus_key: str = "num_gpus_per_learner"
) -> None:
    """Raise ValueError, saying what to set, for options no learner group can honour.

    Example:
        >>> check_learner_options(2, "auto")
        Traceback (most recent call last):
        ...
        ValueError: num_gpus_per_learner must be 0 (CPU) or 1 (one GPU per learner), got 2; ...
    """
    if learner_backend not in LEARNER_BACKENDS:
        raise ValueError(
            f"unknown learner_backend {learner_backend!r}; expected one of "
            f"{', '.join(LEARNER_BACKENDS)}"
        )
    if num_gpus_per_learner not in (0, 1):
        raise ValueError(
            f"{gpus_key} must be 0 (CPU) or 1 (one GPU per learner), got "
            f"{num_gpus_per_learner!r}; for more GPUs ask for more learners"
        )
    if num_gpus_per_learner == 0 and learner_backend == "nccl":
        raise ValueError(
            f"learner_backend='nccl' needs a GPU per learner but {gpus_key}=0; "
            f"set {gpus_key}=1, or learner_backend='auto' or 'gloo' for CPU learners"
        )


def _int_var(env: Mapping[str, str], name: str, launcher: str) -> int:
    value = env.get(name)
    if value is None:
        raise ValueError(f"{launcher} variable {name} is not set")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{launcher} variable {name}={value!r} is not an integer") from None


def _checked(rendezvous: Rendezvous) -> Rendezvous:
    if rendezvous.world_size < 1 or not 0 <= rendezvous.rank < rendezvous.world_size:
        raise ValueError(
            f"rank {rendezvous.rank} is outside world size {rendezvous.world_size}; "
            "the launcher's variables disagree"
        )
    if not 0 < rendezvous.master_port < 65536:
        raise ValueError(f"master port {rendezvous.master_port} is not a TCP port (1-65535)")
    return rendezvous
