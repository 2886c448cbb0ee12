"""LearnerGroup on real gloo process groups: learners are child processes of the test."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from learner_helpers import (
    ACTION_SPACE,
    CONFIG,
    OBS_SPACE,
    FailingPPOPolicy,
    driver_state,
    reference_weights,
    synthetic_batch,
)

from hpcrl.algorithms.ppo import PPOTorchPolicy
from hpcrl.backends.local import LocalBackend
from hpcrl.learners.learner_group import LearnerError, LearnerGroup
from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID
from hpcrl.policy.sgd import plan_minibatches, shard_sizes


@pytest.fixture(scope="module")
def two_learners():
    group = LearnerGroup(LocalBackend(), specs(PPOTorchPolicy), num_learners=2, timeout_s=60)
    yield group
    group.stop()


def specs(policy_class) -> dict:
    return {DEFAULT_POLICY_ID: (policy_class, OBS_SPACE, ACTION_SPACE, CONFIG)}


def learn_planned(group, batch, sizes, plan) -> dict:
    result = group.learn_planned({DEFAULT_POLICY_ID: (batch, sizes, plan)})
    return result[DEFAULT_POLICY_ID]["learner_stats"]


def assert_same_weights_everywhere(group):
    first, *others = [w[DEFAULT_POLICY_ID] for w in group.call("get_weights")]
    for other in others:
        assert first.keys() == other.keys()
        for key in first:
            np.testing.assert_array_equal(first[key], other[key], err_msg=key)
    return first


def test_two_learners_match_one_learner_over_the_same_minibatches(two_learners):
    assert two_learners.process_group_backend == "gloo"
    # 63 rows: shards of 32 and 31 rows, minibatches of 8 and 7 rows, so the
    # learners' gradients must be weighted by rows to match the global mean.
    batch = synthetic_batch(63)
    reference = PPOTorchPolicy(OBS_SPACE, ACTION_SPACE, CONFIG)
    untrained = reference.get_weights()
    two_learners.set_policy_state({DEFAULT_POLICY_ID: driver_state(reference)})
    sizes = shard_sizes(batch.count, 2)
    plan = plan_minibatches(sizes, 3, 16, np.random.default_rng(5))
    assert [len(epoch) for epoch in plan[0]] == [63 // 16] * 3
    stats = learn_planned(two_learners, batch, sizes, plan)

    learned = assert_same_weights_everywhere(two_learners)
    expected = reference_weights(reference, batch, sizes, plan)
    # The comparison below is not between untrained weights.
    assert max(np.abs(expected[k] - untrained[k]).max() for k in expected) > 1e-2
    for key in expected:
        np.testing.assert_allclose(learned[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert {"total_loss", "kl", "vf_loss", "grad_gnorm", "cur_kl_coeff"} <= set(stats)


def test_weights_identical_on_every_learner_after_every_step(two_learners):
    batch = synthetic_batch(40, seed=1)
    sizes = shard_sizes(batch.count, 2)
    rng = np.random.default_rng(0)
    before = two_learners.get_weights()[DEFAULT_POLICY_ID]
    for _ in range(3):
        learn_planned(two_learners, batch, sizes, plan_minibatches(sizes, 1, 0, rng))
        after = assert_same_weights_everywhere(two_learners)
        assert any(not np.array_equal(before[k], after[k]) for k in after)
        before = after


def test_policy_state_reaches_every_learner(two_learners):
    policy = PPOTorchPolicy(OBS_SPACE, ACTION_SPACE, CONFIG)
    policy.kl_coeff = 0.75
    two_learners.set_policy_state({DEFAULT_POLICY_ID: driver_state(policy)})
    sizes = shard_sizes(20, 2)
    stats = learn_planned(
        two_learners,
        synthetic_batch(20),
        sizes,
        plan_minibatches(sizes, 1, 0, np.random.default_rng(0)),
    )
    assert stats["cur_kl_coeff"] == pytest.approx(0.75)


def test_a_failing_learner_is_reported_with_rank_and_traceback_at_once(monkeypatch):
    monkeypatch.setenv("FAIL_ON_LEARNER", "1")
    group = LearnerGroup(LocalBackend(), specs(FailingPPOPolicy), num_learners=2, timeout_s=120)
    start = time.monotonic()
    try:
        with pytest.raises(LearnerError) as caught:
            group.learn({DEFAULT_POLICY_ID: synthetic_batch(64)}, 2, 16, np.random.default_rng(0))
        failed_after = time.monotonic() - start
        with pytest.raises(RuntimeError, match="the group is broken"):
            group.learn({DEFAULT_POLICY_ID: synthetic_batch(64)}, 2, 16, np.random.default_rng(0))
    finally:
        group.stop()
    message = str(caught.value)
    assert message.startswith("learner rank 1 of 2 on local learner process")
    assert "ValueError('loss failure on learner 1')" in message
    assert 'learner_helpers.py", line' in message and "in failing_loss" in message
    # Learner 0 was waiting for learner 1 in an all-reduce: neither the report nor
    # the stop waits for the group's 120 s timeout.
    assert failed_after < 20 and time.monotonic() - start < 40


def test_one_learner_lives_in_the_driver_process():
    group = LearnerGroup(LocalBackend(), specs(PPOTorchPolicy), num_learners=1)
    try:
        [learner] = group.learners
        assert type(learner.instance).__name__ == "Learner"
        result = group.learn(
            {DEFAULT_POLICY_ID: synthetic_batch(32)}, 2, 8, np.random.default_rng(0)
        )
        assert math.isfinite(result[DEFAULT_POLICY_ID]["learner_stats"]["total_loss"])
    finally:
        group.stop()
