"""DD-PPO on a real Dask LocalCluster: two worker processes learn in one gloo group."""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest

from hpcrl.algorithms.ddppo import DDPPOTrainer, DDPPOWorker

pytest.importorskip("distributed")


@pytest.mark.parametrize(
    "model",
    [
        {"fcnet_hiddens": [8]},
        # A recurrent policy: each worker's minibatches are whole sequences, as many
        # on every worker (one all-reduce each).
        {"fcnet_hiddens": [8], "use_lstm": True, "lstm_cell_size": 8, "max_seq_len": 8},
    ],
)
def test_two_dask_workers_learn_together_and_hold_the_same_weights(dask_cluster, model):
    config = {
        "backend": "dask",
        "dask_address": dask_cluster.scheduler_address,
        "num_workers": 2,
        "rollout_fragment_length": 32,
        "num_envs_per_worker": 2,
        "sgd_minibatch_size": 16,
        "num_sgd_iter": 2,
        "model": model,
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


class RecordingWorker(DDPPOWorker):
    """Keeps what it learned on, its weights before, and its gradients right after
    the all-reduce."""

    def join(self, *args, **kwargs):
        super().join(*args, **kwargs)
        learner, reduce = self.learner, self.learner._all_reduce

        def recording(parameters, rows):
            reduce(parameters, rows)
            self.reduced = [p.grad.detach().clone().numpy() for p in parameters]

        learner._all_reduce = recording

    def sample_and_learn(self, *args, **kwargs):
        self.before = self.get_policy().get_weights()
        real_learn = self.learner.learn

        def learn(shards):
            self.shard = {pid: rows.copy() for pid, (rows, _) in shards.items()}
            return real_learn(shards)

        self.learner.learn = learn
        try:
            return super().sample_and_learn(*args, **kwargs)
        finally:
            self.learner.learn = real_learn

    def recorded(self):
        return self.before, self.shard["default_policy"], self.reduced


def test_reduced_gradients_are_the_gradient_of_the_mean_loss_over_all_workers(dask_cluster):
    from hpcrl.policy.sample_batch import concat_samples

    class RecordingTrainer(DDPPOTrainer):
        remote_worker_class = RecordingWorker

    config = {
        "backend": "dask",
        "dask_address": dask_cluster.scheduler_address,
        "num_workers": 2,
        "rollout_fragment_length": 16,
        "num_envs_per_worker": 2,
        "sgd_minibatch_size": 1000,  # one minibatch: each worker's whole fragment
        "num_sgd_iter": 1,
        "model": {"fcnet_hiddens": [8]},
        "seed": 0,
    }
    with RecordingTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        (before, rows_a, grads_a), (_, rows_b, grads_b) = trainer.workers.call_remote("recorded")
        policy = trainer.get_policy()
        policy.set_weights(before)
        # the mean loss over the union: each worker's mean loss weighted by its rows
        total = sum(
            policy.compute_loss(rows)[0].total * rows.count for rows in (rows_a, rows_b)
        ) / (rows_a.count + rows_b.count)
        policy.model.zero_grad()
        total.backward()
        expected = [p.grad.numpy() for p in policy.learned_parameters()]
    assert len(concat_samples([rows_a, rows_b])) == rows_a.count + rows_b.count
    for mine, theirs, wanted in zip(grads_a, grads_b, expected):
        np.testing.assert_array_equal(mine, theirs)
        np.testing.assert_allclose(mine, wanted, rtol=1e-4, atol=1e-6)


class SlowOnWorkerTwo(gym.Wrapper):
    """CartPole whose steps take 5 ms on worker 2: the straggler."""

    def __init__(self, context):
        super().__init__(gym.make("CartPole-v1"))
        self.slow = context.worker_index == 2

    def step(self, action):
        if self.slow:
            time.sleep(0.005)
        return self.env.step(action)


def test_the_straggler_stops_sampling_once_the_others_are_done(dask_cluster):
    from hpcrl.env.registry import register_env

    register_env("straggler_cartpole", SlowOnWorkerTwo)
    config = {
        "backend": "dask",
        "dask_address": dask_cluster.scheduler_address,
        "env": "straggler_cartpole",
        "num_workers": 2,
        "rollout_fragment_length": 64,
        "num_envs_per_worker": 1,
        "sgd_minibatch_size": 16,
        "num_sgd_iter": 1,
        "preemption_fraction": 0.5,
        "preemption_min_fraction": 0.25,
        "preemption_chunks": 4,
        "model": {"fcnet_hiddens": [8]},
        "seed": 0,
    }
    with DDPPOTrainer(config) as trainer:
        for _ in range(2):
            result = trainer.train()
        first, second = trainer.workers.call_remote("get_policy_states")
    for key, value in first["default_policy"]["weights"].items():
        np.testing.assert_array_equal(second["default_policy"]["weights"][key], value)
    info = result["info"]
    # the slow worker stopped after a quarter or more of its 64 steps, never before
    assert 0 < info["num_steps_cut_short"] <= 2 * 48
    assert result["timesteps_total"] >= 2 * (64 + 16)
