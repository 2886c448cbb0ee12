"""Adam with torch.optim.Adam's update rule, for fast process start.

torch's own optimizers import ``torch._dynamo`` the first time one is built
(about 1.4 s on a laptop core), which every rollout worker and learner
process would pay at start. This class has the same update as
``torch.optim.Adam`` (no weight decay, no amsgrad) and the part of the torch
optimizer interface that hpcrl uses: ``param_groups`` (with ``"lr"``),
``zero_grad``, ``step``, ``state_dict`` and ``load_state_dict``. ``GroupedAdam``
gives parameter groups their own learning rates (actor, critics, temperature of
the actor-critic algorithms). A policy may still return any torch optimizer from
its ``optimizer()`` hook.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch


class Adam:
    """Adam (Kingma & Ba 2015), updating all parameters with foreach kernels.

    Example:
        >>> layer = torch.nn.Linear(3, 1)
        >>> opt = Adam(layer.parameters(), lr=0.01)
        >>> layer(torch.ones(2, 3)).sum().backward()
        >>> opt.step()
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [{"params": self.params, "lr": lr, "betas": tuple(betas), "eps": eps}]
        self.steps = [0] * len(self.params)
        # The step counts as the fused kernel reads them (set from ``steps`` per call).
        self._step_tensors = [
            torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params
        ]
        self.exp_avg = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]
        self.exp_avg_sq = [
            torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params
        ]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        group = self.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        indices = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not indices:
            return
        for i in indices:
            self.steps[i] += 1
        params = [self.params[i] for i in indices]
        grads = [p.grad for p in params]
        exp_avg = [self.exp_avg[i] for i in indices]
        exp_avg_sq = [self.exp_avg_sq[i] for i in indices]
        if _fused_kernel_fits(params):
            # torch's fused Adam kernel (what torch.optim.Adam(fused=True) runs): one
            # call for all parameters, 72 us against 118 us for the foreach ops below
            # on the 64-64 actor-critic MLP of the classic-control files (2-core VM).
            steps = [self._step_tensors[i].fill_(self.steps[i]) for i in indices]
            torch._fused_adam_(
                params,
                grads,
                exp_avg,
                exp_avg_sq,
                [],
                steps,
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=eps,
                amsgrad=False,
                maximize=False,
            )
            return
        # Parameters are grouped by step count (all equal unless some had no
        # gradient at some step) so that bias corrections stay per parameter.
        by_step: dict[int, list[int]] = {}
        for k, i in enumerate(indices):
            by_step.setdefault(self.steps[i], []).append(k)
        for step, ks in by_step.items():
            p, g = [params[k] for k in ks], [grads[k] for k in ks]
            m, v = [exp_avg[k] for k in ks], [exp_avg_sq[k] for k in ks]
            torch._foreach_lerp_(m, g, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, g, g, 1 - beta2)
            step_size = lr / (1 - beta1**step)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(p, m, denom, -step_size)

    def state_dict(self) -> dict[str, Any]:
        group = self.param_groups[0]
        return {
            "lr": group["lr"],
            "betas": list(group["betas"]),
            "eps": group["eps"],
            "steps": list(self.steps),
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["steps"]) != len(self.params):
            raise ValueError(
                f"optimizer state has {len(state['steps'])} parameters, this model has "
                f"{len(self.params)}"
            )
        group = self.param_groups[0]
        group["lr"], group["betas"], group["eps"] = (
            float(state["lr"]),
            tuple(state["betas"]),
            float(state["eps"]),
        )
        self.steps = [int(s) for s in state["steps"]]
        for target, source in zip(
            self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]
        ):
            target.copy_(torch.as_tensor(source))


def _fused_kernel_fits(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused Adam kernel takes these parameters: dense float32 or
    float64 tensors, all on the CPU or all on one CUDA device."""
    first = params[0]
    if first.device.type not in ("cpu", "cuda"):
        return False
    return all(
        p.device == first.device
        and p.dtype in (torch.float32, torch.float64)
        and not p.is_sparse
        and not p.grad.is_sparse
        for p in params
    )


class GroupedAdam:
    """hpcrl's ``Adam`` over groups of parameters, each with its own learning rate.

    The optimizer interface TorchPolicy uses (``param_groups``, ``zero_grad``,
    ``step``, ``state_dict``, ``load_state_dict``). A parameter whose ``grad``
    is None at a step is not touched, its moments included.

    Example:
        >>> actor, critic = torch.nn.Linear(2, 1), torch.nn.Linear(3, 1)
        >>> opt = GroupedAdam([(actor.parameters(), 1e-4), (critic.parameters(), 1e-3)])
        >>> [group["lr"] for group in opt.param_groups]
        [0.0001, 0.001]
    """

    def __init__(
        self, groups: Sequence[tuple[Iterable[torch.nn.Parameter], float]], eps: float = 1e-8
    ) -> None:
        self.optimizers = [Adam(params, lr=lr, eps=eps) for params, lr in groups]
        # The groups' own dicts: setting a group's "lr" here sets its optimizer's.
        self.param_groups = [opt.param_groups[0] for opt in self.optimizers]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return {"groups": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["groups"]) != len(self.optimizers):
            raise ValueError(
                f"optimizer state has {len(state['groups'])} parameter groups, this "
                f"optimizer {len(self.optimizers)}"
            )
        for opt, group_state in zip(self.optimizers, state["groups"]):
            opt.load_state_dict(group_state)
