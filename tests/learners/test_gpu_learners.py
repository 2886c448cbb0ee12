"""Learners on CUDA GPUs over NCCL; skipped on machines without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from learner_helpers import (
    ACTION_SPACE,
    CONFIG,
    OBS_SPACE,
    driver_state,
    reference_weights,
    synthetic_batch,
)

from hpcrl.algorithms.ppo import PPOTorchPolicy
from hpcrl.backends.local import LocalBackend
from hpcrl.learners.learner_group import LearnerGroup
from hpcrl.policy.sgd import plan_minibatches, shard_sizes

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL learners)"
)


def learn_and_compare(num_learners: int) -> LearnerGroup:
    group = LearnerGroup(
        LocalBackend(),
        {"default_policy": (PPOTorchPolicy, OBS_SPACE, ACTION_SPACE, CONFIG)},
        num_learners=num_learners,
        num_gpus_per_learner=1,
        timeout_s=120,
    )
    try:
        assert group.process_group_backend == "nccl"
        assert group.devices == [f"cuda:{i}" for i in range(num_learners)]
        batch = synthetic_batch(64)
        reference = PPOTorchPolicy(OBS_SPACE, ACTION_SPACE, CONFIG)  # on the CPU
        group.set_policy_state({"default_policy": driver_state(reference)})
        sizes = shard_sizes(batch.count, num_learners)
        plan = plan_minibatches(sizes, 2, 16, np.random.default_rng(0))
        group.learn_planned({"default_policy": (batch, sizes, plan)})
        expected = reference_weights(reference, batch, sizes, plan)
        weights = [w["default_policy"] for w in group.call("get_weights")]
        for key in expected:
            for learner in weights:
                np.testing.assert_allclose(learner[key], expected[key], rtol=1e-4, atol=1e-5)
    finally:
        group.stop()
    return group


def test_one_gpu_learner_matches_the_cpu_reference():
    learn_and_compare(1)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpu_learners_over_nccl_match_the_cpu_reference():
    learn_and_compare(2)
