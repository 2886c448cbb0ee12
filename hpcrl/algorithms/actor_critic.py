"""Pieces shared by actor-critic policies (A2C, PPO)."""

from __future__ import annotations

from typing import Any

import torch

from hpcrl.policy.sample_batch import SampleBatch


def vf_preds_fetches(
    policy: Any,
    input_dict: dict[str, torch.Tensor],
    state_batches: list[torch.Tensor],
    model: Any,
    action_dist: Any,
) -> dict[str, torch.Tensor]:
    """Store the critic's value of each observation as ``vf_preds``."""
    return {SampleBatch.VF_PREDS: model.value_function()}


def explained_variance(targets: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """1 - Var[targets - predictions] / Var[targets], floored at -1 (NaN for fewer
    than two rows, such as a last minibatch of one row)."""
    if targets.numel() < 2:
        return torch.tensor(float("nan"))
    variance = torch.var(targets)
    return torch.clamp(1 - torch.var(targets - predictions) / variance, min=-1.0)
