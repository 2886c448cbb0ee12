"""Stop criteria: a trial stops when a result reaches any of them."""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from hpcrl.tune.logger import flatten_result

# Where a Trainer stops when given no stop criteria (`hpcrl train`, `tune.run`).
DEFAULT_STOP = {"timesteps_total": 1_000_000}
# Stop keys on Trainer.evaluate's figures.
EVALUATION_PREFIX = "evaluation/"


def check_stop_criteria(
    stop: dict[str, Any], result_keys: Collection[str] | None = None
) -> dict[str, float]:
    """Stop criteria as floats. With ``result_keys`` (a Trainer's), top-level keys
    must be among them; keys with a ``/`` (``info/learner/...``) are checked
    against the first result."""
    checked = {}
    for key, value in stop.items():
        if result_keys is not None and "/" not in key and key not in result_keys:
            from hpcrl.algorithms.config import unknown_key_message

            raise ValueError(unknown_key_message("stop key", key, result_keys))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"stop value for {key!r} must be a number, got {value!r}")
        checked[key] = float(value)
    return checked


class StopCriterionError(ValueError):
    """A stop criterion names a key the results do not have."""


def should_stop(result: dict[str, Any], stop: dict[str, float]) -> str | None:
    """The first criterion reached (``result[key] >= value``), or None.

    ``evaluation/...`` keys count only in results with an evaluation (every
    ``evaluation_interval`` iterations)."""
    flat = flatten_result(result)
    for key, target in stop.items():
        if key.startswith(EVALUATION_PREFIX) and "evaluation" not in result:
            continue
        if key not in flat:
            from hpcrl.algorithms.config import unknown_key_message

            raise StopCriterionError(unknown_key_message("stop key", key, flat))
        value = flat[key]
        if isinstance(value, (int, float)) and math.isfinite(value) and value >= target:
            return key
    return None
