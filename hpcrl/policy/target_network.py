"""Target networks: a frozen copy of a policy's model, moved toward it, kept in its state."""

from __future__ import annotations

import copy
from typing import Any

import torch

from hpcrl.policy.torch_policy import to_numpy, to_torch


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose parameters take no gradient (a target network)."""
    target = copy.deepcopy(model)
    for parameter in target.parameters():
        parameter.requires_grad_(False)
    return target


class TargetNetworkMixin:
    """``update_target(tau)`` of ``self.target_model`` toward ``self.model``, and the
    target's weights in the policy's state (``target_weights``), so a checkpoint
    restores it. DQN's and APPO's policies use it."""

    def update_target(self, tau: float | None = None) -> None:
        """target = tau * online + (1 - tau) * target (``config["tau"]`` by default;
        1: a copy)."""
        tau = self.config["tau"] if tau is None else tau
        with torch.no_grad():
            for target, online in zip(self.target_model.parameters(), self.model.parameters()):
                target.mul_(1.0 - tau).add_(online, alpha=tau)

    def get_state(self, include_optimizer: bool = True) -> dict[str, Any]:
        state = super().get_state(include_optimizer)
        state["target_weights"] = to_numpy(self.target_model.state_dict())
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if "target_weights" in state:
            self.target_model.load_state_dict(to_torch(state["target_weights"]))
