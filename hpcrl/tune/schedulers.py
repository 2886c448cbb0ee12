"""Trial schedulers: after each result, continue, stop, pause, or (population-based
training) restart a trial from a better trial's checkpoint with a perturbed config.

Schedulers are pure decision classes: they see trial records (``Trial``) and
results and return a ``Decision``; the runner carries it out. They are tested
without processes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpcrl.tune.search import Domain
from hpcrl.tune.trial import PAUSED, PENDING, Trial


@dataclass(frozen=True)
class Decision:
    """What a trial does after a result.

    Attributes:
        action: ``"CONTINUE"``, ``"STOP"`` (the trial is done), ``"PAUSE"`` (checkpoint
            and stop; the scheduler starts it again later) or ``"EXPLOIT"`` (restart
            from ``checkpoint``, another trial's, with ``config``).
        save_checkpoint: write a checkpoint after this result (a Trainer trial
            does; a function trial saves only when it calls ``tune.save_checkpoint``).
        donor: EXPLOIT: the trial whose checkpoint is copied.
        checkpoint: EXPLOIT: that checkpoint.
        config: EXPLOIT: the trial's new config.
    """

    action: str
    save_checkpoint: bool = False
    donor: str | None = None
    checkpoint: str | None = None
    config: dict[str, Any] | None = field(default=None, compare=False)


CONTINUE = Decision("CONTINUE")
STOP = Decision("STOP")
PAUSE = Decision("PAUSE")


def check_mode(mode: str | None, where: str) -> None:
    if mode not in (None, "min", "max"):
        raise ValueError(f"{where}: mode must be 'min' or 'max', got {mode!r}")


def result_value(result: Mapping[str, Any], key: str, where: str) -> float:
    """``result[key]`` as a float; a missing key is an error naming the keys there."""
    if key not in result:
        numeric = sorted(k for k, v in result.items() if isinstance(v, (int, float)))
        raise ValueError(
            f"{where} needs {key!r} in every result, but a result has only {numeric}: report "
            f"it (tune.report({key}=...)) or choose another metric/time_attr"
        )
    return float(result[key])


class TrialScheduler:
    """Base class: every trial runs to its end, pending trials start in order (FIFO).

    The runner calls ``set_search_properties`` once, ``on_trial_add`` for each new
    trial, ``on_trial_result`` for every result (its ``Decision`` is carried out),
    ``on_trial_complete`` or ``on_trial_error`` when a trial ends, and
    ``choose_trial_to_run`` whenever a slot is free.
    """

    metric: str | None = None
    mode: str | None = None
    needs_metric = False

    def set_search_properties(self, metric: str | None, mode: str | None) -> None:
        """Take ``tune.run``'s metric and mode where the scheduler was given none."""
        self.metric = self.metric or metric
        self.mode = self.mode or mode
        if self.needs_metric and (self.metric is None or self.mode is None):
            raise ValueError(
                f"{type(self).__name__} needs a metric and a mode: give metric='...' and "
                "mode='max' or 'min' to the scheduler or to tune.run"
            )
        check_mode(self.mode, type(self).__name__)

    def on_trial_add(self, trial: Trial) -> None:
        """A new trial."""

    def on_trial_result(self, trial: Trial, result: dict[str, Any]) -> Decision:
        return CONTINUE

    def on_trial_complete(self, trial: Trial, result: dict[str, Any]) -> None:
        """The trial finished (stop criterion, STOP decision, or the function returned)."""

    def on_trial_error(self, trial: Trial) -> None:
        """The trial failed beyond its retries."""

    def choose_trial_to_run(self, trials: Sequence[Trial]) -> Trial | None:
        """The trial to start next: the first pending one, else the first paused one."""
        for status in (PENDING, PAUSED):
            for trial in trials:
                if trial.status == status:
                    return trial
        return None

    def _score(self, result: Mapping[str, Any]) -> float:
        """The metric, negated when minimising: higher is better."""
        value = result_value(result, self.metric, type(self).__name__)
        return -value if self.mode == "min" else value


class FIFOScheduler(TrialScheduler):
    """Every trial runs until its stop criteria; trials start in the order made."""


class _Bracket:
    """One bracket of asynchronous successive halving: rungs at
    ``grace_period * reduction_factor**(k + s)`` up to ``max_t``."""

    def __init__(self, grace_period: float, max_t: float, reduction_factor: float, s: int):
        self.reduction_factor = reduction_factor
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) - s + 1)
        milestones = [grace_period * reduction_factor ** (k + s) for k in range(max(count, 0))]
        # Highest rung first: a result is recorded in the highest rung it reached.
        self.rungs: list[tuple[float, dict[str, float]]] = [(m, {}) for m in reversed(milestones)]

    def on_result(self, trial_id: str, time: float, score: float) -> bool:
        """Record the score at the highest new rung reached; False: stop the trial
        (its score is below the top ``1 / reduction_factor`` recorded there before)."""
        for milestone, recorded in self.rungs:
            if time < milestone or trial_id in recorded:
                continue
            cutoff = self.cutoff(recorded)
            recorded[trial_id] = score
            return cutoff is None or score >= cutoff
        return True

    def cutoff(self, recorded: dict[str, float]) -> float | None:
        """The score at the ``1 - 1/reduction_factor`` quantile (linear interpolation)."""
        if not recorded:
            return None
        values = sorted(recorded.values())
        position = (len(values) - 1) * (1 - 1 / self.reduction_factor)
        low = math.floor(position)
        high = min(low + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (position - low)


class ASHAScheduler(TrialScheduler):
    """Asynchronous successive halving (Li et al. 2018, arXiv:1810.05934).

    At each rung (``grace_period``, ``grace_period * reduction_factor``, ... up to
    ``max_t`` of ``time_attr``) a trial continues only if its metric is in the top
    ``1 / reduction_factor`` of the trials that reached that rung before it;
    every trial stops at ``max_t``. With ``brackets > 1`` trials are dealt to
    brackets in turn, bracket ``s`` starting its rungs at
    ``grace_period * reduction_factor**s``.

    Example:
        >>> asha = ASHAScheduler(metric="score", mode="max", max_t=9, grace_period=1,
        ...                      reduction_factor=3)
        >>> asha.set_search_properties(None, None)
        >>> trials = [Trial(f"t{i}", "exp", {}, "", "") for i in range(3)]
        >>> for t in trials:
        ...     asha.on_trial_add(t)
        >>> [asha.on_trial_result(t, {"training_iteration": 1, "score": s}).action
        ...  for t, s in zip(trials, [5, 9, 1])]
        ['CONTINUE', 'CONTINUE', 'STOP']
    """

    needs_metric = True

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 4,
        brackets: int = 1,
    ) -> None:
        check_mode(mode, "ASHAScheduler")
        if not 0 < grace_period <= max_t:
            raise ValueError(
                f"ASHAScheduler needs 0 < grace_period <= max_t, got {grace_period}, {max_t}"
            )
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, got {reduction_factor}")
        if brackets < 1:
            raise ValueError(f"brackets must be >= 1, got {brackets}")
        self.time_attr = time_attr
        self.metric = metric
        self.mode = mode
        self.max_t = max_t
        self.brackets = [
            _Bracket(grace_period, max_t, reduction_factor, s) for s in range(brackets)
        ]
        self._bracket_of: dict[str, _Bracket] = {}

    def on_trial_add(self, trial: Trial) -> None:
        bracket = self.brackets[len(self._bracket_of) % len(self.brackets)]
        self._bracket_of.setdefault(trial.trial_id, bracket)

    def on_trial_result(self, trial: Trial, result: dict[str, Any]) -> Decision:
        time = result_value(result, self.time_attr, "ASHAScheduler")
        if time >= self.max_t:
            return STOP
        bracket = self._bracket_of.setdefault(trial.trial_id, self.brackets[0])
        keep = bracket.on_result(trial.trial_id, time, self._score(result))
        return CONTINUE if keep else STOP


# A hyperparameter's mutation: values to pick from, a domain, a function that
# draws a value, or (nested configs) a dict of these.
Mutation = Sequence[Any] | Domain | Callable[[], Any] | Mapping[str, Any]


class PopulationBasedTraining(TrialScheduler):
    """Population-based training (Jaderberg et al. 2017, arXiv:1711.09846).

    Every ``perturbation_interval`` of ``time_attr``, a trial in the top
    ``quantile_fraction`` of the population (by its latest metric) writes a
    checkpoint; a trial in the bottom ``quantile_fraction`` restarts from the
    newest checkpoint of a random top trial (exploit) with that trial's config
    perturbed (explore): each key of ``hyperparam_mutations`` is resampled with
    ``resample_probability`` (or when its value is not among a list's values),
    else a list value moves to a neighbouring entry and a number is multiplied
    by 0.8 or 1.2. A function trial must save checkpoints itself
    (``tune.save_checkpoint``) to be a donor.

    Args:
        hyperparam_mutations: config key -> a list of values, a domain
            (``tune.uniform(...)``), a function drawing a value, or a dict of these
            for a nested config.
        custom_explore_fn: ``config -> config`` applied after the perturbation.
        seed: seed of the scheduler's random choices.
    """

    needs_metric = True

    def __init__(
        self,
        time_attr: str = "training_iteration",
        metric: str | None = None,
        mode: str | None = None,
        perturbation_interval: float = 10,
        hyperparam_mutations: Mapping[str, Mutation] | None = None,
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        custom_explore_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        check_mode(mode, "PopulationBasedTraining")
        if not hyperparam_mutations and custom_explore_fn is None:
            raise ValueError(
                "PopulationBasedTraining needs hyperparam_mutations (e.g. {'lr': [1e-3, 1e-4]}) "
                "or a custom_explore_fn"
            )
        if not 0 < quantile_fraction <= 0.5:
            raise ValueError(f"quantile_fraction must be in (0, 0.5], got {quantile_fraction}")
        if perturbation_interval <= 0:
            raise ValueError(f"perturbation_interval must be > 0, got {perturbation_interval}")
        self.time_attr = time_attr
        self.metric = metric
        self.mode = mode
        self.perturbation_interval = perturbation_interval
        self.hyperparam_mutations = dict(hyperparam_mutations or {})
        self.quantile_fraction = quantile_fraction
        self.resample_probability = resample_probability
        self.custom_explore_fn = custom_explore_fn
        self.rng = random.Random(seed)
        self._population: dict[str, Trial] = {}
        self._score_of: dict[str, float] = {}
        self._last_perturbation: dict[str, float] = {}

    def on_trial_add(self, trial: Trial) -> None:
        self._population[trial.trial_id] = trial
        self._last_perturbation.setdefault(trial.trial_id, 0.0)

    def on_trial_result(self, trial: Trial, result: dict[str, Any]) -> Decision:
        time = result_value(result, self.time_attr, "PopulationBasedTraining")
        self._population.setdefault(trial.trial_id, trial)
        self._score_of[trial.trial_id] = self._score(result)
        if time - self._last_perturbation.get(trial.trial_id, 0.0) < self.perturbation_interval:
            return CONTINUE
        self._last_perturbation[trial.trial_id] = time
        lower, upper = self.quantiles()
        if trial.trial_id in upper:
            return Decision("CONTINUE", save_checkpoint=True)
        if trial.trial_id not in lower:
            return CONTINUE
        donors = [self._population[i] for i in upper if self._population[i].latest_checkpoint]
        if not donors:
            return CONTINUE
        donor = self.rng.choice(donors)
        return Decision(
            "EXPLOIT",
            donor=donor.trial_id,
            checkpoint=donor.latest_checkpoint,
            config=self.explore(donor.config),
        )

    def on_trial_complete(self, trial: Trial, result: dict[str, Any]) -> None:
        self._forget(trial.trial_id)

    def on_trial_error(self, trial: Trial) -> None:
        self._forget(trial.trial_id)

    def choose_trial_to_run(self, trials: Sequence[Trial]) -> Trial | None:
        """The waiting trial least far in ``time_attr``, so the population keeps together."""
        waiting = [t for t in trials if t.status in (PENDING, PAUSED)]
        if not waiting:
            return None
        return min(waiting, key=lambda t: t.last_result.get(self.time_attr, 0))

    def quantiles(self) -> tuple[list[str], list[str]]:
        """Trial ids of the bottom and the top ``quantile_fraction`` by latest score
        (empty while fewer than two trials have one)."""
        ranked = sorted(self._score_of, key=self._score_of.__getitem__)
        if len(ranked) < 2:
            return [], []
        size = min(math.ceil(len(ranked) * self.quantile_fraction), len(ranked) // 2)
        return ranked[:size], ranked[-size:]

    def explore(self, config: dict[str, Any]) -> dict[str, Any]:
        """A perturbed copy of ``config`` (see the class docstring)."""
        new = _perturb(
            config, self.hyperparam_mutations, self.resample_probability, self.rng, path=""
        )
        return self.custom_explore_fn(new) if self.custom_explore_fn is not None else new

    def _forget(self, trial_id: str) -> None:
        self._population.pop(trial_id, None)
        self._score_of.pop(trial_id, None)


def _perturb(
    config: dict[str, Any],
    mutations: Mapping[str, Mutation],
    resample_probability: float,
    rng: random.Random,
    path: str,
) -> dict[str, Any]:
    new = dict(config)
    for key, mutation in mutations.items():
        where = f"{path}{key}"
        value = config.get(key)
        if isinstance(mutation, Mapping):
            new[key] = _perturb(value or {}, mutation, resample_probability, rng, where + "/")
        elif isinstance(mutation, Domain):
            resample = key not in config or rng.random() < resample_probability
            new[key] = mutation.sample(rng) if resample else mutation.perturb(value, rng)
        elif isinstance(mutation, Sequence) and not isinstance(mutation, str):
            values = list(mutation)
            if not values:
                raise ValueError(f"hyperparam_mutations[{where!r}] is an empty list")
            if value not in values or rng.random() < resample_probability:
                new[key] = rng.choice(values)
            else:
                index = min(max(values.index(value) + rng.choice((-1, 1)), 0), len(values) - 1)
                new[key] = values[index]
        elif callable(mutation):
            if key not in config or rng.random() < resample_probability:
                new[key] = mutation()
            else:
                factor = rng.choice((0.8, 1.2))
                new[key] = int(value * factor) if isinstance(value, int) else value * factor
        else:
            raise TypeError(
                f"hyperparam_mutations[{where!r}] must be a list, a domain (tune.uniform...), "
                f"a function or a dict, got {mutation!r}"
            )
    return new
