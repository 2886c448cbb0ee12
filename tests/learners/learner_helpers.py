"""Shared pieces of the learner tests: a small PPO policy, a synthetic batch, a failing loss."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from hpcrl.algorithms.ppo import PPOTorchPolicy, ppo_loss
from hpcrl.policy.sample_batch import SampleBatch

OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
ACTION_SPACE = gym.spaces.Discrete(2)
CONFIG = {
    "model": {"fcnet_hiddens": [16, 16]},
    "seed": 3,
    "lr": 0.01,
    "grad_clip": 0.5,
    "kl_coeff": 0.2,
    "entropy_coeff": 0.01,
}


# PPO on CartPole with two learners: from about 17 to over 30 in 10 iterations.
PPO_CARTPOLE = {
    "num_learners": 2,
    "seed": 11,
    "num_envs_per_worker": 16,
    "rollout_fragment_length": 32,
    "train_batch_size": 512,
    "sgd_minibatch_size": 128,
    "num_sgd_iter": 4,
    "lr": 0.004,
    "lambda": 0.9,
    "kl_coeff": 0.2,
    "model": {"fcnet_hiddens": [32, 32]},
    "num_torch_threads": 1,
    "learner_timeout_s": 60.0,
}


def synthetic_batch(rows: int, seed: int = 0) -> SampleBatch:
    """A PPO train batch with random but fixed columns (advantages already standardised)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, 2)).astype(np.float32)
    actions = rng.integers(0, 2, rows)
    logp = logits[np.arange(rows), actions] - np.log(np.exp(logits).sum(axis=1))
    advantages = rng.normal(size=rows).astype(np.float32)
    return SampleBatch(
        {
            "obs": rng.uniform(-1, 1, (rows, 4)).astype(np.float32),
            "actions": actions,
            "action_logp": logp.astype(np.float32),
            "action_dist_inputs": logits,
            "advantages": (advantages - advantages.mean()) / advantages.std(),
            "vf_preds": rng.normal(size=rows).astype(np.float32),
            "value_targets": rng.normal(size=rows).astype(np.float32),
        }
    )


def failing_loss(policy, model, dist_class, train_batch):
    """PPO's loss, except on the learner whose rank is in the environment variable
    ``FAIL_ON_LEARNER``: it raises on its second SGD step (the others are then in
    an all-reduce). An environment variable reaches learners on every backend."""
    import torch.distributed as dist

    policy.steps_taken = getattr(policy, "steps_taken", 0) + 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    if str(rank) == os.environ.get("FAIL_ON_LEARNER") and policy.steps_taken == 2:
        raise ValueError(f"loss failure on learner {rank}")
    return ppo_loss(policy, model, dist_class, train_batch)


FailingPPOPolicy = PPOTorchPolicy.with_updates(name="FailingPPOPolicy", loss_fn=failing_loss)


def driver_state(policy) -> dict:
    """What the DataParallelOptimizer sends the learners: the policy state without
    its optimizer state."""
    state = policy.get_state()
    state.pop("optimizer_state")
    return state


def reference_weights(policy, batch: SampleBatch, sizes, plan) -> dict:
    """Weights of ``policy`` after SGD over ``batch`` alone, one global minibatch per
    step, in the order the learners' ``plan`` makes."""
    from hpcrl.policy.sgd import global_minibatch_order, minibatch_sgd

    minibatch_sgd(policy, batch, global_minibatch_order(plan, sizes))
    return policy.get_weights()
