"""Exact resume: restored at iteration k and trained to k + m, a run has the weights and
counters of a run that never stopped."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from hpcrl.algorithms.a2c import A2CTrainer
from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.env.registry import register_env

SMALL = {
    "model": {"fcnet_hiddens": [16]},
    "num_envs_per_worker": 3,
    "rollout_fragment_length": 30,
    "seed": 11,
}
PPO_SMALL = {**SMALL, "train_batch_size": 90, "sgd_minibatch_size": 30, "num_sgd_iter": 2}
COUNTERS = ("timesteps_total", "episodes_total", "episode_reward_mean", "episode_len_mean")


def train_through_a_checkpoint(trainer_class, config, env, tmp_path, k=2, m=2):
    """(results and weights of an uninterrupted run, the same of a run restored at k)."""
    with trainer_class(config, env=env) as trainer:
        straight = [trainer.train() for _ in range(k + m)]
        straight_weights = trainer.get_weights()["default_policy"]
    with trainer_class(config, env=env) as trainer:
        for _ in range(k):
            trainer.train()
        checkpoint = trainer.save(str(tmp_path))
    with trainer_class(config, env=env) as trainer:
        trainer.restore(checkpoint)
        resumed = [trainer.train() for _ in range(m)]
        resumed_weights = trainer.get_weights()["default_policy"]
    return (straight[k:], straight_weights), (resumed, resumed_weights)


@pytest.mark.parametrize(
    "trainer_class, extra",
    [
        (PPOTrainer, {"vectorization_mode": "vector_entry_point"}),
        (PPOTrainer, {"vectorization_mode": "sync", "batch_mode": "complete_episodes"}),
        (PPOTrainer, {"num_workers": 2, "vectorization_mode": "sync"}),
        (A2CTrainer, {"num_workers": 1}),
    ],
    ids=["ppo-batched-env", "ppo-complete-episodes", "ppo-2-workers", "a2c-1-worker"],
)
def test_restored_run_matches_uninterrupted_run(tmp_path, trainer_class, extra):
    config = {**(PPO_SMALL if trainer_class is PPOTrainer else SMALL), **extra}
    (straight, weights), (resumed, resumed_weights) = train_through_a_checkpoint(
        trainer_class, config, "CartPole-v1", tmp_path
    )
    for a, b in zip(straight, resumed):
        assert a["training_iteration"] == b["training_iteration"]
        for key in COUNTERS:
            assert a[key] == b[key], key
    assert set(weights) == set(resumed_weights)
    for name in weights:
        np.testing.assert_array_equal(weights[name], resumed_weights[name], err_msg=name)


class LockedCartPole(gym.Wrapper):
    """CartPole holding a lock: state the env snapshot cannot store."""

    def __init__(self, env_config):
        super().__init__(gym.make("CartPole-v1"))
        import threading

        self.lock = threading.Lock()


def test_env_that_cannot_be_snapshotted_resumes_with_fresh_episodes(tmp_path):
    register_env("LockedCartPole", LockedCartPole)
    config = {**PPO_SMALL, "vectorization_mode": "sync"}
    with PPOTrainer(config, env="LockedCartPole") as trainer:
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
    with PPOTrainer(config, env="LockedCartPole") as trainer:
        with pytest.warns(UserWarning, match=r"envs\[0\]\.lock holds a _thread\.lock.*afresh"):
            trainer.restore(checkpoint)
        result = trainer.train()
    assert result["training_iteration"] == 2 and result["timesteps_total"] >= 180
