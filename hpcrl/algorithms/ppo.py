"""PPO: proximal policy optimisation with a clipped surrogate and adaptive KL penalty.

Schulman et al. 2017. Each iteration samples ``train_batch_size`` steps,
computes GAE advantages, and runs ``num_sgd_iter`` epochs of minibatch SGD on

    -min(r A, clip(r, 1-eps, 1+eps) A) + kl_coeff KL + vf_loss_coeff L_vf - entropy_coeff H

where ``r`` is the probability ratio to the sampling policy and ``L_vf`` is
the (optionally clipped) value loss. ``kl_coeff`` adapts after every
optimizer step toward ``kl_target``.
"""

from __future__ import annotations

from typing import Any

import torch

from hpcrl.algorithms.actor_critic import explained_variance, vf_preds_fetches
from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.sgd_optimizer import make_sgd_optimizer
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.postprocessing import Postprocessing, compute_gae_for_sample_batch
from hpcrl.policy.loss_output import LEARNER_STATS_KEY, LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.schedules import LearningRateSchedule

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        # Learn a critic (PPO always uses GAE with it).
        "use_critic": True,
        "use_gae": True,
        # GAE lambda.
        "lambda": 0.95,
        # Initial weight of the KL penalty (0 disables it).
        "kl_coeff": 0.2,
        # KL divergence the adaptive penalty aims for.
        "kl_target": 0.01,
        # Rows per SGD minibatch.
        "sgd_minibatch_size": 256,
        # Epochs over each train batch.
        "num_sgd_iter": 4,
        # The defaults of this block are chosen for small envs run without a file
        # (benchmarks/README.md, "Defaults for small envs"): against lr 3e-4, 10
        # epochs of 128 rows and 8 envs x 256 steps they solve CartPole-v1 (475) in
        # 8-11 s instead of 19 s and Acrobot-v1 (-100) in 6-8 s instead of 15 s.
        "lr": 1e-3,
        # [[timestep, lr], ...] piecewise linear; None keeps lr.
        "lr_schedule": None,
        # Weight of the value loss.
        "vf_loss_coeff": 0.5,
        # Weight of the entropy bonus.
        "entropy_coeff": 0.0,
        # Surrogate clipping epsilon.
        "clip_param": 0.2,
        # Clip the value update to this distance from the sampled prediction
        # (in reward units; None: no clipping).
        "vf_clip_param": 10.0,
        "grad_clip": 0.5,
        "num_envs_per_worker": 32,
        "rollout_fragment_length": 64,
        "train_batch_size": 2048,
        # Scale advantages to zero mean and unit variance over each train batch.
        "standardize_advantages": True,
    }
)


def ppo_loss(policy, model, dist_class, train_batch: SampleBatch) -> LossOutput:
    """The PPO objective with its terms (policy, value and KL losses, entropy)."""
    config = policy.config
    logits, _ = model.from_batch(train_batch)
    dist = dist_class(logits, model)
    previous = dist_class(train_batch[SampleBatch.ACTION_DIST_INPUTS], model)
    advantages = train_batch[Postprocessing.ADVANTAGES]
    ratio = torch.exp(
        dist.logp(train_batch[SampleBatch.ACTIONS]) - train_batch[SampleBatch.ACTION_LOGP]
    )
    clip = config["clip_param"]
    surrogate = torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip))
    policy_loss = -surrogate.mean()
    # A term with a zero weight is only reported: computed without building its
    # part of the backward pass (about 4% of a 256-row minibatch's time).
    with torch.set_grad_enabled(torch.is_grad_enabled() and policy.kl_coeff > 0):
        kl = previous.kl(dist).mean()
    with torch.set_grad_enabled(torch.is_grad_enabled() and config["entropy_coeff"] != 0):
        entropy = dist.entropy().mean()

    values = model.value_function()
    targets = train_batch[Postprocessing.VALUE_TARGETS]
    vf_loss = (values - targets) ** 2
    if config["vf_clip_param"] is not None:
        old = train_batch[SampleBatch.VF_PREDS]
        clipped = old + torch.clamp(values - old, -config["vf_clip_param"], config["vf_clip_param"])
        vf_loss = torch.max(vf_loss, (clipped - targets) ** 2)
    vf_loss = 0.5 * vf_loss.mean()

    total = policy_loss + config["vf_loss_coeff"] * vf_loss - config["entropy_coeff"] * entropy
    if policy.kl_coeff > 0:
        total = total + policy.kl_coeff * kl
    terms = {
        "policy_loss": policy_loss,
        "vf_loss": vf_loss,
        "kl": kl,
        "entropy": entropy,
        "vf_explained_var": explained_variance(targets, values.detach()),
    }
    return LossOutput(total, terms=terms)


class KLCoeffMixin:
    """Adaptive KL penalty: ``update_kl(sampled_kl)`` after each optimizer step."""

    def update_kl(self, sampled_kl: float) -> float:
        target = self.config["kl_target"]
        if sampled_kl > 2.0 * target:
            self.kl_coeff *= 1.5
        elif sampled_kl < 0.5 * target:
            self.kl_coeff *= 0.5
        return self.kl_coeff

    def get_state(self, include_optimizer: bool = True) -> dict[str, Any]:
        return {**super().get_state(include_optimizer), "kl_coeff": self.kl_coeff}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.kl_coeff = state.get("kl_coeff", self.kl_coeff)


def setup_kl(policy, obs_space, action_space, config) -> None:
    policy.kl_coeff = float(config["kl_coeff"])


def ppo_stats(policy, train_batch) -> dict[str, Any]:
    return {"cur_kl_coeff": policy.kl_coeff}


PPOTorchPolicy = build_torch_policy(
    "PPOTorchPolicy",
    loss_fn=ppo_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    stats_fn=ppo_stats,
    postprocess_fn=compute_gae_for_sample_batch,
    extra_action_out_fn=vf_preds_fetches,
    before_loss_init=setup_kl,
    mixins=[KLCoeffMixin, LearningRateSchedule],
)


def validate_config(config: dict[str, Any]) -> None:
    if not config["use_critic"] or not config["use_gae"]:
        raise ValueError("PPO needs use_critic=True and use_gae=True")
    if config["sgd_minibatch_size"] > config["train_batch_size"]:
        raise ValueError(
            f"sgd_minibatch_size ({config['sgd_minibatch_size']}) must be <= "
            f"train_batch_size ({config['train_batch_size']}): lower sgd_minibatch_size or "
            "raise train_batch_size"
        )


def update_kl(trainer, fetches: dict[str, Any]) -> None:
    """Adapt each trained policy's KL coefficient from its step's mean KL
    (``after_optimizer_step``)."""

    def update(policy, pid):
        stats = fetches.get(pid, {}).get(LEARNER_STATS_KEY, {})
        if "kl" in stats and policy.kl_coeff > 0:
            policy.update_kl(stats["kl"])

    trainer.workers.local_worker().foreach_trainable_policy(update)


PPOTrainer = build_trainer(
    "PPO",
    PPOTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_sgd_optimizer,
    validate_config=validate_config,
    after_optimizer_step=update_kl,
)
