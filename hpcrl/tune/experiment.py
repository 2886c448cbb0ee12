"""Running one trial: a trainer, its stop criteria, results on disk, status shown."""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Callable
from typing import Any, TextIO

from hpcrl.algorithms.config import unknown_key_message
from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.algorithms.trainer import RESULT_KEYS
from hpcrl.tune.logger import ResultLogger, flatten_result, write_json
from hpcrl.tune.progress import StatusReporter

DEFAULT_LOCAL_DIR = os.path.join("~", "hpcrl_results")


def check_stop_criteria(stop: dict[str, Any]) -> dict[str, float]:
    """Stop criteria as floats; top-level keys must be numeric result keys.

    Keys with a ``/`` (``info/learner/...``) are checked against the first result.
    """
    checked = {}
    for key, value in stop.items():
        if "/" not in key and key not in RESULT_KEYS:
            raise ValueError(unknown_key_message("stop key", key, RESULT_KEYS))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"stop value for {key!r} must be a number, got {value!r}")
        checked[key] = float(value)
    return checked


class StopCriterionError(ValueError):
    """A stop criterion names a key the results do not have."""


def should_stop(result: dict[str, Any], stop: dict[str, float]) -> str | None:
    """The first criterion reached (``result[key] >= value``), or None."""
    flat = flatten_result(result)
    for key, target in stop.items():
        if key not in flat:
            raise StopCriterionError(unknown_key_message("stop key", key, flat))
        value = flat[key]
        if isinstance(value, (int, float)) and math.isfinite(value) and value >= target:
            return key
    return None


def trial_name(run: str, env: Any) -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    env_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", env if isinstance(env, str) else "custom_env")
    return f"{run}_{env_name}_{stamp}"


class Experiment:
    """One trial: a trainer trained until a stop criterion, with results on disk.

    Creating it checks everything the user gave (algorithm, config, env, stop
    criteria) and builds the trainer, so bad input fails before any training.
    ``run()`` trains, writing ``params.json``, ``result.json``,
    ``progress.csv`` and TensorBoard events under ``local_dir/name/<trial>/``.

    Example:
        >>> exp = Experiment("PG", {"env": "CartPole-v1"}, {"timesteps_total": 400},
        ...                  local_dir="/tmp/hpcrl_doc", verbose=0)
        >>> exp.run()["timesteps_total"] >= 400
        True
    """

    def __init__(
        self,
        run: str,
        config: dict[str, Any],
        stop: dict[str, Any],
        *,
        name: str = "default",
        local_dir: str = DEFAULT_LOCAL_DIR,
        verbose: int = 1,
        stream: TextIO | None = None,
        status_prefix: str | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        trainer_class = get_trainer_class(run)
        self.stop = check_stop_criteria(stop)
        if not self.stop:
            raise ValueError("no stop criteria: give at least one, e.g. {'timesteps_total': 1e5}")
        self.trainer = trainer_class(config)
        self.trial_dir = os.path.join(
            os.path.expanduser(local_dir), name, trial_name(run, self.trainer.config["env"])
        )
        self.verbose = verbose
        self.stream = stream
        self.status_prefix = status_prefix
        self.on_result = on_result

    def run(self) -> dict[str, Any]:
        """Train until a stop criterion is reached; returns the last result
        (with ``stopped_by`` naming the criterion). Stops the trainer at the end."""
        os.makedirs(self.trial_dir, exist_ok=True)
        write_json(os.path.join(self.trial_dir, "params.json"), self.trainer.config)
        logger = ResultLogger(self.trial_dir)
        reporter = (
            StatusReporter(self.stop, stream=self.stream, prefix=self.status_prefix)
            if self.verbose
            else None
        )
        try:
            while True:
                result = self.trainer.train()
                logger.log(result)
                if reporter is not None:
                    reporter.report(result)
                if self.on_result is not None:
                    self.on_result(result)
                reached = should_stop(result, self.stop)
                if reached is not None:
                    result["stopped_by"] = reached
                    return result
        finally:
            if reporter is not None:
                reporter.close()
            logger.close()
            self.trainer.stop()
