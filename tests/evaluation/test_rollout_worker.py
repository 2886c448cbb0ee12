from __future__ import annotations

from collections import Counter

import gymnasium as gym
import numpy as np
import pytest

from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.algorithms.pg import PGTorchPolicy
from hpcrl.env.registry import register_env
from hpcrl.evaluation.postprocessing import Postprocessing
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch

SMALL_MODEL = {"fcnet_hiddens": [16]}


def worker(policy=PGTorchPolicy, env="CartPole-v1", **config):
    base = {
        "num_envs_per_worker": 4,
        "rollout_fragment_length": 30,
        "seed": 1,
        "model": SMALL_MODEL,
    }
    return RolloutWorker(env, policy, {**base, **config})


def test_truncate_episodes_gives_full_fragments_across_resets():
    w = worker()
    for _ in range(5):  # several fragments, each spanning episode ends and autoresets
        batch = w.sample()
        rows_per_env = np.bincount(batch["env_id"], minlength=4)
        # every env has a full fragment; an env that reset less often has a few more
        assert rows_per_env.min() == 30 and rows_per_env.max() <= 30 + 30 // 8
        assert batch.count == rows_per_env.sum()


def test_every_row_is_sampled_with_the_current_weights():
    w = worker(rollout_fragment_length=50)
    policy = w.get_policy()
    w.sample()
    policy.set_weights({k: v + 0.5 for k, v in policy.get_weights().items()})
    batch = w.sample()
    logp = policy.compute_log_likelihoods(batch["actions"], batch["obs"])
    np.testing.assert_allclose(logp, batch["action_logp"], rtol=1e-5, atol=1e-5)


def test_rows_are_real_transitions_in_time_order():
    w = worker()
    first, second = w.sample(), w.sample()
    for batch in (first, second):
        for traj in batch.split_by_episode():
            # obs of each step is the previous step's new_obs; t counts up by one
            np.testing.assert_array_equal(traj["obs"][1:], traj["new_obs"][:-1])
            assert np.all(np.diff(traj["t"]) == 1)
            # only the last row of a trajectory may end the episode
            assert not traj["dones"][:-1].any()
    # an episode cut at the end of a fragment continues in the next one
    for env in range(4):
        a = first["new_obs"][first["env_id"] == env][-1]
        b = second["obs"][second["env_id"] == env][0]
        if not first["dones"][first["env_id"] == env][-1]:
            np.testing.assert_array_equal(a, b)


def test_new_episodes_start_at_t0():
    batch = worker(rollout_fragment_length=100).sample()
    ends = np.flatnonzero(batch["dones"])
    for row in ends:
        if row + 1 < batch.count and batch["env_id"][row + 1] == batch["env_id"][row]:
            assert batch["t"][row + 1] == 0
            assert batch["eps_id"][row + 1] != batch["eps_id"][row]


def test_complete_episodes_mode():
    w = worker(batch_mode="complete_episodes", rollout_fragment_length=20)
    batch = w.sample()
    assert batch.count >= 4 * 20
    for traj in batch.split_by_episode():
        assert traj["dones"][-1] and traj["t"][0] == 0


def test_bootstrap_from_final_observation_on_truncation():
    w = worker(
        policy=A2CTorchPolicy,
        env_config={"max_episode_steps": 5},
        rollout_fragment_length=12,
        gamma=0.9,
        **{"lambda": 1.0},
    )
    batch = w.sample()
    policy = w.get_policy()
    truncated = np.flatnonzero(batch["truncateds"])
    assert len(truncated) > 0
    assert np.all(batch["t"][truncated] == 4)
    values = policy.value_of_next_obs(batch, truncated)
    expected_last = batch["rewards"][truncated] + 0.9 * values - batch["vf_preds"][truncated]
    np.testing.assert_allclose(
        batch[Postprocessing.ADVANTAGES][truncated], expected_last, rtol=1e-4, atol=1e-5
    )
    # and a terminated last row bootstraps from zero
    term = np.flatnonzero(batch["terminateds"])
    np.testing.assert_allclose(
        batch[Postprocessing.VALUE_TARGETS][term], batch["rewards"][term], rtol=1e-5
    )


def test_same_seed_same_batch_and_different_seed_differs():
    a, b, c = worker(seed=5).sample(), worker(seed=5).sample(), worker(seed=6).sample()
    for key in ("obs", "actions", "rewards", "action_logp"):
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["obs"], c["obs"])


def test_episode_metrics_sum_rewards():
    w = worker(rollout_fragment_length=200)
    batch = w.sample()
    metrics = w.get_metrics()
    completed = [t for t in batch.split_by_episode() if t["dones"][-1] and t["t"][0] == 0]
    assert len(completed) > 0
    # every episode completed in the batch is reported (a few more may have ended in
    # steps already taken for the next fragment)
    reported = Counter(metrics["episode_returns"].tolist())
    assert not Counter(float(t["rewards"].sum()) for t in completed) - reported
    assert np.all(metrics["episode_lengths"] == metrics["episode_returns"])  # CartPole: 1/step
    assert w.get_metrics()["episode_returns"].size == 0  # popped


class CounterPolicy(Policy):
    """Carries a step counter as recurrent state and emits an extra column."""

    def get_initial_state(self):
        return [np.zeros((), dtype=np.float32)]

    def compute_actions(self, obs_batch, state_batches=None, **kwargs):
        n = len(obs_batch)
        counter = state_batches[0]
        actions = np.zeros(n, dtype=np.int64)
        return actions, [counter + 1], {"double_counter": 2 * counter}


def test_recurrent_state_and_extra_outputs_become_columns():
    batch = worker(policy=CounterPolicy, rollout_fragment_length=40).sample()
    np.testing.assert_array_equal(batch["state_out_0"], batch["state_in_0"] + 1)
    np.testing.assert_array_equal(batch["state_in_0"], batch["t"])  # reset at episode start
    np.testing.assert_array_equal(batch["double_counter"], 2 * batch["state_in_0"])


class ContextEnv(gym.Env):
    observation_space = gym.spaces.Box(-1, 1, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, context):
        self.value = float(context["value"])
        self.worker_index = context.worker_index
        self.vector_index = context.vector_index

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([self.value], dtype=np.float32), {"vector_index": self.vector_index}

    def step(self, action):
        obs = np.array([self.value], dtype=np.float32)
        return obs, 1.0, False, False, {"vector_index": self.vector_index}


def test_register_env_with_env_config_and_infos():
    register_env("context_env", ContextEnv)
    w = worker(
        env="context_env",
        env_config={"value": 0.25},
        num_envs_per_worker=3,
        rollout_fragment_length=4,
    )
    batch = w.sample()
    assert np.all(batch["obs"] == 0.25)
    assert [info["vector_index"] for info in batch["infos"][batch["env_id"] == 2]] == [2] * 4


def test_unknown_env_suggests_close_names():
    with pytest.raises(ValueError, match="CartPole-v1"):
        worker(env="CartPole-v7")


def test_bad_batch_mode():
    with pytest.raises(ValueError, match="truncate_episodes"):
        worker(batch_mode="whole")


def test_continuous_actions_are_clipped_for_the_env_only():
    w = worker(env="Pendulum-v1", rollout_fragment_length=10)
    batch = w.sample()
    assert batch["actions"].shape == (40, 1)
    assert batch[SampleBatch.ACTIONS].dtype == np.float32
