"""A trial directory's bookkeeping for resuming: its state file and its result logs."""

from __future__ import annotations

import csv
import datetime
import io
import json
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
    with open(path) as f:
        return json.load(f)


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
    ``iteration`` (they are trained again after a resume)."""
    path = os.path.join(trial_dir, "result.json")
    if os.path.exists(path):
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if _iteration(json.loads(line)) <= iteration]
        rewrite_file(path, "".join(kept))
    path = os.path.join(trial_dir, "progress.csv")
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if rows:
            column = rows[0].index("training_iteration") if "training_iteration" in rows[0] else 0
            kept_rows = [rows[0]] + [r for r in rows[1:] if int(float(r[column])) <= iteration]
            if len(kept_rows) == 1:
                kept_rows = []  # a fresh start writes the header again
            text = io.StringIO(newline="")
            csv.writer(text).writerows(kept_rows)
            rewrite_file(path, text.getvalue())


def _iteration(result: dict[str, Any]) -> int:
    return int(result.get("training_iteration", 0))


def rewrite_file(path: str, text: str) -> None:
    """Replace the file at ``path`` with ``text`` at once (written beside it first)."""
    with open(path + ".tmp", "w", newline="") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
