"""DD-PPO on a real Dask LocalCluster: two worker processes learn in one gloo group."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.ddppo import DDPPOTrainer

pytest.importorskip("distributed")


def test_two_dask_workers_learn_together_and_hold_the_same_weights(dask_cluster):
    config = {
        "backend": "dask",
        "dask_address": dask_cluster.scheduler_address,
        "num_workers": 2,
        "rollout_fragment_length": 32,
        "num_envs_per_worker": 2,
        "sgd_minibatch_size": 16,
        "num_sgd_iter": 2,
        "model": {"fcnet_hiddens": [8]},
        "seed": 0,
    }
    with DDPPOTrainer(config, env="CartPole-v1") as trainer:
        for _ in range(2):
            result = trainer.train()
        first, second = trainer.workers.call_remote("get_policy_states")
    for key, value in first["default_policy"]["weights"].items():
        np.testing.assert_array_equal(second["default_policy"]["weights"][key], value)
    assert result["info"]["num_workers_learning"] == 2
    assert result["info"]["learner_backend"] == "gloo"
    assert result["timesteps_total"] >= 2 * 2 * 64  # two iterations of 2 x 64 rows
