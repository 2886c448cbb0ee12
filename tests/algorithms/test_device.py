"""The learner's device: num_gpus / device put the driver's policy on a GPU while the
remote rollout workers act on the CPU; without CUDA the GPU tests skip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcrl.algorithms.ppo import PPOTrainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
@pytest.mark.parametrize("config", [{"num_gpus": 1}, {"device": "cuda"}, {"num_gpus": 0.2}])
def test_asking_for_a_gpu_without_one_names_the_fix(config):
    with pytest.raises(ValueError, match="asks for a GPU, but torch .* sees none.*num_gpus: 0"):
        PPOTrainer(config, env="CartPole-v1")


@needs_cuda
@pytest.mark.parametrize("model", [{}, {"use_lstm": True, "lstm_cell_size": 16}])
def test_the_driver_learns_on_the_gpu_and_remote_workers_act_on_the_cpu(model):
    trainer = PPOTrainer(
        {
            "num_gpus": 1,
            "num_workers": 1,
            "num_envs_per_worker": 2,
            "rollout_fragment_length": 32,
            "train_batch_size": 64,
            "sgd_minibatch_size": 32,
            "model": {"fcnet_hiddens": [16], **model},
        },
        env="CartPole-v1",
    )
    try:
        local = trainer.get_policy()
        assert next(local.model.parameters()).device.type == "cuda"
        [remote] = trainer.workers.remote_workers()
        backend = trainer.workers.backend
        [device] = backend.get(
            backend.call(
                [remote], "apply", lambda w: str(next(w.get_policy().model.parameters()).device)
            )
        )
        assert device == "cpu"
        result = trainer.train()
        assert np.isfinite(result["info"]["learner"]["default_policy"]["total_loss"])
    finally:
        trainer.stop()
