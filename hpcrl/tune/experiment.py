"""Running one trial: a trainer, its stop criteria, results on disk, status shown."""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Callable
from typing import Any, TextIO

from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.algorithms.trainer import RESULT_KEYS
from hpcrl.tune.logger import ResultLogger, write_json
from hpcrl.tune.preemption import PreemptionWatch, TrialPreempted
from hpcrl.tune.progress import StatusReporter
from hpcrl.tune.stopping import (
    EVALUATION_PREFIX,
    StopCriterionError,
    check_stop_criteria,
    should_stop,
)
from hpcrl.tune.trial_files import (
    DEFAULT_LOCAL_DIR,
    config_changes,
    find_trial,
    kept_results,
    read_trial_state,
    trial_prefix,
    truncate_results,
    write_trial_state,
)

__all__ = ["DEFAULT_LOCAL_DIR", "Experiment", "StopCriterionError", "should_stop", "trial_prefix"]


def _stamp() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


class Experiment:
    """One trial: a trainer trained until a stop criterion, with results on disk.

    Creating it checks everything the user gave (algorithm, config, env, stop
    criteria) and builds the trainer, so bad input fails before any training.
    ``run()`` trains, writing ``params.json``, ``result.json``,
    ``progress.csv``, TensorBoard events, ``trial_state.json`` and
    checkpoints (``checkpoint_NNNNNN/``) under ``local_dir/name/<trial>/``
    (``<trial>`` is ``trial_name``, by default ``<run>_<env>_<time>``).

    Checkpoints are written every ``checkpoint_freq`` iterations, at the end
    with ``checkpoint_at_end``, and on SIGTERM/SIGUSR1, after which ``run()``
    raises ``TrialPreempted`` (see ``hpcrl.tune.preemption``). With
    ``resume``, the trial ``trial_name`` (by default the newest trial of
    ``run`` on the same env) in ``local_dir/name`` continues from its newest
    complete checkpoint (from the start if it has none; a new trial starts
    if there is none); results logged after that checkpoint are dropped, so
    no iteration is counted twice. A trial that already finished is not
    trained again: ``finished`` then holds its final record and ``run()``
    returns its last result.

    Example:
        >>> exp = Experiment("PG", {"env": "CartPole-v1"}, {"timesteps_total": 400},
        ...                  local_dir="/tmp/hpcrl_doc", verbose=0)
        >>> exp.run()["timesteps_total"] >= 400
        True
    """

    def __init__(
        self,
        run: str,
        config: dict[str, Any],
        stop: dict[str, Any],
        *,
        name: str = "default",
        local_dir: str = DEFAULT_LOCAL_DIR,
        verbose: int = 1,
        stream: TextIO | None = None,
        status_prefix: str | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        trial_name: str | None = None,
        checkpoint_freq: int = 0,
        checkpoint_at_end: bool = False,
        resume: bool = False,
    ) -> None:
        trainer_class = get_trainer_class(run)
        self.stop = check_stop_criteria(stop, RESULT_KEYS)
        if not self.stop:
            raise ValueError("no stop criteria: give at least one, e.g. {'timesteps_total': 1e5}")
        if isinstance(checkpoint_freq, bool) or not isinstance(checkpoint_freq, int):
            raise ValueError(f"checkpoint_freq must be an int, got {checkpoint_freq!r}")
        if checkpoint_freq < 0:
            raise ValueError(f"checkpoint_freq must be >= 0 (0: never), got {checkpoint_freq}")
        self.checkpoint_freq = checkpoint_freq
        self.checkpoint_at_end = checkpoint_at_end
        self.verbose = verbose
        self.stream = stream
        self.status_prefix = status_prefix
        self.on_result = on_result
        self.trial_dir = _trial_dir(
            os.path.join(os.path.expanduser(local_dir), name),
            trial_name,
            trial_prefix(run, config.get("env")),
            resume,
        )
        self.resumed = resume and os.path.isdir(self.trial_dir)
        self.resumed_from: str | None = None
        self.finished: dict[str, Any] | None = None
        state = read_trial_state(self.trial_dir) if self.resumed else {}
        if state.get("status") == "finished":
            self.finished = state
            self.trainer = None
            return
        if self.resumed:  # a damaged newest checkpoint is an error before any worker starts
            from hpcrl.io.checkpoint import latest_checkpoint

            self.resumed_from = latest_checkpoint(self.trial_dir)
        self.trainer = trainer_class(config)
        self.trainer.logdir = self.trial_dir
        evaluated = [key for key in self.stop if key.startswith(EVALUATION_PREFIX)]
        if evaluated and not self.trainer.config["evaluation_interval"]:
            self.trainer.stop()
            raise ValueError(
                f"stop key {evaluated[0]!r} needs evaluation results: set config "
                "'evaluation_interval' (e.g. 1: evaluate after every iteration)"
            )
        if self.resumed:
            changed = config_changes(self.trial_dir, self.trainer.config)
            if changed:
                warnings.warn(
                    f"resuming {self.trial_dir} with a config that differs from its "
                    f"params.json in {changed}; the new values apply from here on",
                    stacklevel=2,
                )
            try:
                if self.resumed_from is not None:
                    self.trainer.restore(self.resumed_from)
                kept_results(self.trial_dir, self.trainer.iteration)  # raises for damaged lines
            except BaseException:
                self.trainer.stop()
                raise

    def run(self) -> dict[str, Any]:
        """Train until a stop criterion is reached; returns the last result
        (with ``stopped_by`` naming the criterion). Stops the trainer at the end.

        Raises:
            TrialPreempted: SIGTERM or SIGUSR1 arrived; the checkpoint is written.
        """
        if self.finished is not None:
            return dict(self.finished["last_result"])
        os.makedirs(self.trial_dir, exist_ok=True)
        write_json(os.path.join(self.trial_dir, "params.json"), self.trainer.config)
        if self.resumed:
            truncate_results(self.trial_dir, self.trainer.iteration)
        write_trial_state(self.trial_dir, "running", self.resumed_from)
        logger = ResultLogger(self.trial_dir)
        reporter = (
            StatusReporter(self.stop, stream=self.stream, prefix=self.status_prefix)
            if self.verbose
            else None
        )
        try:
            with PreemptionWatch() as watch:
                return self._train(logger, reporter, watch)
        finally:
            if reporter is not None:
                reporter.close()
            logger.close()
            self.trainer.stop()

    def _train(
        self, logger: ResultLogger, reporter: StatusReporter | None, watch: PreemptionWatch
    ) -> dict[str, Any]:
        checkpoint = self.resumed_from
        while True:
            result = self.trainer.train()
            logger.log(result)
            if reporter is not None:
                reporter.report(result)
            if self.on_result is not None:
                self.on_result(result)
            iteration = self.trainer.iteration
            reached = should_stop(result, self.stop)
            due = self.checkpoint_freq and iteration % self.checkpoint_freq == 0
            if due or (reached is not None and self.checkpoint_at_end) or watch.signal_name:
                checkpoint = self.trainer.save()
            if reached is not None:
                result["stopped_by"] = reached
                write_trial_state(self.trial_dir, "finished", checkpoint, result)
                return result
            if watch.signal_name:
                write_trial_state(self.trial_dir, "preempted", checkpoint, result)
                raise TrialPreempted(watch.signal_name, iteration, checkpoint)


def _trial_dir(experiment_dir: str, name: str | None, prefix: str, resume: bool) -> str:
    """The trial directory: ``name``, else (resuming) the newest ``prefix*`` trial,
    else a new ``prefix<time>``."""
    if name is not None:
        if not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"trial name {name!r} must be a plain directory name")
        path = os.path.join(experiment_dir, name)
        if os.path.exists(path) and not resume:
            raise ValueError(
                f"trial directory {path!r} exists: add --resume to continue that trial, or "
                "give another trial name"
            )
        return path
    found = find_trial(experiment_dir, prefix) if resume else None
    return found or os.path.join(experiment_dir, prefix + _stamp())
