"""Data-parallel learners over torch.distributed (NCCL on GPUs, gloo on CPUs).

``LearnerGroup`` starts K ``Learner`` actors on a backend, meets them in one
process group and runs minibatch SGD on shards of each train batch;
``hpcrl.optimizers.DataParallelOptimizer`` drives it. ``rendezvous`` holds
the launcher rules (torchrun, Slurm, actors) as pure functions. Importing
this package loads neither torch nor torch.distributed; ``Learner`` (which
needs torch) is imported on first use.
"""

from __future__ import annotations

from typing import Any

from hpcrl.learners.learner_group import (
    LearnerError,
    LearnerGroup,
    check_learner_config,
    uses_learner_group,
)
from hpcrl.learners.rendezvous import (
    Rendezvous,
    assign_devices,
    plan_rendezvous,
    rendezvous_from_environment,
    rendezvous_from_slurm_env,
    rendezvous_from_torchrun_env,
)


def __getattr__(name: str) -> Any:
    if name == "Learner":
        from hpcrl.learners.learner import Learner

        return Learner
    raise AttributeError(f"module 'hpcrl.learners' has no attribute {name!r}")


__all__ = [
    "Learner",
    "LearnerError",
    "LearnerGroup",
    "Rendezvous",
    "assign_devices",
    "check_learner_config",
    "plan_rendezvous",
    "rendezvous_from_environment",
    "rendezvous_from_slurm_env",
    "rendezvous_from_torchrun_env",
    "uses_learner_group",
]
