"""PPO on the DataParallelOptimizer (local backend: the learners are child processes)."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.a3c import A3CTrainer
from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.optimizers import DataParallelOptimizer, SyncSamplesOptimizer

CONFIG = {
    "num_learners": 2,
    "seed": 2,
    "num_envs_per_worker": 8,
    "rollout_fragment_length": 32,
    "train_batch_size": 256,
    "sgd_minibatch_size": 64,
    "num_sgd_iter": 2,
    "kl_coeff": 0.2,
    "kl_target": 0.001,
    "lr_schedule": [[0, 0.01], [1024, 0.001]],
    "model": {"fcnet_hiddens": [16]},
}


def test_ppo_learns_on_two_learners_and_keeps_kl_and_lr_updates():
    with PPOTrainer(CONFIG, env="CartPole-v1") as trainer:
        assert isinstance(trainer.optimizer, DataParallelOptimizer)
        policy = trainer.get_policy()
        seen = []
        for _ in range(3):
            expected = (policy.kl_coeff, policy.cur_lr)  # what the learners must use now
            result = trainer.train()
            stats = result["info"]["learner"]["default_policy"]
            assert (stats["cur_kl_coeff"], stats["cur_lr"]) == pytest.approx(expected)
            seen.append(expected)
        info = result["info"]
        assert info["num_learners"] == 2 and info["learner_backend"] == "gloo"
        assert {"kl", "policy_loss", "vf_loss", "entropy", "grad_gnorm"} <= set(stats)
        assert info["num_steps_trained"] == 2 * info["num_steps_sampled"]
        # The coefficients did move, so the check above compared updated values.
        assert len({kl for kl, _ in seen}) > 1 and len({lr for _, lr in seen}) > 1
        # The driver's policy holds the learners' weights after every step.
        learned = trainer.optimizer.learners.get_weights()["default_policy"]
        for key, value in policy.get_weights().items():
            np.testing.assert_array_equal(value, learned[key])


def test_one_learner_without_gpus_stays_on_the_driver_policy():
    with PPOTrainer({**CONFIG, "num_learners": 1}, env="CartPole-v1") as trainer:
        assert isinstance(trainer.optimizer, SyncSamplesOptimizer)


def test_bad_learner_config_fails_before_anything_starts():
    with pytest.raises(ValueError, match=r"num_gpus_per_learner must be 0 \(CPU\) or 1 .*, got 4"):
        PPOTrainer({**CONFIG, "num_gpus_per_learner": 4}, env="CartPole-v1")
    with pytest.raises(ValueError, match="A3C .* has no data-parallel learners"):
        A3CTrainer({"num_learners": 2}, env="CartPole-v1")


def test_restored_checkpoint_trains_on_as_the_uninterrupted_run(tmp_path):
    with PPOTrainer(CONFIG, env="CartPole-v1") as trainer:
        trainer.train()
        path = trainer.save(str(tmp_path))
        trainer.train()
        expected = trainer.get_weights()["default_policy"]
    with PPOTrainer(CONFIG, env="CartPole-v1") as restored:
        restored.restore(path)
        restored.train()
        weights = restored.get_weights()["default_policy"]
    for key, value in expected.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
