from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.a2c import A2CTrainer
from hpcrl.algorithms.config import COMMON_CONFIG
from hpcrl.algorithms.pg import DEFAULT_CONFIG as PG_CONFIG
from hpcrl.algorithms.pg import PGTorchPolicy, PGTrainer
from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.algorithms.trainer_template import build_trainer

SMALL = {
    "model": {"fcnet_hiddens": [16]},
    "rollout_fragment_length": 20,
    "num_envs_per_worker": 2,
    "train_batch_size": 40,
}

RESULT_KEYS = {
    "episode_reward_mean",
    "episode_reward_min",
    "episode_reward_max",
    "episode_len_mean",
    "episodes_this_iter",
    "timesteps_total",
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "num_healthy_workers",
    "num_worker_restarts",
    "timesteps_per_s",
    "info",
}


def test_unknown_config_key_suggests_closest():
    with pytest.raises(ValueError, match=r"unknown config key 'lamda'; did you mean 'lambda'\?"):
        A2CTrainer({"lamda": 0.9}, env="CartPole-v1")


def test_unknown_model_key_is_rejected():
    with pytest.raises(ValueError, match="fcnet_hiddens"):
        PGTrainer({"model": {"fcnet_hidden": [8]}}, env="CartPole-v1")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("train_batch_size", "100", "int"),
        ("lr", "fast", "int or float"),
        ("explore", 1, "bool"),
        ("model", [], "dict"),
    ],
)
def test_config_types_are_checked(key, value, expected):
    with pytest.raises(ValueError, match=f"config key '{key}' must be {expected}"):
        PGTrainer({key: value}, env="CartPole-v1")


def test_missing_env_and_unknown_algorithm():
    with pytest.raises(ValueError, match="needs an env"):
        PGTrainer({})
    with pytest.raises(ValueError, match="did you mean 'A2C'"):
        get_trainer_class("A2D")


def test_default_config_documents_common_keys():
    assert set(COMMON_CONFIG) <= set(PG_CONFIG)
    assert PGTrainer.DEFAULT_CONFIG is PG_CONFIG


def test_train_returns_documented_keys_and_counts():
    with PGTrainer(SMALL, env="CartPole-v1") as trainer:
        first = trainer.train()
        second = trainer.train()
    assert set(first) >= RESULT_KEYS
    # two envs x 20 steps, plus a row or two when one env spent a step on a reset
    assert 40 <= first["timesteps_total"] <= 42
    assert second["timesteps_total"] == first["timesteps_total"] + second["timesteps_this_iter"]
    assert second["training_iteration"] == 2
    assert "policy_loss" in first["info"]["learner"]["default_policy"]


def test_episode_reward_mean_is_over_last_n_episodes():
    config = {**SMALL, "metrics_smoothing_episodes": 3}
    with PGTrainer(config, env="CartPole-v1") as trainer:
        result = {}
        while result.get("episodes_total", 0) < 5:
            result = trainer.train()
        window = trainer._metrics
        assert len(window.returns) == 3
        assert result["episode_reward_mean"] == pytest.approx(np.mean(window.returns))


def test_timesteps_per_iteration_repeats_optimizer_steps():
    with PGTrainer({**SMALL, "timesteps_per_iteration": 100}, env="CartPole-v1") as trainer:
        result = trainer.train()
    # three optimizer steps of 40+ rows each reach 100; two would not
    assert 120 <= result["timesteps_this_iter"] <= 126
    assert result["info"]["num_steps_sampled"] == result["timesteps_this_iter"]


def final_weights(config, iterations=3):
    with A2CTrainer(config, env="CartPole-v1") as trainer:
        for _ in range(iterations):
            trainer.train()
        return trainer.get_weights()["default_policy"]


def test_same_seed_gives_identical_weights_with_remote_workers():
    config = {**SMALL, "seed": 11, "num_workers": 2}
    a, b = final_weights(config), final_weights(config)
    c = final_weights({**config, "seed": 12})
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_compute_single_action_and_get_policy():
    with PGTrainer(SMALL, env="CartPole-v1") as trainer:
        action = trainer.compute_single_action(np.zeros(4, dtype=np.float32), explore=False)
        assert action in (0, 1)
        action, state, extra = trainer.compute_single_action(np.zeros(4), full_fetch=True)
        assert state == [] and "action_logp" in extra
        assert trainer.get_policy() is trainer.workers.local_worker().get_policy()


def test_build_trainer_hooks_and_with_updates():
    calls = []
    Custom = build_trainer(
        "Custom",
        PGTorchPolicy,
        default_config=PG_CONFIG,
        before_init=lambda t: calls.append("before_init"),
        after_init=lambda t: calls.append("after_init"),
        before_train_step=lambda t: calls.append("before_train_step"),
        after_optimizer_step=lambda t, fetches: calls.append("after_optimizer_step"),
        after_train_result=lambda t, result: result.update(custom=1),
    )
    with Custom(SMALL, env="CartPole-v1") as trainer:
        assert trainer.train()["custom"] == 1
    assert calls == ["before_init", "after_init", "before_train_step", "after_optimizer_step"]
    Renamed = Custom.with_updates(name="Renamed", after_train_result=None)
    assert Renamed._name == "Renamed" and Renamed.__bases__ == Custom.__bases__
    with pytest.raises(TypeError, match="unknown arguments"):
        Custom.with_updates(loss_fn=None)


def test_validate_config_rejects_gae_without_critic():
    with pytest.raises(ValueError, match="use_critic"):
        A2CTrainer({"use_critic": False}, env="CartPole-v1")


def test_evaluation_runs_every_interval_with_greedy_actions_by_default():
    config = {**SMALL, "evaluation_interval": 2, "evaluation_num_episodes": 3, "seed": 1}
    with PGTrainer(config, env="CartPole-v1") as trainer:
        results = [trainer.train() for _ in range(4)]
        greedy = trainer.evaluate()["evaluation"]
        assert trainer.evaluate()["evaluation"] == greedy  # same seed and weights, greedy
        trainer.config["evaluation_config"] = {"explore": True}
        sampled = [trainer.evaluate()["evaluation"]["episode_reward_mean"] for _ in range(3)]
    assert ["evaluation" in r for r in results] == [False, True, False, True]
    evaluation = results[1]["evaluation"]
    assert evaluation["episodes"] == 3
    assert evaluation["episode_reward_min"] <= evaluation["episode_reward_mean"]
    assert evaluation["episode_len_mean"] >= 8  # CartPole cannot fall sooner
    # sampled actions: fresh sampling noise each call
    assert len(set(sampled)) > 1
    assert greedy["episodes"] == 3


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"evaluation_num_episodes": 0}, "'evaluation_num_episodes' must be >= 1, got 0"),
        ({"evaluation_interval": -1}, "'evaluation_interval' must be >= 0"),
        ({"evaluation_config": {"lr": 0.1}}, "evaluation_config key 'lr' is not supported"),
        ({"evaluation_config": {"explore": "no"}}, "'explore' must be bool"),
    ],
)
def test_bad_evaluation_config_is_named(extra, expected):
    with pytest.raises(ValueError, match=expected):
        PGTrainer({**SMALL, **extra}, env="CartPole-v1")


def test_evaluation_interval_none_means_never():
    with PGTrainer({**SMALL, "evaluation_interval": None}, env="CartPole-v1") as trainer:
        assert "evaluation" not in trainer.train()
