"""``tune.run`` and ``tune.run_experiments``: many trials, searched and scheduled,
each in a process of its own; results logged, state kept for resuming.

The runner is the only writer of an experiment's bookkeeping: each trial's
``params.json``, ``result.json``, ``progress.csv``, TensorBoard events and
``error.txt``, and the experiment's ``experiment_state.json``. Trial processes
write only their checkpoints (and ``output.log``). See ``hpcrl.tune.executor``
for how trials run and ``hpcrl.tune.trial_protocol`` for what they do.
"""

from __future__ import annotations

import datetime
import inspect
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpcrl.tune.analysis import ExperimentAnalysis
from hpcrl.tune.executor import TrialExecutor, make_executor
from hpcrl.tune.experiment_state import (
    EXPERIMENT_STATE,
    read_experiment_state,
    restore_objects,
    write_experiment_state,
)
from hpcrl.tune.function_checkpoint import checkpoint_iteration
from hpcrl.tune.logger import ResultLogger, flatten_result, write_json
from hpcrl.tune.preemption import PreemptionWatch
from hpcrl.tune.schedulers import Decision, FIFOScheduler, TrialScheduler
from hpcrl.tune.search import searched_values, variant_tag
from hpcrl.tune.searcher import FINISHED, BasicVariantGenerator, Searcher, check_searcher_config
from hpcrl.tune.stopping import (
    DEFAULT_STOP,
    StopCriterionError,
    check_stop_criteria,
    should_stop,
)
from hpcrl.tune.table import TrialTable
from hpcrl.tune.trial import ERROR, PAUSED, PENDING, RUNNING, TERMINATED, Trial
from hpcrl.tune.trial_files import DEFAULT_LOCAL_DIR, trial_prefix, truncate_results
from hpcrl.tune.trial_protocol import (
    CHECKPOINT,
    ENDED,
    RESULT,
    TrialDecision,
    TrialEvent,
    TrialSpec,
    is_function_trainable,
)

log = logging.getLogger("hpcrl.tune")

# Most seconds between writes of experiment_state.json while only results arrive.
STATE_INTERVAL_S = 2.0
# Keys of an experiment in run_experiments (and in a YAML file).
EXPERIMENT_KEYS = (
    "run",
    "env",
    "config",
    "stop",
    "num_samples",
    "checkpoint_freq",
    "checkpoint_at_end",
    "keep_checkpoints_num",
    "max_failures",
    "local_dir",
)


class TuneError(Exception):
    """Trials failed beyond their retries (``raise_on_failed_trial``)."""


class ExperimentPreempted(Exception):
    """SIGTERM or SIGUSR1 arrived: the running trials wrote checkpoints and the
    experiment state is saved; ``resume=True`` continues.

    Attributes:
        signal_name: "SIGTERM" or "SIGUSR1".
        experiment_dirs: the directories of the experiments.
    """

    def __init__(self, signal_name: str, experiment_dirs: list[str]) -> None:
        self.signal_name = signal_name
        self.experiment_dirs = experiment_dirs
        super().__init__(
            f"preempted by {signal_name}; the running trials wrote checkpoints; run again "
            f"with resume=True to continue {', '.join(experiment_dirs)}"
        )


@dataclass
class ExperimentSpec:
    """One experiment of a run: a trainable, its search space and its trial settings."""

    name: str
    trainable: Any
    trainable_name: str
    config: dict[str, Any]
    stop: dict[str, float]
    num_samples: int
    checkpoint_freq: int
    checkpoint_at_end: bool
    keep_checkpoints_num: int | None
    max_failures: int
    directory: str
    searcher: Searcher
    finished_suggesting: bool = False

    @property
    def trial_prefix(self) -> str:
        if is_function_trainable(self.trainable):
            return f"{self.trainable_name}_"
        return trial_prefix(self.trainable_name, self.config.get("env"))


def run(
    trainable: str | type | Callable[[dict[str, Any]], None],
    config: dict[str, Any] | None = None,
    stop: dict[str, float] | None = None,
    num_samples: int = 1,
    name: str | None = None,
    local_dir: str | None = None,
    checkpoint_freq: int = 0,
    checkpoint_at_end: bool = False,
    keep_checkpoints_num: int | None = None,
    resume: bool = False,
    verbose: int = 1,
    max_failures: int = 0,
    max_concurrent_trials: int | None = None,
    scheduler: TrialScheduler | None = None,
    search_alg: Searcher | None = None,
    metric: str | None = None,
    mode: str | None = None,
    resources_per_trial: dict[str, float] | None = None,
    trial_executor: str | TrialExecutor = "local",
    seed: int | None = None,
    raise_on_failed_trial: bool = True,
) -> ExperimentAnalysis:
    """Run trials of ``trainable`` over the search space in ``config``.

    Args:
        trainable: a Trainer class (``PPOTrainer``), an algorithm name (``"PPO"``), or
            a function ``f(config)`` that reports with ``tune.report(**metrics)``.
        config: the config, with search spaces anywhere (``hpcrl.tune.search``).
        stop: stop criteria: a trial stops when ``result[key] >= value`` for any.
            A Trainer trial with none stops at ``timesteps_total`` 1,000,000 (with a
            warning); a function trial runs until it returns.
        num_samples: repetitions of the grid (with a searcher: trials in all).
        name: the experiment's directory under ``local_dir`` (default
            ``<trainable>_<date>_<time>``; with ``resume``, the newest such).
        local_dir: default ``~/hpcrl_results``.
        checkpoint_freq: a Trainer trial checkpoints every N iterations (0: never).
        checkpoint_at_end: ... and when it stops.
        keep_checkpoints_num: keep the newest N checkpoints of each trial.
        resume: continue the experiment ``name``: finished trials stay as they
            are, the others continue from their newest checkpoints.
        verbose: 0 silent, 1 a table of trials, 2 also a line per result.
        max_failures: retries of a failed trial, each from its newest checkpoint.
        max_concurrent_trials: at most this many trials at once.
        scheduler: FIFO (default), ``ASHAScheduler``, ``PopulationBasedTraining``...
        search_alg: a ``Searcher`` (default: the variants of the search space).
        metric, mode: the metric to optimise and ``"max"`` or ``"min"``, for the
            scheduler, the searcher and the analysis.
        resources_per_trial: ``{"cpu": 1, "gpu": 0}`` by default: the local pool
            runs ``cores // cpu`` trials at once.
        trial_executor: ``"local"`` (a pool of processes here), or an executor.
        seed: seed of the search space's random draws.
        raise_on_failed_trial: raise ``TuneError`` if a trial failed for good.

    Returns:
        An ``ExperimentAnalysis`` of the trials.

    Raises:
        TuneError: trials failed beyond ``max_failures`` (the others ran on).
        ExperimentPreempted: SIGTERM or SIGUSR1 arrived; checkpoints are written.
    """
    if search_alg is None:
        search_alg = BasicVariantGenerator(seed)
    experiment = make_experiment(
        name=name,
        trainable=trainable,
        config=config or {},
        stop=stop,
        num_samples=num_samples,
        local_dir=local_dir,
        checkpoint_freq=checkpoint_freq,
        checkpoint_at_end=checkpoint_at_end,
        keep_checkpoints_num=keep_checkpoints_num,
        max_failures=max_failures,
        searcher=search_alg,
        resume=resume,
    )
    return run_specs(
        [experiment],
        resume=resume,
        verbose=verbose,
        max_concurrent_trials=max_concurrent_trials,
        scheduler=scheduler,
        metric=metric,
        mode=mode,
        resources_per_trial=resources_per_trial,
        trial_executor=trial_executor,
        raise_on_failed_trial=raise_on_failed_trial,
    )


def run_experiments(
    experiments: dict[str, dict[str, Any]],
    *,
    resume: bool = False,
    verbose: int = 1,
    max_concurrent_trials: int | None = None,
    scheduler: TrialScheduler | None = None,
    metric: str | None = None,
    mode: str | None = None,
    resources_per_trial: dict[str, float] | None = None,
    trial_executor: str | TrialExecutor = "local",
    seed: int | None = None,
    local_dir: str | None = None,
    raise_on_failed_trial: bool = True,
) -> ExperimentAnalysis:
    """Run several experiments as one: their trials share the executor's slots and
    the scheduler. ``experiments`` maps each name to RLlib's experiment settings
    (the format of ``hpcrl train -f`` files)::

        {"cartpole-ppo": {"run": "PPO", "env": "CartPole-v1",
                          "stop": {"timesteps_total": 100000},
                          "config": {"lr": tune.grid_search([1e-3, 1e-4])},
                          "num_samples": 2, "checkpoint_freq": 5}}

    Keys: ``run`` (required), ``env``, ``config``, ``stop``, ``num_samples``,
    ``checkpoint_freq``, ``checkpoint_at_end``, ``keep_checkpoints_num``,
    ``max_failures``, ``local_dir``; the other arguments are as for ``run``
    (``local_dir`` is the default of experiments that name none).
    """
    if not experiments:
        raise ValueError("run_experiments needs at least one experiment")
    specs = []
    for index, (name, settings) in enumerate(experiments.items()):
        unknown = sorted(set(settings) - set(EXPERIMENT_KEYS))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {unknown} in experiment {name!r}; expected some of "
                f"{list(EXPERIMENT_KEYS)}"
            )
        if "run" not in settings:
            raise ValueError(f"experiment {name!r} has no 'run' (e.g. run: PPO)")
        config = dict(settings.get("config") or {})
        if settings.get("env") is not None:
            config["env"] = settings["env"]
        specs.append(
            make_experiment(
                name=str(name),
                trainable=settings["run"],
                config=config,
                stop=settings.get("stop"),
                num_samples=settings.get("num_samples", 1),
                local_dir=settings.get("local_dir", local_dir),
                checkpoint_freq=settings.get("checkpoint_freq", 0),
                checkpoint_at_end=settings.get("checkpoint_at_end", False),
                keep_checkpoints_num=settings.get("keep_checkpoints_num"),
                max_failures=settings.get("max_failures", 0),
                searcher=BasicVariantGenerator(None if seed is None else seed + index),
                resume=resume,
            )
        )
    names = [spec.directory for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"two experiments share a directory: {sorted(names)}")
    return run_specs(
        specs,
        resume=resume,
        verbose=verbose,
        max_concurrent_trials=max_concurrent_trials,
        scheduler=scheduler,
        metric=metric,
        mode=mode,
        resources_per_trial=resources_per_trial,
        trial_executor=trial_executor,
        raise_on_failed_trial=raise_on_failed_trial,
    )


def make_experiment(
    *,
    name: str | None,
    trainable: Any,
    config: dict[str, Any],
    stop: dict[str, Any] | None,
    num_samples: int,
    local_dir: str | None,
    checkpoint_freq: int,
    checkpoint_at_end: bool,
    keep_checkpoints_num: int | None,
    max_failures: int,
    searcher: Searcher,
    resume: bool,
) -> ExperimentSpec:
    """An ``ExperimentSpec`` with every argument checked (errors name the fix)."""
    trainable_name = _trainable_name(trainable)
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    for key, value in (("checkpoint_freq", checkpoint_freq), ("max_failures", max_failures)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{key} must be an int >= 0, got {value!r}")
    if keep_checkpoints_num is not None and (
        isinstance(keep_checkpoints_num, bool)
        or not isinstance(keep_checkpoints_num, int)
        or keep_checkpoints_num < 1
    ):
        raise ValueError(
            f"keep_checkpoints_num must be an int >= 1 or None, got {keep_checkpoints_num!r}"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    check_searcher_config(searcher, config)
    if is_function_trainable(trainable):
        if checkpoint_freq or checkpoint_at_end:
            log.warning(
                "checkpoint_freq and checkpoint_at_end apply to Trainer trials; a function "
                "trial saves its checkpoints itself with tune.save_checkpoint(state)"
            )
        checked_stop = check_stop_criteria(stop or {})
    else:
        from hpcrl.algorithms.trainer import RESULT_KEYS

        if config.get("env") is None and not config.get("input"):
            raise ValueError(
                f"{trainable_name} trials need an env: put 'env' in the config (e.g. "
                "config={'env': 'CartPole-v1', ...})"
            )
        checked_stop = check_stop_criteria(stop or {}, RESULT_KEYS)
        if not checked_stop:
            log.warning(
                "no stop criteria given: each trial stops at timesteps_total %s (as `hpcrl "
                "train`); pass stop={...} to choose, e.g. {'episode_reward_mean': 195}",
                f"{DEFAULT_STOP['timesteps_total']:,}",
            )
            checked_stop = check_stop_criteria(DEFAULT_STOP)
    root = os.path.abspath(os.path.expanduser(local_dir or DEFAULT_LOCAL_DIR))
    name = name or _default_name(root, trainable_name, resume)
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"experiment name {name!r} must be a plain directory name")
    return ExperimentSpec(
        name=name,
        trainable=trainable,
        trainable_name=trainable_name,
        config=config,
        stop=checked_stop,
        num_samples=num_samples,
        checkpoint_freq=checkpoint_freq,
        checkpoint_at_end=checkpoint_at_end,
        keep_checkpoints_num=keep_checkpoints_num,
        max_failures=max_failures,
        directory=os.path.join(root, name),
        searcher=searcher,
    )


def run_specs(
    experiments: list[ExperimentSpec],
    *,
    resume: bool,
    verbose: int,
    max_concurrent_trials: int | None,
    scheduler: TrialScheduler | None,
    metric: str | None,
    mode: str | None,
    resources_per_trial: dict[str, float] | None,
    trial_executor: str | TrialExecutor,
    raise_on_failed_trial: bool,
) -> ExperimentAnalysis:
    """Run prepared experiments (``run`` and ``run_experiments`` end here)."""
    if mode not in (None, "min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    scheduler = scheduler or FIFOScheduler()
    scheduler.set_search_properties(metric, mode)
    for experiment in experiments:
        experiment.searcher.set_search_properties(
            metric, mode, experiment.config, experiment.num_samples
        )
    executor = make_executor(trial_executor, resources_per_trial, max_concurrent_trials)
    runner = TrialRunner(
        experiments, executor, scheduler, TrialTable(verbose, metric), metric, mode
    )
    try:
        runner.load(resume)
    except BaseException:
        executor.shutdown()  # nothing ran: the state on disk stays as it was
        raise
    try:
        runner.run()
    finally:
        runner.close()
    failed = [trial for trial in runner.trials if trial.status == ERROR]
    if failed and raise_on_failed_trial:
        listing = "; ".join(f"{t.trial_id} (see {t.error_file})" for t in failed)
        raise TuneError(f"{len(failed)} of {len(runner.trials)} trials failed: {listing}")
    return ExperimentAnalysis(runner.trials, metric, mode)


class TrialRunner:
    """The driver loop: starts trials as slots free up, answers each result (stop
    criteria, then the scheduler), logs it, retries failures, saves the state."""

    def __init__(
        self,
        experiments: list[ExperimentSpec],
        executor: TrialExecutor,
        scheduler: TrialScheduler,
        table: TrialTable,
        metric: str | None,
        mode: str | None,
    ) -> None:
        self.experiments = experiments
        self.executor = executor
        self.scheduler = scheduler
        self.table = table
        self.metric = metric
        self.mode = mode
        self.trials: list[Trial] = []
        self.next_index = 0
        self._by_id: dict[str, Trial] = {}
        self._experiment_of: dict[str, ExperimentSpec] = {}
        self._running: set[str] = set()
        # What a running trial does when it ends: a status, "PREEMPTED", or an EXPLOIT Decision.
        self._ending: dict[str, str | Decision] = {}
        self._loggers: dict[str, ResultLogger] = {}
        self._exploit_next: set[str] = set()
        self._preempted_by: str | None = None
        self._state_saved = 0.0
        self._state_dirty = False

    # -- state -----------------------------------------------------------
    def load(self, resume: bool) -> None:
        """Take up each experiment's saved state (``resume``), or check there is none."""
        for experiment in self.experiments:
            state = read_experiment_state(experiment.directory)
            if state is None:
                if resume:
                    log.info("no experiment to resume in %s: starting it", experiment.directory)
                continue
            if not resume:
                raise ValueError(
                    f"{os.path.join(experiment.directory, EXPERIMENT_STATE)} exists: pass "
                    "resume=True (hpcrl train --resume) to continue that experiment, or give "
                    "another name"
                )
            self._take_up(experiment, state)
        self._save_state(force=True)

    def _take_up(self, experiment: ExperimentSpec, state: dict[str, Any]) -> None:
        experiment.searcher.set_state(state.get("searcher") or {})
        experiment.finished_suggesting = bool(state.get("finished_suggesting"))
        self.next_index = max(self.next_index, int(state.get("next_trial_index", 0)))
        for data in state["trials"]:
            trial = Trial.from_json(data)
            trial.config = restore_objects(experiment.config, trial.config)
            trial.checkpoints = [c for c in trial.checkpoints if os.path.isdir(c["path"])]
            if not trial.is_finished:
                if trial.status == RUNNING:
                    trial.status = PENDING
                trial.restore_from = trial.latest_checkpoint
            self._add(experiment, trial)
        counts = {s: sum(t.status == s for t in self.trials) for s in (TERMINATED, ERROR)}
        log.info(
            "resuming %s: %d trials, %d finished, %d failed",
            experiment.directory,
            len(state["trials"]),
            counts[TERMINATED],
            counts[ERROR],
        )

    def _save_state(self, force: bool = False) -> None:
        self._state_dirty = True
        if not force and time.monotonic() - self._state_saved < STATE_INTERVAL_S:
            return
        for experiment in self.experiments:
            trials = [t for t in self.trials if t.experiment == experiment.name]
            write_experiment_state(
                experiment.directory,
                {
                    "name": experiment.name,
                    "trainable": experiment.trainable_name,
                    "metric": self.metric,
                    "mode": self.mode,
                    "stop": experiment.stop,
                    "num_samples": experiment.num_samples,
                    "next_trial_index": self.next_index,
                    "searcher": experiment.searcher.get_state(),
                    "finished_suggesting": experiment.finished_suggesting,
                    "trials": [trial.to_json() for trial in trials],
                },
            )
        self._state_saved = time.monotonic()
        self._state_dirty = False

    # -- the loop ----------------------------------------------------------
    def run(self) -> None:
        with PreemptionWatch() as watch:
            while True:
                if watch.signal_name and self._preempted_by is None:
                    self._preempted_by = watch.signal_name
                    log.warning(
                        "%s: the running trials finish their iteration, write a checkpoint "
                        "and stop; resume=True continues",
                        watch.signal_name,
                    )
                if self._preempted_by is None:
                    self._fill_slots()
                if not self._running:
                    break
                for event in self.executor.events(timeout=0.5):
                    self._handle(event)
                self.table.update(self.trials, self._header())
                if self._state_dirty:
                    self._save_state()
        waiting = [t for t in self.trials if t.status in (PENDING, PAUSED)]
        if self._preempted_by is not None:
            self._save_state(force=True)
            raise ExperimentPreempted(self._preempted_by, [e.directory for e in self.experiments])
        if waiting:
            log.warning("%d trials were not run: the scheduler chose none of them", len(waiting))

    def close(self) -> None:
        """Kill what still runs (after an error or Ctrl-C), save the state, show the table."""
        try:
            for trial_id in list(self._running):
                self.executor.kill(trial_id)
            self.executor.shutdown()
        finally:
            for logger in self._loggers.values():
                logger.close()
            self._loggers.clear()
            self._save_state(force=True)
            self.table.close(self.trials, self._header())

    def _fill_slots(self) -> None:
        while len(self._running) < self.executor.slots:
            waiting = [t for t in self.trials if t.status in (PENDING, PAUSED)]
            trial = self.scheduler.choose_trial_to_run(waiting)
            if trial is None:
                trial = self._suggest_trial()
                if trial is None:
                    return
            self._start(trial)

    def _suggest_trial(self) -> Trial | None:
        for experiment in self.experiments:
            if experiment.finished_suggesting:
                continue
            trial_id = f"{experiment.trial_prefix}{self.next_index:05d}"
            config = experiment.searcher.suggest(trial_id)
            if config == FINISHED:
                experiment.finished_suggesting = True
                self._save_state(force=True)
                continue
            if config is None:
                continue
            index = self.next_index
            self.next_index += 1
            tag = variant_tag(index, experiment.config, config)
            suffix = tag.partition("_")[2]
            directory = re.sub(r"[^A-Za-z0-9_.,=+-]", "_", f"{trial_id}_{suffix}".rstrip("_"))
            trial = Trial(
                trial_id=trial_id,
                experiment=experiment.name,
                config=config,
                tag=tag,
                logdir=os.path.join(experiment.directory, directory[:120]),
                parameters=searched_values(experiment.config, config),
            )
            self._add(experiment, trial)
            return trial
        return None

    def _add(self, experiment: ExperimentSpec, trial: Trial) -> None:
        self.trials.append(trial)
        self._by_id[trial.trial_id] = trial
        self._experiment_of[trial.trial_id] = experiment
        self.scheduler.on_trial_add(trial)

    def _start(self, trial: Trial) -> None:
        experiment = self._experiment_of[trial.trial_id]
        os.makedirs(trial.logdir, exist_ok=True)
        write_json(os.path.join(trial.logdir, "params.json"), trial.config)
        exploit = trial.trial_id in self._exploit_next
        self._exploit_next.discard(trial.trial_id)
        if not exploit:  # results after the checkpoint are produced again
            restored = checkpoint_iteration(trial.restore_from) if trial.restore_from else 0
            truncate_results(trial.logdir, restored)
        self._loggers[trial.trial_id] = ResultLogger(trial.logdir)
        spec = TrialSpec(
            trial_id=trial.trial_id,
            trainable=experiment.trainable,
            config=trial.config,
            logdir=trial.logdir,
            restore_from=trial.restore_from,
            keep_checkpoints_num=experiment.keep_checkpoints_num,
            config_after_restore=exploit,
        )
        self.executor.start(spec)
        self._running.add(trial.trial_id)
        self._set_status(trial, RUNNING)

    def _set_status(self, trial: Trial, status: str) -> None:
        trial.status = status
        self.table.trial_changed(trial)
        self._save_state(force=True)

    # -- events ------------------------------------------------------------
    def _handle(self, event: TrialEvent) -> None:
        trial = self._by_id[event.trial_id]
        if event.kind == RESULT:
            self._on_result(trial, event.data)
        elif event.kind == CHECKPOINT:
            self._on_checkpoint(trial, event.data)
        elif event.kind == ENDED:
            self._on_ended(trial, event.data)
        else:
            raise ValueError(f"unknown trial event {event.kind!r} from {event.trial_id}")

    def _on_result(self, trial: Trial, result: dict[str, Any]) -> None:
        experiment = self._experiment_of[trial.trial_id]
        result = {**result, "trial_id": trial.trial_id, "experiment_tag": trial.tag}
        try:
            reached = should_stop(result, experiment.stop)
        except StopCriterionError as err:
            raise ValueError(f"experiment {experiment.name!r}: {err}") from None
        if reached is not None:
            result["stopped_by"] = reached
        trial.last_result = result
        self._loggers[trial.trial_id].log(result)
        self.table.result(trial, result)
        experiment.searcher.on_trial_result(trial.trial_id, result)
        decision = Decision("STOP") if reached else self.scheduler.on_trial_result(trial, result)
        iteration = int(result.get("training_iteration", 0))
        freq = experiment.checkpoint_freq
        save = decision.save_checkpoint or bool(freq and iteration % freq == 0)
        stop = decision.action != "CONTINUE"
        if decision.action == "STOP":
            save = save or experiment.checkpoint_at_end
            self._ending[trial.trial_id] = TERMINATED
        elif decision.action == "PAUSE":
            save = True
            self._ending[trial.trial_id] = PAUSED
        elif decision.action == "EXPLOIT":
            self._ending[trial.trial_id] = decision
        elif decision.action != "CONTINUE":
            raise ValueError(f"unknown scheduler decision {decision.action!r}")
        if self._preempted_by is not None and not stop:
            stop = save = True
            self._ending[trial.trial_id] = "PREEMPTED"
        self.executor.decide(trial.trial_id, TrialDecision(stop=stop, save=save))
        self._save_state()

    def _on_checkpoint(self, trial: Trial, data: dict[str, Any]) -> None:
        kept = [c for c in trial.checkpoints if c["path"] != data["path"]]
        kept.append({"path": data["path"], "iteration": int(data["iteration"])})
        trial.checkpoints = [c for c in kept if os.path.isdir(c["path"])]
        keep = self._experiment_of[trial.trial_id].keep_checkpoints_num
        if keep is not None:
            trial.checkpoints = trial.checkpoints[-keep:]
        self._save_state(force=True)

    def _on_ended(self, trial: Trial, data: dict[str, Any]) -> None:
        experiment = self._experiment_of[trial.trial_id]
        self._running.discard(trial.trial_id)
        logger = self._loggers.pop(trial.trial_id, None)
        if logger is not None:
            logger.close()
        ending = self._ending.pop(trial.trial_id, None)
        if data.get("error"):
            self._record_error(trial, data["error"])
            if trial.num_failures <= experiment.max_failures:
                trial.restore_from = trial.latest_checkpoint
                log.warning(
                    "trial %s failed (failure %d of at most %d), retrying from %s",
                    trial.trial_id,
                    trial.num_failures,
                    experiment.max_failures,
                    trial.restore_from or "the start",
                )
                self._set_status(trial, PENDING)
            else:
                self._set_status(trial, ERROR)
                self.scheduler.on_trial_error(trial)
                experiment.searcher.on_trial_complete(
                    trial.trial_id, trial.last_result or None, error=True
                )
        elif data.get("preempted") or ending == "PREEMPTED":
            trial.restore_from = trial.latest_checkpoint
            self._set_status(trial, PENDING)
        elif isinstance(ending, Decision):
            self._exploit(trial, ending)
        elif ending == PAUSED:
            trial.restore_from = trial.latest_checkpoint
            self._set_status(trial, PAUSED)
        else:
            self._set_status(trial, TERMINATED)
            self.scheduler.on_trial_complete(trial, trial.last_result)
            experiment.searcher.on_trial_complete(trial.trial_id, trial.last_result or None)

    def _record_error(self, trial: Trial, error: str) -> None:
        trial.num_failures += 1
        trial.error_file = os.path.join(trial.logdir, "error.txt")
        os.makedirs(trial.logdir, exist_ok=True)
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        iteration = trial.last_result.get("training_iteration", 0)
        with open(trial.error_file, "a") as f:
            f.write(f"Failure {trial.num_failures} at {stamp}, after iteration {iteration}:\n")
            f.write(error.rstrip() + "\n\n")
        last_line = error.strip().splitlines()[-1] if error.strip() else error
        log.warning(
            "trial %s failed: %s (traceback in %s)", trial.trial_id, last_line, trial.error_file
        )

    def _exploit(self, trial: Trial, decision: Decision) -> None:
        """Population-based training: continue ``trial`` from a copy of the donor's
        checkpoint, with the new config; its own checkpoints go."""
        source = decision.checkpoint
        name = os.path.basename(os.path.normpath(source))
        staging = os.path.join(trial.logdir, f".exploit-{name}")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(source, staging)
        except OSError as err:
            log.warning(
                "trial %s could not copy %s (%s): it continues", trial.trial_id, source, err
            )
            trial.restore_from = trial.latest_checkpoint
            self._set_status(trial, PENDING)
            return
        for checkpoint in trial.checkpoints:
            shutil.rmtree(checkpoint["path"], ignore_errors=True)
        target = os.path.join(trial.logdir, name)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        old, new = flatten_result(trial.config), flatten_result(decision.config)
        changes = {key: value for key, value in new.items() if old.get(key) != value}
        trial.exploits.append(
            {
                "iteration": trial.last_result.get("training_iteration"),
                "donor": decision.donor,
                "checkpoint": source,
                "config": changes,
            }
        )
        experiment = self._experiment_of[trial.trial_id]
        trial.config = decision.config
        trial.parameters = {**searched_values(experiment.config, trial.config), **changes}
        trial.checkpoints = [{"path": target, "iteration": checkpoint_iteration(target)}]
        trial.restore_from = target
        self._exploit_next.add(trial.trial_id)
        log.info("trial %s continues from %s with %s", trial.trial_id, source, changes)
        self._set_status(trial, PENDING)

    def _header(self) -> str:
        counts = {status: 0 for status in (RUNNING, PENDING, PAUSED, TERMINATED, ERROR)}
        for trial in self.trials:
            counts[trial.status] += 1
        text = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        where = ", ".join(e.directory for e in self.experiments)
        return (
            f"{text or 'no trials'} | {type(self.scheduler).__name__} | "
            f"{self.executor.describe()} | {where}"
        )


def _trainable_name(trainable: Any) -> str:
    if isinstance(trainable, str):
        from hpcrl.algorithms.config import unknown_key_message
        from hpcrl.algorithms.registry import ALGORITHMS

        if trainable not in ALGORITHMS:
            raise ValueError(unknown_key_message("algorithm", trainable, ALGORITHMS))
        return trainable
    if inspect.isclass(trainable):
        from hpcrl.algorithms.trainer import Trainer

        if not issubclass(trainable, Trainer):
            raise TypeError(
                f"trainable {trainable.__name__} is a class but not a Trainer: give a Trainer "
                "class (PPOTrainer), an algorithm name ('PPO') or a function f(config)"
            )
        return getattr(trainable, "_name", trainable.__name__)
    if callable(trainable):
        function = getattr(trainable, "func", trainable)  # functools.partial
        return getattr(function, "__name__", type(trainable).__name__)
    raise TypeError(
        f"trainable must be a Trainer class, an algorithm name or a function, got {trainable!r}"
    )


def _default_name(root: str, trainable_name: str, resume: bool) -> str:
    """``<trainable>_<date>_<time>``, or (resuming) the newest such experiment in ``root``."""
    if resume and os.path.isdir(root):
        found = [
            entry
            for entry in os.listdir(root)
            if entry.startswith(f"{trainable_name}_")
            and os.path.isfile(os.path.join(root, entry, EXPERIMENT_STATE))
        ]
        if found:
            return max(
                found, key=lambda e: os.path.getmtime(os.path.join(root, e, EXPERIMENT_STATE))
            )
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return f"{trainable_name}_{stamp}"
