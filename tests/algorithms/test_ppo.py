from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from hpcrl.algorithms.ppo import PPOTorchPolicy, PPOTrainer
from hpcrl.models import TorchModel
from hpcrl.policy.sample_batch import SampleBatch


class FixedModel(TorchModel):
    """Logits [0, ln 3] (probabilities 0.25, 0.75) and value 0.5 for every observation."""

    def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        self.logits = torch.nn.Parameter(torch.tensor([0.0, math.log(3.0)]))
        self.value = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, input_dict, state, seq_lens):
        n = input_dict["obs"].shape[0]
        self._n = n
        return self.logits.expand(n, 2), state

    def value_function(self):
        return self.value.expand(self._n)


def tiny_policy(**config):
    base = {
        "model": {"custom_model": FixedModel},
        "clip_param": 0.2,
        "kl_coeff": 0.2,
        "vf_loss_coeff": 0.5,
        "entropy_coeff": 0.01,
        "vf_clip_param": 10.0,
    }
    space = gym.spaces.Box(-1, 1, (3,), np.float32)
    return PPOTorchPolicy(space, gym.spaces.Discrete(2), {**base, **config})


def tiny_batch():
    return SampleBatch(
        {
            "obs": np.zeros((2, 3), np.float32),
            "actions": np.array([1, 0]),
            "action_logp": np.log([0.5, 0.5]).astype(np.float32),
            "action_dist_inputs": np.zeros((2, 2), np.float32),
            "advantages": np.array([1.0, -1.0], np.float32),
            "vf_preds": np.zeros(2, np.float32),
            "value_targets": np.array([1.0, 2.0], np.float32),
        }
    )


def test_ppo_loss_terms_by_hand():
    policy = tiny_policy()
    loss, _ = policy.compute_loss(tiny_batch())
    stats = {k: float(v.detach()) for k, v in loss.terms.items()}
    # ratios: 0.75/0.5 = 1.5 (clipped to 1.2, advantage +1) and 0.25/0.5 = 0.5
    # (clipped to 0.8, advantage -1: min(-0.5, -0.8) = -0.8): surrogate mean 0.2
    assert stats["policy_loss"] == pytest.approx(-0.2, abs=1e-6)
    # KL(old || new) = 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
    assert stats["kl"] == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert stats["entropy"] == pytest.approx(entropy, abs=1e-6)
    # value 0.5 against targets 1 and 2: 0.5 * mean(0.25, 2.25)
    assert stats["vf_loss"] == pytest.approx(0.625, abs=1e-6)
    expected = -0.2 + 0.5 * 0.625 + 0.2 * 0.5 * math.log(4 / 3) - 0.01 * entropy
    assert float(loss.total.detach()) == pytest.approx(expected, abs=1e-6)


def test_value_clipping_by_hand():
    policy = tiny_policy(vf_clip_param=0.1)
    loss, _ = policy.compute_loss(tiny_batch())
    # clipped prediction 0 + clamp(0.5, -0.1, 0.1) = 0.1: max((.5-1)^2, (.1-1)^2) = 0.81,
    # max((.5-2)^2, (.1-2)^2) = 3.61; 0.5 * mean = 1.105
    assert float(loss.terms["vf_loss"].detach()) == pytest.approx(1.105, abs=1e-6)


def test_kl_coefficient_adapts_in_the_right_direction():
    policy = tiny_policy(kl_target=0.01)
    assert policy.update_kl(0.05) == pytest.approx(0.3)  # too far: penalty up
    assert policy.update_kl(0.01) == pytest.approx(0.3)  # on target: unchanged
    assert policy.update_kl(0.001) == pytest.approx(0.15)  # too close: penalty down


def test_trainer_updates_kl_after_each_optimizer_step():
    config = {
        "kl_target": 1e-9,
        "train_batch_size": 256,
        "rollout_fragment_length": 32,
        "sgd_minibatch_size": 64,
        "num_sgd_iter": 2,
        "seed": 0,
        "model": {"fcnet_hiddens": [16]},
    }
    with PPOTrainer(config, env="CartPole-v1") as trainer:
        stats = trainer.train()["info"]["learner"]["default_policy"]
        assert stats["kl"] > 2e-9
        assert trainer.get_policy().kl_coeff == pytest.approx(0.3)
        assert {
            "cur_kl_coeff",
            "cur_lr",
            "total_loss",
            "policy_loss",
            "vf_loss",
            "vf_explained_var",
            "kl",
            "entropy",
        } <= set(stats)


def test_learning_rate_schedule_follows_timesteps():
    config = {
        "lr_schedule": [[0, 1e-3], [1024, 1e-4]],
        "train_batch_size": 512,
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 64,
        "sgd_minibatch_size": 256,
        "num_sgd_iter": 1,
        "model": {"fcnet_hiddens": [16]},
    }
    with PPOTrainer(config, env="CartPole-v1") as trainer:
        steps = trainer.train()["timesteps_total"]
        expected = np.interp(steps, [0, 1024], [1e-3, 1e-4])
        assert trainer.get_policy().cur_lr == pytest.approx(expected)
        assert 1e-4 < trainer.get_policy().cur_lr < 1e-3
        trainer.train()
        second = trainer.train()
        assert second["info"]["learner"]["default_policy"]["cur_lr"] == pytest.approx(1e-4)


def test_minibatch_larger_than_batch_is_rejected():
    with pytest.raises(ValueError, match="sgd_minibatch_size"):
        PPOTrainer({"sgd_minibatch_size": 4096, "train_batch_size": 2048}, env="CartPole-v1")


PENDULUM = {
    "num_envs_per_worker": 16,
    "rollout_fragment_length": 128,
    "train_batch_size": 2048,
    "sgd_minibatch_size": 256,
    "num_sgd_iter": 10,
    "lr": 1e-3,
    "gamma": 0.9,
    "lambda": 0.95,
    "vf_clip_param": None,
    "kl_coeff": 0.0,
    "seed": 0,
    "model": {"fcnet_hiddens": [64, 64]},
}


def test_ppo_continuous_actions_run_and_learn_stats():
    with PPOTrainer(
        {**PENDULUM, "train_batch_size": 512, "rollout_fragment_length": 32}, env="Pendulum-v1"
    ) as trainer:
        stats = trainer.train()["info"]["learner"]["default_policy"]
        assert np.isfinite(stats["total_loss"]) and stats["entropy"] > 0
        action = trainer.compute_single_action(np.zeros(3, np.float32))
        assert action.shape == (1,)


def test_ppo_improves_on_pendulum():
    with PPOTrainer(PENDULUM, env="Pendulum-v1") as trainer:
        first = float("nan")
        while np.isnan(first):
            first = trainer.train()["episode_reward_mean"]
        best = first
        for _ in range(60):
            best = max(best, trainer.train()["episode_reward_mean"])
            if best > first + 300:
                break
    # a random Pendulum policy scores about -1250; +300 is clear learning
    assert best > first + 300, (first, best)
