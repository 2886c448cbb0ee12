"""Experiments: many trials of a Trainer or a function, searched and scheduled.

``from hpcrl import tune`` (or ``import hpcrl.tune as tune``) then
``tune.run(PPOTrainer, config={"env": "CartPole-v1", "lr": tune.grid_search([...])})``.
The names below are imported on first use, so ``import hpcrl.tune`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "run": "hpcrl.tune.runner",
    "run_experiments": "hpcrl.tune.runner",
    "TuneError": "hpcrl.tune.runner",
    "ExperimentPreempted": "hpcrl.tune.runner",
    "ExperimentAnalysis": "hpcrl.tune.analysis",
    "grid_search": "hpcrl.tune.search",
    "choice": "hpcrl.tune.search",
    "uniform": "hpcrl.tune.search",
    "loguniform": "hpcrl.tune.search",
    "randint": "hpcrl.tune.search",
    "sample_from": "hpcrl.tune.search",
    "generate_variants": "hpcrl.tune.search",
    "report": "hpcrl.tune.session",
    "get_checkpoint": "hpcrl.tune.session",
    "save_checkpoint": "hpcrl.tune.session",
    "get_trial_id": "hpcrl.tune.session",
    "get_trial_dir": "hpcrl.tune.session",
    "Searcher": "hpcrl.tune.searcher",
    "BasicVariantGenerator": "hpcrl.tune.searcher",
    "TrialScheduler": "hpcrl.tune.schedulers",
    "FIFOScheduler": "hpcrl.tune.schedulers",
    "ASHAScheduler": "hpcrl.tune.schedulers",
    "PopulationBasedTraining": "hpcrl.tune.schedulers",
    "TrialExecutor": "hpcrl.tune.executor",
    "LocalExecutor": "hpcrl.tune.local_executor",
    "Trial": "hpcrl.tune.trial",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpcrl.tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
