"""Result loggers: result.json (a line per iteration), progress.csv, TensorBoard."""

from __future__ import annotations

import csv
import json
import os
from typing import Any

from hpcrl.io.json_values import json_safe
from hpcrl.tune.tensorboard import EventFileWriter


def flatten_result(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts flattened with ``/``: ``info/learner/default_policy/kl``."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_result(value, name + "/"))
        else:
            flat[name] = value
    return flat


def write_json(path: str, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(json_safe(data), f, indent=2, sort_keys=True)


class ResultLogger:
    """Writes every result of a trial to ``result.json``, ``progress.csv`` and
    TensorBoard events in ``trial_dir``."""

    def __init__(self, trial_dir: str) -> None:
        os.makedirs(trial_dir, exist_ok=True)
        self.trial_dir = trial_dir
        self._json = open(os.path.join(trial_dir, "result.json"), "a")  # noqa: SIM115
        csv_path = os.path.join(trial_dir, "progress.csv")
        # A resumed trial appends under the header already there.
        self._csv_header = _csv_header(csv_path)
        self._csv_file = open(csv_path, "a", newline="")  # noqa: SIM115
        self._csv: csv.DictWriter | None = None
        self._tensorboard = EventFileWriter(trial_dir)

    def log(self, result: dict[str, Any]) -> None:
        self._json.write(json.dumps(json_safe(result), sort_keys=True) + "\n")
        self._json.flush()
        flat = flatten_result(json_safe(result))
        if self._csv is None:
            fieldnames = self._csv_header or list(flat)
            self._csv = csv.DictWriter(self._csv_file, fieldnames=fieldnames, extrasaction="ignore")
            if not self._csv_header:
                self._csv.writeheader()
        self._csv.writerow(flat)
        self._csv_file.flush()
        scalars = {
            f"hpcrl/{k}": float(v)
            for k, v in flat.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        # A function trial may report no timesteps: its iterations are the steps then.
        step = result.get("timesteps_total", result.get("training_iteration", 0))
        self._tensorboard.add_scalars(scalars, int(step))

    def close(self) -> None:
        self._json.close()
        self._csv_file.close()
        self._tensorboard.close()


def _csv_header(path: str) -> list[str]:
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return next(csv.reader(f), [])
