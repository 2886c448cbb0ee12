"""What ``tune.run`` returns: the trials, and the best of them by a metric."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from hpcrl.tune.experiment_state import read_experiment_state
from hpcrl.tune.logger import flatten_result
from hpcrl.tune.trial import Trial


class ExperimentAnalysis:
    """The trials of a finished (or interrupted) run.

    Args:
        trials: the trial records.
        default_metric: the metric ``get_best_*`` use when given none
            (``tune.run``'s ``metric``).
        default_mode: likewise, ``"max"`` or ``"min"``.

    Example:
        >>> trials = [Trial("a", "exp", {"x": 1}, "0_x=1", "/nowhere", last_result={"score": 2}),
        ...           Trial("b", "exp", {"x": 3}, "1_x=3", "/nowhere", last_result={"score": 5})]
        >>> ExperimentAnalysis(trials).get_best_config("score", "max")
        {'x': 3}
    """

    def __init__(
        self,
        trials: list[Trial],
        default_metric: str | None = None,
        default_mode: str | None = None,
    ) -> None:
        self.trials = trials
        self.default_metric = default_metric
        self.default_mode = default_mode

    @classmethod
    def from_directory(cls, experiment_dir: str) -> ExperimentAnalysis:
        """The analysis of the experiment in ``experiment_dir`` (its ``experiment_state.json``)."""
        state = read_experiment_state(os.path.expanduser(experiment_dir))
        if state is None:
            raise FileNotFoundError(
                f"{experiment_dir!r} holds no experiment_state.json: give the directory of an "
                "experiment run by tune.run (local_dir/name)"
            )
        trials = [Trial.from_json(data) for data in state["trials"]]
        return cls(trials, state.get("metric"), state.get("mode"))

    @property
    def results(self) -> dict[str, dict[str, Any]]:
        """The last result of every trial, by trial id."""
        return {trial.trial_id: trial.last_result for trial in self.trials}

    def trial_results(self, trial: Trial) -> list[dict[str, Any]]:
        """Every result of ``trial`` (its ``result.json``), oldest first."""
        path = os.path.join(trial.logdir, "result.json")
        if not os.path.isfile(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def get_best_trial(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> Trial | None:
        """The trial with the best ``metric``: in its last result (``scope="last"``)
        or in any of its results (``scope="all"``). None if no trial reported it."""
        metric, mode = self._metric_mode(metric, mode)
        if scope not in ("last", "all"):
            raise ValueError(f"scope must be 'last' or 'all', got {scope!r}")
        best, best_value = None, None
        for trial in self.trials:
            if scope == "last":
                values = [trial.last_result.get(metric)]
            else:
                values = [result.get(metric) for result in self.trial_results(trial)]
            value = _best([v for v in values if _is_number(v)], mode)
            if value is not None and (best_value is None or _better(value, best_value, mode)):
                best, best_value = trial, value
        return best

    def get_best_config(
        self, metric: str | None = None, mode: str | None = None, scope: str = "last"
    ) -> dict[str, Any] | None:
        """The config of ``get_best_trial(metric, mode, scope)``."""
        trial = self.get_best_trial(metric, mode, scope)
        return None if trial is None else trial.config

    def get_best_checkpoint(
        self, trial: Trial | None = None, metric: str | None = None, mode: str | None = None
    ) -> str | None:
        """Of ``trial``'s checkpoints (default: the best trial's, ``scope="all"``), the one
        written at the iteration with the best ``metric``; None if it has none."""
        metric, mode = self._metric_mode(metric, mode)
        trial = trial or self.get_best_trial(metric, mode, scope="all")
        if trial is None or not trial.checkpoints:
            return None
        value_at = {
            result.get("training_iteration"): result.get(metric)
            for result in self.trial_results(trial)
        }
        scored = [
            (value_at[c["iteration"]], c["path"])
            for c in trial.checkpoints
            if _is_number(value_at.get(c["iteration"]))
        ]
        if not scored:
            return trial.latest_checkpoint
        best = _best([value for value, _ in scored], mode)
        return next(path for value, path in reversed(scored) if value == best)

    def dataframe(self, metric: str | None = None, mode: str | None = None) -> Any:
        """A row per trial: its last result (with ``metric`` and ``mode``: its best
        result) flattened, ``config/...`` columns, ``trial_id``, ``status``, ``logdir``.
        A pandas DataFrame when pandas is installed, else a list of dicts."""
        rows = []
        for trial in self.trials:
            result = trial.last_result
            if metric is not None:
                mode = mode or self.default_mode or "max"
                scored = [r for r in self.trial_results(trial) if _is_number(r.get(metric))]
                if scored:
                    pick = max if mode == "max" else min
                    result = pick(scored, key=lambda r: r[metric])
            row = flatten_result(result)
            row.update(flatten_result(trial.config, "config/"))
            row.update(trial_id=trial.trial_id, status=trial.status, logdir=trial.logdir)
            rows.append(row)
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows)

    def _metric_mode(self, metric: str | None, mode: str | None) -> tuple[str, str]:
        metric = metric or self.default_metric
        mode = mode or self.default_mode
        if metric is None or mode not in ("min", "max"):
            raise ValueError(
                f"give a metric and a mode ('min' or 'max'), here or to tune.run; got "
                f"metric={metric!r}, mode={mode!r}"
            )
        return metric, mode


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def _best(values: list[float], mode: str) -> float | None:
    if not values:
        return None
    return max(values) if mode == "max" else min(values)
