"""Recurrent policies with each on-policy algorithm, and the memory task PPO with
``use_lstm`` learns while the same PPO without it cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from training_helpers import train_until

import hpcrl.env.stateless_cartpole  # noqa: F401  (registers StatelessCartPole-v1)
from hpcrl.algorithms.registry import get_trainer_class

LSTM = {"use_lstm": True, "lstm_cell_size": 16, "fcnet_hiddens": [16], "max_seq_len": 8}


@pytest.mark.parametrize(
    "algorithm, extra",
    [
        ("PG", {"num_workers": 0}),
        ("A2C", {"num_workers": 0}),
        ("A3C", {"num_workers": 1}),
        ("PPO", {"num_workers": 0, "sgd_minibatch_size": 32, "num_sgd_iter": 2}),
        ("PPO", {"num_workers": 0, "num_learners": 2, "sgd_minibatch_size": 32}),
        ("IMPALA", {"num_workers": 1, "min_iter_time_s": 0}),
        ("APPO", {"num_workers": 1, "min_iter_time_s": 0, "vtrace": True}),
        ("APPO", {"num_workers": 1, "min_iter_time_s": 0, "vtrace": False}),
    ],
)
def test_recurrent_policies_train_with_each_algorithm(algorithm, extra):
    config = {
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 24,
        "train_batch_size": 96,
        "seed": 0,
        "model": {**LSTM, "lstm_use_prev_action": True, "lstm_use_prev_reward": True},
        **extra,
    }
    trainer = get_trainer_class(algorithm)(config, env="StatelessCartPole-v1")
    try:
        policy = trainer.get_policy()
        assert policy.recurrent
        before = policy.get_weights()
        for _ in range(2):
            result = trainer.train()
        stats = result["info"]["learner"]["default_policy"]
        assert np.isfinite(stats["total_loss"])
        after = policy.get_weights()
        assert any(not np.array_equal(before[k], after[k]) for k in before)
    finally:
        trainer.stop()


TUNED = Path(__file__).resolve().parents[2] / "examples" / "tuned" / "stateless-cartpole-lstm.yaml"


def test_ppo_with_an_lstm_learns_cartpole_without_velocities_and_without_cannot():
    """The tuned file reaches 150; the same PPO without the LSTM, given as many steps,
    stays far below."""
    [experiment] = yaml.safe_load(TUNED.read_text()).values()
    config = experiment["config"]
    trainer_class = get_trainer_class(experiment["run"])
    recurrent = trainer_class(config, env=experiment["env"])
    try:
        result = train_until(recurrent, 150, 200_000)
    finally:
        recurrent.stop()
    assert result["episode_reward_mean"] >= 150, result["episode_reward_mean"]
    steps = result["timesteps_total"]
    feed_forward = trainer_class(
        {**config, "model": {**config["model"], "use_lstm": False}}, env=experiment["env"]
    )
    try:
        result = train_until(feed_forward, 150, steps)
    finally:
        feed_forward.stop()
    assert result["episode_reward_mean"] < 100, result["episode_reward_mean"]


@pytest.mark.parametrize(
    "algorithm, env", [("DQN", "CartPole-v1"), ("SAC", "Pendulum-v1"), ("TD3", "Pendulum-v1")]
)
def test_replay_algorithms_refuse_use_lstm_with_the_fix(algorithm, env):
    with pytest.raises(ValueError, match=f"use_lstm is not supported by .*{algorithm[:3]}"):
        get_trainer_class(algorithm)({"model": {"use_lstm": True}}, env=env)


def test_multi_agent_recurrent_policies_see_their_own_previous_actions_and_resume(tmp_path):
    from hpcrl.env import register_env
    from hpcrl.env.multi_agent_env import make_multi_agent

    register_env("two_stateless", lambda cfg: make_multi_agent("StatelessCartPole-v1")(cfg))
    config = {
        "num_workers": 0,
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 24,
        "train_batch_size": 96,
        "sgd_minibatch_size": 48,
        "seed": 0,
        "env_config": {"num_agents": 2},
        "model": {**LSTM, "lstm_use_prev_action": True, "lstm_use_prev_reward": True},
        "multiagent": {
            "policies": ["p0", "p1"],
            "policy_mapping_fn": lambda agent_id, episode, worker, **kw: f"p{agent_id}",
        },
    }
    trainer = get_trainer_class("PPO")(config, env="two_stateless")
    try:
        worker = trainer.workers.local_worker()
        batch = worker.sample()
        for pid in ("p0", "p1"):
            rows = batch.policy_batches[pid]
            # Within an agent's trajectory the previous action is the row before's.
            same = (rows["eps_id"][1:] == rows["eps_id"][:-1]) & (
                rows["t"][1:] == rows["t"][:-1] + 1
            )
            assert same.any()
            np.testing.assert_array_equal(
                rows["prev_actions"][1:][same], rows["actions"][:-1][same]
            )
            np.testing.assert_array_equal(
                rows["prev_rewards"][1:][same], rows["rewards"][:-1][same]
            )
            assert np.all(rows["prev_actions"][rows["t"] == 0] == 0)
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
        expected = trainer.train()["timesteps_total"]
    finally:
        trainer.stop()
    resumed = get_trainer_class("PPO")(config, env="two_stateless")
    try:
        resumed.restore(checkpoint)
        assert resumed.train()["timesteps_total"] == expected
    finally:
        resumed.stop()
