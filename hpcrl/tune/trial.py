"""A trial as the driver records it: config, status, results, checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hpcrl.io.json_values import json_safe

PENDING = "PENDING"  # waiting to start (or to restart from its newest checkpoint)
RUNNING = "RUNNING"
PAUSED = "PAUSED"  # stopped with a checkpoint by its scheduler, to be continued later
TERMINATED = "TERMINATED"  # finished: a stop criterion, its scheduler, or the function returned
ERROR = "ERROR"  # failed more than max_failures times
STATUSES = (PENDING, RUNNING, PAUSED, TERMINATED, ERROR)


@dataclass
class Trial:
    """One trial of an experiment.

    Attributes:
        trial_id: unique within the run, e.g. ``"PPO_CartPole-v1_00003"``.
        experiment: the experiment's name (its directory under ``local_dir``).
        config: the config with every search space resolved.
        tag: the grid values and draws, e.g. ``"3_lr=0.001,gamma=0.99"``.
        logdir: the trial directory (``params.json``, ``result.json``,
            ``progress.csv``, ``checkpoint_NNNNNN/``, ``error.txt``, ``output.log``).
        parameters: the searched values by path (``{"model/fcnet_hiddens": [64]}``).
        status: ``PENDING``, ``RUNNING``, ``PAUSED``, ``TERMINATED`` or ``ERROR``.
        last_result: the newest result ({} before the first).
        checkpoints: ``{"path", "iteration"}`` of the checkpoints kept, oldest first.
        num_failures: how many times the trial failed (each is retried from its
            newest checkpoint while ``num_failures <= max_failures``).
        error_file: ``error.txt`` with the last failure's traceback, if any.
        restore_from: the checkpoint the next start continues from.
        exploits: population-based training's record of this trial's restarts
            from another trial: ``{"iteration", "donor", "checkpoint", "config"}``.
    """

    trial_id: str
    experiment: str
    config: dict[str, Any]
    tag: str
    logdir: str
    parameters: dict[str, Any] = field(default_factory=dict)
    status: str = PENDING
    last_result: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    num_failures: int = 0
    error_file: str | None = None
    restore_from: str | None = None
    exploits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def latest_checkpoint(self) -> str | None:
        """The newest checkpoint's path, or None."""
        return self.checkpoints[-1]["path"] if self.checkpoints else None

    @property
    def is_finished(self) -> bool:
        return self.status in (TERMINATED, ERROR)

    def to_json(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trial:
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})

    def __repr__(self) -> str:
        return f"Trial({self.trial_id}, {self.status})"
