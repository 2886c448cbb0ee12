"""Schedules of a value over sampled timesteps (learning rate, coefficients)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class PiecewiseSchedule:
    """Linear interpolation between ``(timestep, value)`` points, flat outside them.

    Example:
        >>> PiecewiseSchedule([[0, 1e-3], [1000, 1e-4]]).value(500)
        0.00055
    """

    def __init__(self, points: Sequence[Sequence[float]]) -> None:
        points = [tuple(p) for p in points]
        if not points or any(len(p) != 2 for p in points):
            raise ValueError(f"a schedule is a list of [timestep, value] pairs, got {points!r}")
        steps = [p[0] for p in points]
        if steps != sorted(steps):
            raise ValueError(f"schedule timesteps must increase, got {steps}")
        self.steps = np.array(steps, dtype=np.float64)
        self.values = np.array([p[1] for p in points], dtype=np.float64)

    def value(self, timestep: float) -> float:
        return float(np.interp(timestep, self.steps, self.values))


class LearningRateSchedule:
    """Policy mixin: sets the optimizer's learning rate from ``config["lr_schedule"]``
    (a list of ``[timestep, lr]``; None keeps ``lr``) at every global-var update."""

    def on_global_var_update(self, global_vars: dict[str, Any]) -> None:
        super().on_global_var_update(global_vars)
        schedule = self.config.get("lr_schedule")
        if schedule:
            self.set_lr(PiecewiseSchedule(schedule).value(self.global_timestep))
