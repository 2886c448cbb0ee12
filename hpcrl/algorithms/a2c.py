"""A2C: synchronous advantage actor-critic.

Mnih et al. 2016, synchronous variant: every worker samples a short fragment
with the current weights, the driver learns on the concatenated batch in one
gradient step on policy loss + value loss - entropy bonus, with GAE advantages.
"""

from __future__ import annotations

from typing import Any

import torch

from hpcrl.algorithms.actor_critic import explained_variance, vf_preds_fetches
from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.sgd_optimizer import make_sgd_optimizer
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.postprocessing import Postprocessing, compute_gae_for_sample_batch
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        # Learn a critic and use it for advantages (False: plain returns).
        "use_critic": True,
        # Generalised advantage estimation (needs the critic).
        "use_gae": True,
        # GAE lambda.
        "lambda": 1.0,
        # Weight of the value loss.
        "vf_loss_coeff": 0.5,
        # Weight of the entropy bonus.
        "entropy_coeff": 0.01,
        "grad_clip": 40.0,
        "lr": 1e-3,
        "rollout_fragment_length": 20,
        "num_envs_per_worker": 8,
        "train_batch_size": 160,
        # Scale advantages to zero mean and unit variance over each train batch.
        "standardize_advantages": False,
    }
)


def a2c_loss(policy, model, dist_class, train_batch: SampleBatch) -> LossOutput:
    """Policy loss + vf_loss_coeff * value loss - entropy_coeff * entropy."""
    config = policy.config
    logits, _ = model.from_batch(train_batch)
    dist = dist_class(logits, model)
    logp = dist.logp(train_batch[SampleBatch.ACTIONS])
    policy_loss = -(logp * train_batch[Postprocessing.ADVANTAGES]).mean()
    entropy = dist.entropy().mean()
    total = policy_loss - config["entropy_coeff"] * entropy
    stats = {"policy_loss": policy_loss, "entropy": entropy}
    if config["use_critic"]:
        values = model.value_function()
        targets = train_batch[Postprocessing.VALUE_TARGETS]
        vf_loss = 0.5 * torch.mean((values - targets) ** 2)
        total = total + config["vf_loss_coeff"] * vf_loss
        stats["vf_loss"] = vf_loss
        stats["vf_explained_var"] = explained_variance(targets, values.detach())
    return LossOutput(total, terms=stats)


A2CTorchPolicy = build_torch_policy(
    "A2CTorchPolicy",
    loss_fn=a2c_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    postprocess_fn=compute_gae_for_sample_batch,
    extra_action_out_fn=vf_preds_fetches,
)


def validate_config(config: dict[str, Any]) -> None:
    if config["use_gae"] and not config["use_critic"]:
        raise ValueError("use_gae=True needs use_critic=True; set one of them differently")


A2CTrainer = build_trainer(
    "A2C",
    A2CTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_sgd_optimizer,
    validate_config=validate_config,
)
