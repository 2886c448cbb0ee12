"""A3C: config checks, results, and learning CartPole-v1 in a short, bounded run."""

from __future__ import annotations

import time

import pytest

from hpcrl.algorithms.a3c import DEFAULT_CONFIG, A3CTrainer
from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.optimizers import AsyncGradientsOptimizer

SMALL = {"model": {"fcnet_hiddens": [16]}, "grads_per_step": 4, "seed": 0}


def test_registered_and_defaults():
    assert get_trainer_class("A3C") is A3CTrainer
    assert DEFAULT_CONFIG["num_workers"] >= 1
    assert {"grads_per_step", "vf_loss_coeff", "entropy_coeff", "use_gae"} <= set(DEFAULT_CONFIG)


def test_num_workers_zero_is_refused():
    with pytest.raises(ValueError, match=r"num_workers >= 1.*num_workers=0"):
        A3CTrainer({"num_workers": 0}, env="CartPole-v1")


def test_train_result_has_staleness_and_learner_stats():
    with A3CTrainer(SMALL, env="CartPole-v1") as trainer:
        assert isinstance(trainer.optimizer, AsyncGradientsOptimizer)
        result = trainer.train()
        rows = DEFAULT_CONFIG["rollout_fragment_length"] * DEFAULT_CONFIG["num_envs_per_worker"]
        assert result["timesteps_total"] >= 4 * rows
        info = result["info"]
        assert {"staleness_mean", "staleness_max"} <= set(info)
        assert info["staleness_max"] <= DEFAULT_CONFIG["num_workers"] - 1
        assert "vf_loss" in info["learner"]["default_policy"]
        assert trainer.train()["training_iteration"] == 2


def test_learns_cartpole():
    start = time.perf_counter()
    config = {"seed": 0, "grads_per_step": 25}
    result = {}
    first = None
    with A3CTrainer(config, env="CartPole-v1") as trainer:
        while time.perf_counter() - start < 120:
            result = trainer.train()
            if first is None:
                first = result["episode_reward_mean"]
            if result["episode_reward_mean"] >= 150 or result["timesteps_total"] >= 60_000:
                break
    assert result["episode_reward_mean"] >= 150, (first, result)
