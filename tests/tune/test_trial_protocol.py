"""The trial side of the protocol over an in-memory channel: what any transport carries."""

from __future__ import annotations

import queue
import threading

import pytest

from hpcrl import tune
from hpcrl.tune.trial_protocol import (
    CHECKPOINT,
    ENDED,
    RESULT,
    ChannelClosed,
    TrialChannel,
    TrialDecision,
    TrialSpec,
    run_trial,
)


class QueueChannel(TrialChannel):
    def __init__(self):
        self.events = queue.Queue()
        self.decisions = queue.Queue()

    def send(self, event):
        self.events.put(event)

    def receive(self):
        decision = self.decisions.get(timeout=30)
        if decision is None:
            raise ChannelClosed("the driver is gone")
        return decision


def saving(config):
    state = tune.get_checkpoint() or {"step": 0}
    for step in range(state["step"], 10):
        tune.report(step=step + 1)
        tune.save_checkpoint({"step": step + 1})


def start(trainable, tmp_path, **spec):
    channel = QueueChannel()
    spec = TrialSpec("t0", trainable, {"a": 1}, str(tmp_path), **spec)
    errors = []

    def target():
        try:
            run_trial(spec, channel)
        except ChannelClosed as err:
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    return channel, thread, errors


def next_event(channel):
    return channel.events.get(timeout=30)


def test_results_wait_for_decisions_and_a_stop_with_save_checkpoints_first(tmp_path):
    channel, thread, _ = start(saving, tmp_path)
    first = next_event(channel)
    assert (first.kind, first.data["training_iteration"], first.data["step"]) == (RESULT, 1, 1)
    channel.decisions.put(TrialDecision())
    checkpoint = next_event(channel)
    assert checkpoint.kind == CHECKPOINT and checkpoint.data["iteration"] == 1
    assert next_event(channel).kind == RESULT
    channel.decisions.put(TrialDecision(stop=True, save=True))  # e.g. a pause
    saved = next_event(channel)
    assert saved.kind == CHECKPOINT and saved.data["path"].endswith("checkpoint_000002")
    ended = next_event(channel)
    assert ended.kind == ENDED and ended.data == {"error": None, "preempted": False}
    thread.join()

    # a new start continues from that checkpoint, counting iterations on
    channel, thread, _ = start(saving, tmp_path, restore_from=saved.data["path"])
    again = next_event(channel)
    assert again.data["training_iteration"] == 3 and again.data["step"] == 3
    channel.decisions.put(TrialDecision(stop=True))  # stop without a checkpoint: at once
    assert next_event(channel).kind == ENDED
    thread.join()


def failing(config):
    tune.report(x=1)
    raise KeyError("no such thing")


def test_an_error_ends_the_trial_with_its_traceback_and_a_closed_channel_ends_the_process(
    tmp_path,
):
    channel, thread, errors = start(failing, tmp_path)
    assert next_event(channel).kind == RESULT
    channel.decisions.put(TrialDecision())
    ended = next_event(channel)
    assert "KeyError: 'no such thing'" in ended.data["error"] and "Traceback" in ended.data["error"]
    thread.join()
    assert not errors

    channel, thread, errors = start(saving, tmp_path / "other")
    next_event(channel)
    channel.decisions.put(None)  # the driver went away
    thread.join()
    assert isinstance(errors[0], ChannelClosed) and channel.events.empty()


def test_the_function_api_outside_a_trial_says_how_to_use_it():
    with pytest.raises(RuntimeError, match="outside a trial"):
        tune.report(x=1)
