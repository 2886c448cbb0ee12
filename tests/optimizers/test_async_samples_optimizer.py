from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from hpcrl.algorithms.impala import IMPALATorchPolicy
from hpcrl.optimizers.async_samples_optimizer import (
    AsyncSamplesOptimizer,
    MinibatchBuffer,
    ReplaySlots,
    SampleStream,
)

CONFIG = {"model": {"fcnet_hiddens": [16]}, "rollout_fragment_length": 25, "seed": 3}


# -- the pure bookkeeping --------------------------------------------------
def test_stream_keeps_each_worker_at_most_max_calls_in_flight():
    s = SampleStream(range(3), max_in_flight=2, broadcast_interval=1)
    due = s.requests_due()
    assert Counter(due) == {0: 2, 1: 2, 2: 2}
    for worker in due:
        s.requested(worker)
    assert s.requests_due() == []
    with pytest.raises(RuntimeError, match="already has 2 sample calls in flight"):
        s.requested(1)
    s.arrived(1)
    assert s.requests_due() == [1]


def test_stream_policy_lag_and_weights_every_broadcast_interval():
    s = SampleStream(["a"], max_in_flight=2, broadcast_interval=3)
    s.requested("a")  # sampled with version 0
    s.learner_updated()
    s.learner_updated()
    s.requested("a")  # still version 0: only 2 updates, interval 3
    assert not s.weights_due("a")
    s.learner_updated()
    assert s.arrived("a") == 3
    assert s.weights_due("a")
    s.weights_sent("a")
    s.requested("a")  # version 3
    s.learner_updated()
    assert s.arrived("a") == 4  # the second call, with version 0 weights
    assert s.arrived("a") == 1  # the third, with version 3


def test_stream_names_silent_workers_and_forgets_lost_calls():
    s = SampleStream(["a", "b"], max_in_flight=1)
    s.requested("a")
    s.requested("b")
    time.sleep(0.05)
    s.arrived("a")
    assert s.silent(0.04) == ["b"]
    s.lost("b")
    assert s.in_flight("b") == 0 and s.silent(0.0) == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_in_flight": 0}, "max_sample_requests_in_flight_per_worker must be >= 1"),
        ({"broadcast_interval": 0}, "broadcast_interval must be >= 1"),
    ],
)
def test_stream_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SampleStream(["a"], **kwargs)


def test_replay_slots_ring_and_poisson_count():
    slots = ReplaySlots(num_slots=3, proportion=2.0, seed=0)
    for name in "abcd":
        slots.add(name)
    counts = []
    for _ in range(2000):
        replayed = slots.replays()
        assert set(replayed) <= {"b", "c", "d"}  # "a" was overwritten by "d"
        counts.append(len(replayed))
    assert abs(np.mean(counts) - 2.0) < 0.1
    assert ReplaySlots(num_slots=0, proportion=0.0).replays() == []
    with pytest.raises(ValueError, match="needs replay_buffer_num_slots >= 1"):
        ReplaySlots(num_slots=0, proportion=0.5)


def test_minibatch_buffer_serves_each_batch_num_passes_times():
    new = iter(range(10))
    ring = MinibatchBuffer(size=1, num_passes=3)
    assert [ring.get(lambda: next(new)) for _ in range(7)] == [0, 0, 0, 1, 1, 1, 2]


# -- the optimizer on the local backend -------------------------------------
@pytest.mark.parametrize("num_workers", [0, 2])
def test_optimizer_trains_and_counts(num_workers, one_torch_thread):
    opt = AsyncSamplesOptimizer.make(
        "CartPole-v1",
        IMPALATorchPolicy,
        num_workers=num_workers,
        worker_config=CONFIG,
        train_batch_size=100,
    )
    try:
        before = opt.workers.local_worker().get_weights()["default_policy"]
        while opt.num_learner_updates < 3:
            fetches = opt.step()
        stats = opt.stats()
    finally:
        opt.stop()
        opt.workers.stop()
    assert "policy_loss" in fetches["default_policy"]["learner_stats"]
    assert stats["num_steps_trained"] == 100 * stats["num_learner_updates"]
    assert stats["num_steps_sampled"] >= stats["num_steps_trained"]
    assert stats["policy_lag_max"] >= 0 and stats["sampled_steps_per_s"] > 0
    after = opt.workers.local_worker().get_weights()["default_policy"]
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_replayed_and_repeated_batches_are_trained_on(one_torch_thread):
    opt = AsyncSamplesOptimizer.make(
        "CartPole-v1",
        IMPALATorchPolicy,
        worker_config=CONFIG,
        train_batch_size=50,
        num_sgd_iter=2,
        replay_proportion=1.0,
        replay_buffer_num_slots=4,
    )
    try:
        while opt.num_learner_updates < 20:
            opt.step()
    finally:
        opt.stop()
        opt.workers.stop()
    learner = opt.learner
    assert learner.num_replayed > 0
    # each new batch learned from twice (the last maybe once so far), plus the replays
    passes = learner.num_updates - learner.num_replayed
    assert 2 * learner.num_new - 1 <= passes <= 2 * learner.num_new
    assert opt.num_steps_trained == 50 * opt.num_learner_updates  # as drained so far


def test_learner_error_is_raised_by_step(one_torch_thread):
    opt = AsyncSamplesOptimizer.make(
        "CartPole-v1", IMPALATorchPolicy, worker_config=CONFIG, train_batch_size=25
    )

    def broken(samples):
        raise ValueError("loss blew up")

    opt.workers.local_worker().learn_on_batch = broken
    try:
        with pytest.raises(RuntimeError, match="learner thread failed: ValueError\\('loss blew up"):
            for _ in range(20):
                opt.step()
    finally:
        opt.stop()
        opt.workers.stop()


def test_arrivals_recreate_a_lost_actor_once_and_drop_its_earlier_items():
    from hpcrl.backends.base import CompletedFuture, WorkerLostError
    from hpcrl.optimizers.async_samples_optimizer import LearnerQueueOptimizer

    lost = WorkerLostError("worker 1", "killed by signal 9")
    items = [
        (0, CompletedFuture("a")),
        (1, CompletedFuture(error=lost)),
        (1, CompletedFuture("sampled before the loss")),
        (0, CompletedFuture("b")),
    ]
    calls = []
    values = list(LearnerQueueOptimizer.arrivals(items, lambda i, err: calls.append((i, err))))
    assert values == [(0, "a"), (0, "b")]
    assert calls == [(1, lost)]
