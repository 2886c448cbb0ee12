"""A trial directory's bookkeeping for resuming: its state file and its result logs."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import os
import re
from typing import Any

from hpcrl.io.json_values import json_safe

DEFAULT_LOCAL_DIR = os.path.join("~", "hpcrl_results")
TRIAL_STATE = "trial_state.json"
# Keys of the last result kept in trial_state.json (what a summary line needs).
_SUMMARY_KEYS = (
    "training_iteration",
    "timesteps_total",
    "time_total_s",
    "episode_reward_mean",
    "stopped_by",
)


def trial_prefix(run: str, env: Any) -> str:
    """The start of the default trial directory names of ``run`` on ``env``."""
    if env is None:
        env_name = "offline"
    else:
        env_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", env if isinstance(env, str) else "custom_env")
    return f"{run}_{env_name}_"


def write_trial_state(
    trial_dir: str, status: str, checkpoint: str | None, result: dict[str, Any] | None = None
) -> None:
    """Record ``status`` ("running", "preempted" or "finished"), the newest
    checkpoint and a summary of the last result in ``trial_state.json``."""
    state = {
        "status": status,
        "checkpoint": checkpoint,
        "updated": datetime.datetime.now().isoformat(timespec="seconds"),
        "last_result": json_safe({k: result[k] for k in _SUMMARY_KEYS if k in result})
        if result
        else None,
    }
    rewrite_file(os.path.join(trial_dir, TRIAL_STATE), json.dumps(state, indent=2, sort_keys=True))


def read_trial_state(trial_dir: str) -> dict[str, Any]:
    """``trial_state.json`` of a trial ({} when it has none)."""
    path = os.path.join(trial_dir, TRIAL_STATE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except ValueError as err:  # bad JSON, or bytes that are not UTF-8
        state = err
    if not isinstance(state, dict):
        raise ValueError(
            f"cannot read {path!r} ({state}): it is damaged; delete it to resume the trial "
            "from its newest checkpoint"
        )
    return state


def find_trial(experiment_dir: str, prefix: str) -> str | None:
    """The most recently updated trial directory named ``prefix*``, or None."""
    if not os.path.isdir(experiment_dir):
        return None
    trials = [
        os.path.join(experiment_dir, name)
        for name in os.listdir(experiment_dir)
        if name.startswith(prefix) and os.path.isdir(os.path.join(experiment_dir, name))
    ]
    if not trials:
        return None

    def updated(trial: str) -> float:
        state = os.path.join(trial, TRIAL_STATE)
        return os.path.getmtime(state if os.path.exists(state) else trial)

    return max(trials, key=updated)


def config_changes(trial_dir: str, config: dict[str, Any]) -> list[str]:
    """Keys whose value in ``config`` differs from the trial's ``params.json``."""
    path = os.path.join(trial_dir, "params.json")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        saved = json.load(f)
    current = json_safe(config)
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def truncate_results(trial_dir: str, iteration: int) -> None:
    """Drop the ``result.json`` lines and ``progress.csv`` rows of iterations after
    ``iteration`` (they are trained again after a resume); see ``kept_results``."""
    for path, text in kept_results(trial_dir, iteration).items():
        rewrite_file(path, text)


def kept_results(trial_dir: str, iteration: int) -> dict[str, str]:
    """What ``truncate_results`` leaves of ``result.json`` and ``progress.csv``: their
    lines up to ``iteration``. A last line that cannot be read was cut short by a kill
    as it was written, and goes too.

    Raises:
        ValueError: another line cannot be read, naming it (nothing is changed).
    """
    kept = {}
    path = os.path.join(trial_dir, "result.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.strip()]
        iterations = _iterations(path, lines, lambda line: _iteration(json.loads(line)))
        kept[path] = "".join(line for line, i in zip(lines, iterations) if i <= iteration)
    path = os.path.join(trial_dir, "progress.csv")
    if os.path.exists(path):
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows = list(csv.reader(f))
        if rows:
            column = rows[0].index("training_iteration") if "training_iteration" in rows[0] else 0
            iterations = _iterations(path, rows[1:], lambda row: int(float(row[column])))
            kept_rows = [rows[0]] + [r for r, i in zip(rows[1:], iterations) if i <= iteration]
            if len(kept_rows) == 1:
                kept_rows = []  # a fresh start writes the header again
            text = io.StringIO(newline="")
            csv.writer(text).writerows(kept_rows)
            kept[path] = text.getvalue()
    return kept


def _iterations(path: str, lines: list[Any], read: Any) -> list[float]:
    """The iteration of each line (infinite for a last line cut short)."""
    iterations: list[float] = []
    for number, line in enumerate(lines, start=1):
        try:
            iterations.append(read(line))
        except (ValueError, IndexError, AttributeError) as err:
            if number < len(lines):
                raise ValueError(
                    f"line {number} of {path!r} is damaged ({err}); repair or delete that line "
                    "to resume the trial"
                ) from None
            iterations.append(math.inf)
    return iterations


def _iteration(result: dict[str, Any]) -> int:
    return int(result.get("training_iteration", 0))


def rewrite_file(path: str, text: str) -> None:
    """Replace the file at ``path`` with ``text`` at once (written beside it first)."""
    with open(path + ".tmp", "w", newline="") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
