"""``experiment_state.json``: an experiment's trials and searcher, for resuming it.

Written by the runner (atomically: beside the old one, then renamed) whenever a
trial is added, changes status or writes a checkpoint, and at most every two
seconds as results arrive, so a killed experiment's file names every
checkpoint its trials had reported. JSON, for people as for ``resume=True``.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from hpcrl.io.json_values import json_safe
from hpcrl.tune.search import Domain, is_grid
from hpcrl.tune.trial_files import rewrite_file

EXPERIMENT_STATE = "experiment_state.json"
STATE_FORMAT = "hpcrl.experiment_state"
STATE_VERSION = 1


def write_experiment_state(experiment_dir: str, state: dict[str, Any]) -> None:
    """Replace ``experiment_dir/experiment_state.json`` with ``state`` at once."""
    os.makedirs(experiment_dir, exist_ok=True)
    record = {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "updated": datetime.datetime.now().isoformat(timespec="seconds"),
        **json_safe(state),
    }
    text = json.dumps(record, indent=1, sort_keys=True)
    rewrite_file(os.path.join(experiment_dir, EXPERIMENT_STATE), text)


def read_experiment_state(experiment_dir: str) -> dict[str, Any] | None:
    """The state in ``experiment_dir`` (None when there is none)."""
    path = os.path.join(experiment_dir, EXPERIMENT_STATE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        state = json.load(f)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"{path!r} is not an hpcrl experiment state (format {state.get('format')})"
        )
    if state.get("format_version", 0) > STATE_VERSION:
        raise ValueError(
            f"{path!r} was written by a newer hpcrl (format version {state['format_version']}); "
            "upgrade hpcrl to resume it"
        )
    return state


def restore_objects(given: Any, saved: Any) -> Any:
    """A saved (JSON) config with the objects JSON could not hold taken from the
    config given again: where ``given`` has a class, a function or another
    non-JSON value (not a search space), that value is used.

    Example:
        >>> restore_objects({"env": dict, "lr": 0.1, "n": [1, print]}, {"env": "<class 'dict'>",
        ...                 "lr": 0.5, "n": [1, "<built-in function print>"]})
        {'env': <class 'dict'>, 'lr': 0.5, 'n': [1, <built-in function print>]}
    """
    if isinstance(given, dict) and isinstance(saved, dict) and not is_grid(given):
        return {key: restore_objects(given.get(key), value) for key, value in saved.items()}
    if isinstance(given, (list, tuple)) and isinstance(saved, list) and len(given) == len(saved):
        return [restore_objects(g, s) for g, s in zip(given, saved)]
    plain = (type(None), bool, int, float, str, dict, list, tuple)
    if not isinstance(given, plain) and not isinstance(given, Domain):
        return given
    return saved
