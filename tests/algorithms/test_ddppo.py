"""DD-PPO on the local backend (one worker): it learns on its worker, checkpoints
worker 0's policy, and refuses what it cannot run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcrl.algorithms.ddppo import DDPPOTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = {
    "num_workers": 1,
    "rollout_fragment_length": 32,
    "num_envs_per_worker": 2,
    "sgd_minibatch_size": 16,
    "num_sgd_iter": 2,
    "model": {"fcnet_hiddens": [8]},
    "seed": 0,
}


def test_the_worker_learns_and_a_checkpoint_holds_its_policy(tmp_path):
    with DDPPOTrainer(SMALL, env="CartPole-v1") as trainer:
        before = trainer.get_policy().get_weights()
        result = trainer.train()
        assert result["info"]["num_steps_trained"] == 64
        assert "policy_loss" in result["info"]["learner"]["default_policy"]
        # the driver's policy does not learn: it stays as it was until it copies worker 0
        for key, value in trainer.get_policy().get_weights().items():
            np.testing.assert_array_equal(value, before[key])
        path = trainer.save(str(tmp_path))
        [worker] = trainer.workers.call_remote("get_policy_states")
        saved = trainer.get_policy().get_state()
    for key, value in worker["default_policy"]["weights"].items():
        np.testing.assert_array_equal(saved["weights"][key], value)
        assert not np.array_equal(value, before[key]) or value.size == 0
    steps = saved["optimizer_state"]["steps"][0]
    assert steps == 8  # 64 rows in minibatches of 16, 2 epochs
    with DDPPOTrainer(SMALL, env="CartPole-v1") as restored:
        restored.restore(path)
        restored.train()  # the worker goes on from the restored policy
        [state] = restored.workers.call_remote("get_policy_states")
    # Adam's step count went on from the checkpoint's, not from a fresh optimizer's
    assert state["default_policy"]["optimizer_state"]["steps"][0] == 2 * steps
    assert restored.optimizer.iteration == 2


@pytest.mark.parametrize(
    "config, message",
    [
        ({"num_workers": 0}, "num_workers >= 1"),
        ({"kl_coeff": 0.2}, "DD-PPO has no KL penalty"),
        ({"batch_mode": "complete_episodes"}, "needs batch_mode 'truncate_episodes'"),
        ({"num_learners": 2}, "DD-PPO's workers are its learners"),
        ({"num_gpus_per_learner": 1}, "num_gpus_per_worker: 1 to put each on a GPU"),
        ({"num_gpus_per_worker": 2}, "num_gpus_per_worker must be 0 .* or 1 .*, got 2"),
        ({"train_batch_size": 63}, "63 is not a multiple of num_envs_per_worker"),
        ({"train_batch_size": 96}, "train_batch_size 96 .* and rollout_fragment_length 32 say"),
    ],
)
def test_what_it_cannot_run_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        DDPPOTrainer({**SMALL, **config}, env="CartPole-v1")


def test_train_batch_size_is_rows_per_worker():
    """RLlib's pendulum-ddppo.yaml gives train_batch_size "per worker"."""
    config = {**SMALL, "train_batch_size": 48}
    del config["rollout_fragment_length"]
    with DDPPOTrainer(config, env="CartPole-v1") as trainer:
        assert trainer.config["rollout_fragment_length"] == 24  # x 2 envs
        assert trainer.train()["info"]["num_steps_trained"] == 48


def test_two_workers_on_the_local_backend_learn_in_child_processes():
    import os

    with DDPPOTrainer({**SMALL, "num_workers": 2}, env="CartPole-v1") as trainer:
        assert type(trainer.workers.backend).__name__ == "ProcessBackend"
        for _ in range(2):
            result = trainer.train()
        assert result["info"]["num_workers_learning"] == 2
        assert result["info"]["learner_backend"] == "gloo"
        pids = trainer.workers.call_remote("apply", lambda worker: os.getpid())
        assert len(set(pids)) == 2 and os.getpid() not in pids
        first, second = trainer.workers.call_remote("get_policy_states")
    for key, value in first["default_policy"]["weights"].items():
        np.testing.assert_array_equal(second["default_policy"]["weights"][key], value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_a_gpu_per_worker_without_one_names_the_key_to_set():
    with pytest.raises(ValueError, match="sees no CUDA device but num_gpus_per_worker=1.*"
                       "set num_gpus_per_worker=0"):  # fmt: skip
        DDPPOTrainer({**SMALL, "num_gpus_per_worker": 1}, env="CartPole-v1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_worker_samples_and_learns_on_its_gpu_and_checkpoints_to_the_cpu(tmp_path):
    config = {**SMALL, "num_gpus_per_worker": 1}
    with DDPPOTrainer(config, env="CartPole-v1") as trainer:
        assert trainer.workers.call_remote("policy_devices") == [{"default_policy": "cuda:0"}]
        result = trainer.train()
        assert result["info"]["worker_devices"] == ["cuda:0"]
        assert result["info"]["num_steps_trained"] == 64
        path = trainer.save(str(tmp_path))  # worker 0's GPU policy copied to the CPU driver
        assert trainer.get_policy().device.type == "cpu"
        [worker] = trainer.workers.call_remote("get_policy_states")
        saved = trainer.get_policy().get_state()
    for key, value in worker["default_policy"]["weights"].items():
        np.testing.assert_array_equal(saved["weights"][key], value)
    with DDPPOTrainer(config, env="CartPole-v1") as restored:
        restored.restore(path)
        restored.train()
        [state] = restored.workers.call_remote("get_policy_states")
    assert state["default_policy"]["optimizer_state"]["steps"][0] == 16


@pytest.mark.parametrize(
    "steps, done, expected",
    [
        (1000, 0, True),  # its whole fragment: always done
        (100, 3, False),  # under the minimum fraction, whoever is done
        (250, 2, False),  # 2 of 4 done: under 60%
        (250, 3, True),  # 3 of 4 done and a quarter sampled
    ],
)
def test_the_straggler_rule(steps, done, expected):
    from hpcrl.algorithms.ddppo import should_stop_sampling

    assert should_stop_sampling(steps, 1000, done, 4, 0.6, 0.25) is expected
    assert should_stop_sampling(steps, 1000, done, 4, 0.0, 0.25) is (steps >= 1000)  # off
