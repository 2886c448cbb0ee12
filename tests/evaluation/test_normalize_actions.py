"""normalize_actions: policies act in [-1, 1]; the env receives its own range."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.env import register_env
from hpcrl.evaluation.policy_evaluation import evaluate_policy


class RecordActions(gym.Env):
    """Actions in [0, 10] x [-4, 0]; keeps every action it is given."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Box(np.array([0, -4], np.float32), np.array([10, 0], np.float32))
    seen: list = []

    def reset(self, *, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        RecordActions.seen.append(np.array(action))
        return np.zeros(2, np.float32), 0.0, False, len(RecordActions.seen) % 5 == 0, {}


register_env("record_actions", lambda cfg: RecordActions())


@pytest.mark.parametrize("run", ["PPO", "SAC"])
def test_policies_act_in_unit_range_and_the_env_gets_its_range(run):
    RecordActions.seen = []
    config = {
        "normalize_actions": True,
        "num_workers": 0,
        "num_envs_per_worker": 1,
        "rollout_fragment_length": 10,
        "train_batch_size": 10,
        "seed": 0,
    }
    if run == "PPO":
        config["sgd_minibatch_size"] = 10
    trainer = get_trainer_class(run)(config, env="record_actions")
    try:
        policy = trainer.get_policy()
        assert policy.action_space == gym.spaces.Box(-1, 1, (2,), np.float32)
        batch = trainer.workers.local_worker().sample()
        acted = np.clip(batch["actions"], -1, 1)
        env_actions = np.array(RecordActions.seen[-len(acted) :])
        expected = np.array([0, -4]) + (acted + 1) / 2 * np.array([10, 4])
        np.testing.assert_allclose(env_actions, expected, rtol=1e-5, atol=1e-5)
        assert env_actions[:, 0].min() >= 0 and env_actions[:, 0].max() <= 10
        RecordActions.seen = []
        evaluate_policy(policy, "record_actions", 1, seed=0)
        assert all(0 <= a[0] <= 10 and -4 <= a[1] <= 0 for a in RecordActions.seen)
    finally:
        trainer.stop()


def test_discrete_actions_are_left_alone():
    trainer = get_trainer_class("PPO")({"normalize_actions": True}, env="CartPole-v1")
    try:
        assert trainer.get_policy().action_space == gym.spaces.Discrete(2)
    finally:
        trainer.stop()
