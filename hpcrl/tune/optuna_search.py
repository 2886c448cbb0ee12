"""Model-based search with Optuna (the ``optuna`` extra): Optuna's samplers pick
each trial's values from the results of the trials before.

hpcrl writes no sampler of its own: ``OptunaSearch`` maps the config's search
spaces to Optuna distributions and drives an Optuna study through its
ask-and-tell interface. ``choice`` becomes a categorical, ``uniform`` and
``loguniform`` floats (``log=True``), ``randint`` an int in ``[low, high)``;
``grid_search`` belongs to the default searcher and ``sample_from`` is resolved
from the drawn values, as without Optuna. A trial's value is the last result's
``metric`` (``tune.run``'s ``metric`` and ``mode``); intermediate results are
reported to the study, so an Optuna pruner can be used through the trial's own
``should_prune`` if given one. On ``resume=True`` the finished trials are added
back to a new study, so the sampler continues from what it had seen.

Example:
    >>> from hpcrl.tune.search import uniform
    >>> search = OptunaSearch(seed=0)
    >>> search.set_search_properties("loss", "min", {"x": uniform(-1, 1)}, 2)
    >>> config = search.suggest("t0")
    >>> -1 <= config["x"] <= 1
    True
"""

from __future__ import annotations

import random
from typing import Any

from hpcrl.tune.search import (
    Choice,
    Domain,
    LogUniform,
    RandInt,
    SampleFrom,
    Uniform,
    find_spaces,
    resolve_domains,
    set_path,
)
from hpcrl.tune.searcher import FINISHED, Searcher


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ImportError(
            'OptunaSearch needs optuna: pip install "hpcrl[optuna]" (or pip install optuna)'
        ) from err
    return optuna


class OptunaSearch(Searcher):
    """A ``search_alg`` for ``tune.run`` backed by an Optuna study.

    Args:
        sampler: an Optuna sampler (default: ``optuna.samplers.TPESampler(seed=seed)``).
        seed: seed of the default sampler.
        metric, mode: override ``tune.run``'s.
    """

    def __init__(
        self,
        sampler: Any = None,
        seed: int | None = None,
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        self._optuna = require_optuna()
        self._sampler = sampler
        self._seed = seed
        self._own_metric, self._own_mode = metric, mode
        self._study: Any = None
        self._distributions: dict[str, Any] = {}
        self._paths: dict[str, tuple] = {}
        self._running: dict[str, Any] = {}
        self._told: list[dict[str, Any]] = []

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], num_samples: int
    ) -> None:
        super().set_search_properties(
            self._own_metric or metric, self._own_mode or mode, config, num_samples
        )
        if self.metric is None or self.mode not in ("min", "max"):
            raise ValueError(
                f"OptunaSearch needs a metric and mode 'min' or 'max' (got metric="
                f"{self.metric!r}, mode={self.mode!r}): pass them to tune.run or OptunaSearch"
            )
        self._distributions, self._paths = {}, {}
        for path, space in find_spaces(config):
            if isinstance(space, SampleFrom):
                continue
            name = "/".join(map(str, path))
            self._distributions[name] = self._distribution(name, space)
            self._paths[name] = path
        if not self._distributions:
            raise ValueError(
                "OptunaSearch found no search space in the config: use tune.choice, uniform, "
                "loguniform or randint"
            )
        optuna = self._optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = self._sampler or optuna.samplers.TPESampler(seed=self._seed)
        direction = "minimize" if self.mode == "min" else "maximize"
        self._study = optuna.create_study(direction=direction, sampler=sampler)
        for told in self._told:
            self._add_finished(told)

    def _distribution(self, name: str, space: Any) -> Any:
        dists = self._optuna.distributions
        if isinstance(space, Choice):
            return dists.CategoricalDistribution(list(space.categories))
        if isinstance(space, LogUniform):
            return dists.FloatDistribution(space.low, space.high, log=True)
        if isinstance(space, Uniform):
            return dists.FloatDistribution(space.low, space.high)
        if isinstance(space, RandInt):
            return dists.IntDistribution(space.low, space.high - 1)
        kind = "grid_search" if not isinstance(space, Domain) else type(space).__name__
        raise ValueError(
            f"OptunaSearch cannot search {kind} at {name!r}: use choice, uniform, loguniform "
            "or randint (grid_search needs the default searcher)"
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.suggested >= self.num_samples:
            return FINISHED
        trial = self._study.ask(self._distributions)
        config = self.config
        for name, value in trial.params.items():
            config = set_path(config, self._paths[name], value)
        # What is left is sample_from, resolved from the drawn values.
        config = resolve_domains(config, random.Random(trial.number))
        self._running[trial_id] = trial
        self.suggested += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self._running.get(trial_id)
        value = result.get(self.metric)
        step = result.get("training_iteration")
        if trial is not None and isinstance(value, (int, float)) and step is not None:
            trial.report(float(value), int(step))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None, error: bool = False
    ) -> None:
        trial = self._running.pop(trial_id, None)
        if trial is None:
            return
        value = None if result is None else result.get(self.metric)
        states = self._optuna.trial.TrialState
        if error or not isinstance(value, (int, float)):
            self._study.tell(trial, state=states.FAIL)
            return
        self._study.tell(trial, float(value))
        self._told.append({"params": dict(trial.params), "value": float(value)})

    def _add_finished(self, told: dict[str, Any]) -> None:
        self._study.add_trial(
            self._optuna.trial.create_trial(
                params=told["params"], distributions=self._distributions, value=told["value"]
            )
        )

    @property
    def best_config(self) -> dict[str, Any]:
        """The config of the best trial the study has seen."""
        config = self.config
        for name, value in self._study.best_params.items():
            config = set_path(config, self._paths[name], value)
        return config

    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "finished": list(self._told)}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self._told = list(state.get("finished", []))
        if self._study is not None:
            for told in self._told:
                self._add_finished(told)
