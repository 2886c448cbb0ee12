"""What a trial process does, whatever carries its messages.

A trial runs ``run_trial(spec, channel)``: it builds the trainable (a Trainer,
or a function that calls ``tune.report``), restores ``spec.restore_from`` if
given, and then, for every iteration, sends the result and waits for the
driver's ``TrialDecision``: save a checkpoint or not, go on or stop. It never
writes results itself: the driver logs them (``result.json``,
``progress.csv``...). It writes checkpoints into ``spec.logdir`` and tells the
driver their paths. It ends with one ``ENDED`` event, carrying the traceback
if the trainable raised.

The messages (``TrialEvent`` from the trial, ``TrialDecision`` to it) go over a
``TrialChannel``; the local executor's is a pipe (``hpcrl.tune.local_executor``),
and a channel over files or a Dask queue needs only ``send`` and ``receive``.
Every event's ``data`` is plain data (numbers, strings, lists, dicts, numpy
values), so ``hpcrl.io.json_values.json_safe`` turns it into JSON without loss
a driver cares about.

Events, in the order a trial sends them::

    RESULT      {"training_iteration": 1, ...}     then the trial waits: receive()
    CHECKPOINT  {"path": ".../checkpoint_000001", "iteration": 1}
    ...
    ENDED       {"error": None | "Traceback ...", "preempted": bool}

``preempted``: SIGTERM or SIGUSR1 arrived (Slurm's warnings): the trial
finished its iteration, saved a checkpoint (a Trainer trial; a function trial
keeps its newest) and ended, to be continued from it.
"""

from __future__ import annotations

import inspect
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from hpcrl.tune import session
from hpcrl.tune.preemption import PreemptionWatch

RESULT = "RESULT"
CHECKPOINT = "CHECKPOINT"
ENDED = "ENDED"


@dataclass
class TrialSpec:
    """Everything a trial process needs to run one trial (or one stretch of it).

    Attributes:
        trial_id: the trial's id (echoed in every event).
        trainable: a Trainer class, an algorithm name (``"PPO"``), or a function
            ``f(config)`` that reports with ``tune.report``.
        config: the trial's config (every search space resolved).
        logdir: the trial directory: checkpoints go here.
        restore_from: a checkpoint to continue from (None: start afresh).
        keep_checkpoints_num: keep only the newest N checkpoints (None: all).
        config_after_restore: after restoring, set values the checkpoint holds
            but the config decides (a Trainer's learning rates): population-based
            training restores another trial's checkpoint under a new config.
    """

    trial_id: str
    trainable: Any
    config: dict[str, Any]
    logdir: str
    restore_from: str | None = None
    keep_checkpoints_num: int | None = None
    config_after_restore: bool = False


@dataclass(frozen=True)
class TrialDecision:
    """The driver's answer to a result: ``save`` a checkpoint now, then ``stop`` or go on."""

    stop: bool = False
    save: bool = False


@dataclass
class TrialEvent:
    """A message from a trial: ``kind`` is ``RESULT``, ``CHECKPOINT`` or ``ENDED``."""

    trial_id: str
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class ChannelClosed(Exception):
    """The driver is gone (the channel's other end closed): the trial process exits."""


class TrialChannel(ABC):
    """The trial's side of the link to the driver.

    ``send`` must deliver events in order; ``receive`` blocks until the driver's
    decision on the last ``RESULT`` arrives. Both raise ``ChannelClosed`` when the
    driver is gone, which ends the trial process without an ``ENDED`` event.
    """

    @abstractmethod
    def send(self, event: TrialEvent) -> None: ...

    @abstractmethod
    def receive(self) -> TrialDecision: ...


def is_function_trainable(trainable: Any) -> bool:
    """A function (or other callable that is not a class) rather than a Trainer."""
    return callable(trainable) and not inspect.isclass(trainable)


def run_trial(spec: TrialSpec, channel: TrialChannel) -> None:
    """Run ``spec``'s trainable until the driver says stop, the function returns,
    it raises, or a preemption signal arrives; then send ``ENDED``.

    Raises:
        ChannelClosed: the driver is gone.
    """
    error = None
    preempted = False
    try:
        with PreemptionWatch() as watch:
            if is_function_trainable(spec.trainable):
                preempted = _run_function(spec, channel, watch)
            else:
                preempted = _run_trainer(spec, channel, watch)
    except ChannelClosed:
        raise
    except (Exception, SystemExit):
        error = traceback.format_exc()
    channel.send(TrialEvent(spec.trial_id, ENDED, {"error": error, "preempted": preempted}))


def _run_function(spec: TrialSpec, channel: TrialChannel, watch: PreemptionWatch) -> bool:
    trial_session = session.FunctionSession(spec, channel, watch)
    session.set_session(trial_session)
    try:
        spec.trainable(dict(spec.config))
    except session.TrialEnd as end:
        return end.preempted
    finally:
        session.set_session(None)
    return False


def _run_trainer(spec: TrialSpec, channel: TrialChannel, watch: PreemptionWatch) -> bool:
    from hpcrl.algorithms.registry import get_trainer_class

    trainer_class = (
        get_trainer_class(spec.trainable) if isinstance(spec.trainable, str) else spec.trainable
    )
    trainer = trainer_class(spec.config)
    try:
        trainer.logdir = spec.logdir
        if spec.keep_checkpoints_num is not None:
            trainer.config["keep_checkpoints_num"] = spec.keep_checkpoints_num
        if spec.restore_from:
            trainer.restore(spec.restore_from)
            if spec.config_after_restore:
                _apply_learning_rates(trainer)
        while True:
            result = trainer.train()
            channel.send(TrialEvent(spec.trial_id, RESULT, result))
            decision = channel.receive()
            if decision.save or watch.signal_name:
                path = trainer.save()
                data = {"path": path, "iteration": trainer.iteration}
                channel.send(TrialEvent(spec.trial_id, CHECKPOINT, data))
            if watch.signal_name:
                return True
            if decision.stop:
                return False
    finally:
        trainer.stop()


def _apply_learning_rates(trainer: Any) -> None:
    """Give the driver's policies the config's learning rate (a checkpoint's
    optimizer state carries the old one), unless a schedule sets it."""
    for policy in trainer.workers.local_worker().policy_map.values():
        if hasattr(policy, "set_lr") and not policy.config.get("lr_schedule"):
            policy.set_lr(policy.config["lr"])
