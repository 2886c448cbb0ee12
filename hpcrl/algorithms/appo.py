"""APPO: asynchronous PPO, on IMPALA's architecture.

PPO's clipped surrogate on the batches of ``AsyncSamplesOptimizer`` (rollout
workers sampling without pause, a learner thread on the driver):

    -mean(min(r A, clip(r, 1-eps, 1+eps) A)) + vf_loss_coeff * 0.5 * mean((V - target)^2)
        - entropy_coeff * mean(H) [+ kl_coeff * KL(target policy || pi)]

- ``vtrace: false`` (the default, as RLlib's): ``A`` and the value targets
  are GAE's, computed on the workers; ``r = pi(a|x) / mu(a|x)`` against the
  sampling policy ``mu``.
- ``vtrace: true``: ``A`` and the value targets come from V-trace, with a
  target network (a copy of the policy, refreshed every
  ``target_update_frequency`` learner updates) as the target policy of the
  importance ratios; ``r = pi(a|x) / pi_target(a|x)``.
- ``use_kl_loss``: add ``kl_coeff * KL(pi_target || pi)``, ``kl_coeff``
  adapting toward ``kl_target`` after every update, as PPO's.

DESIGN.md's layout puts APPO in ``impala.py``; it has a module of its own
because its loss, target-network mixin and config are its own (it takes the
asynchronous architecture, V-trace and the optimizer from ``impala``).

A resumed run continues from the saved weights, target network, optimizer
state and counters, but not bit for bit (arrival order depends on timing).

Example:
    >>> with APPOTrainer({"num_workers": 2, "train_batch_size": 100, "vtrace": True,
    ...                   "rollout_fragment_length": 50}, env="CartPole-v1") as trainer:
    ...     result = trainer.train()
    >>> "kl" in result["info"]["learner"]["default_policy"]
    True
"""

from __future__ import annotations

from typing import Any

import torch

from hpcrl.algorithms.actor_critic import explained_variance, vf_preds_fetches
from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.impala import (
    ASYNC_DEFAULTS,
    LEARNER_DEFAULTS,
    make_async_optimizer,
    make_optimizer,
    validate_async_config,
    vtrace_targets,
)
from hpcrl.algorithms.ppo import KLCoeffMixin, ppo_stats, setup_kl
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.postprocessing import Postprocessing, compute_gae_for_sample_batch
from hpcrl.policy.loss_output import LEARNER_STATS_KEY, LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.schedules import LearningRateSchedule
from hpcrl.policy.target_network import TargetNetworkMixin, frozen_copy

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        **ASYNC_DEFAULTS,
        **LEARNER_DEFAULTS,
        # V-trace advantages with a target network (True) or GAE (False).
        "vtrace": False,
        # GAE (vtrace False).
        "use_critic": True,
        "use_gae": True,
        "lambda": 1.0,
        # Surrogate clipping epsilon.
        "clip_param": 0.4,
        # KL(target policy || policy) penalty, its initial weight and target.
        "use_kl_loss": False,
        "kl_coeff": 1.0,
        "kl_target": 0.01,
        # Learner updates between refreshes of the target network.
        "target_update_frequency": 1,
    }
)


def appo_loss(policy, model, dist_class, batch: SampleBatch) -> LossOutput:
    """The clipped surrogate with V-trace or GAE advantages (see the module docstring)."""
    config = policy.config
    logits, _ = model.from_batch(batch)
    values = model.value_function()
    dist = dist_class(logits, model)
    logp = dist.logp(batch[SampleBatch.ACTIONS])
    with torch.no_grad():
        target_logits, _ = policy.target_model.from_batch(batch)
        target_dist = dist_class(target_logits, policy.target_model)
    if config["vtrace"]:
        target_logp = target_dist.logp(batch[SampleBatch.ACTIONS])
        value_targets, advantages = vtrace_targets(policy, model, batch, values, target_logp)
        ratio = torch.exp(logp - target_logp)
    else:
        advantages = batch[Postprocessing.ADVANTAGES]
        value_targets = batch[Postprocessing.VALUE_TARGETS]
        ratio = torch.exp(logp - batch[SampleBatch.ACTION_LOGP])
    clip = config["clip_param"]
    surrogate = torch.min(advantages * ratio, advantages * torch.clamp(ratio, 1 - clip, 1 + clip))
    policy_loss = -surrogate.mean()
    vf_loss = 0.5 * ((values - value_targets) ** 2).mean()
    entropy = dist.entropy().mean()
    kl = target_dist.kl(dist).mean()
    total = policy_loss + config["vf_loss_coeff"] * vf_loss - config["entropy_coeff"] * entropy
    if config["use_kl_loss"]:
        total = total + policy.kl_coeff * kl
    return LossOutput(
        total,
        terms={
            "policy_loss": policy_loss,
            "vf_loss": vf_loss,
            "entropy": entropy,
            "kl": kl,
            "vf_explained_var": explained_variance(value_targets, values.detach()),
        },
    )


def postprocess_appo(policy, batch, other_agent_batches=None, episode=None):
    """GAE advantages on the worker when ``vtrace`` is off; V-trace needs none."""
    if policy.config["vtrace"]:
        return batch
    return compute_gae_for_sample_batch(policy, batch, other_agent_batches, episode)


class APPOUpdatesMixin:
    """After every update: ``kl_coeff`` adapted (``use_kl_loss``) and, every
    ``target_update_frequency`` updates, the target network refreshed; the count of
    updates kept in the policy's state."""

    def learn_on_batch(self, samples, **kwargs):
        result = super().learn_on_batch(samples, **kwargs)
        self.num_updates += 1
        if self.config["use_kl_loss"]:
            self.update_kl(result[LEARNER_STATS_KEY]["kl"])
        if self.num_updates % self.config["target_update_frequency"] == 0:
            self.update_target(tau=1.0)
        return result

    def get_state(self, include_optimizer: bool = True) -> dict[str, Any]:
        return {**super().get_state(include_optimizer), "num_updates": self.num_updates}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.num_updates = int(state.get("num_updates", self.num_updates))


def setup_appo(policy, obs_space, action_space, config) -> None:
    """``before_loss_init``: the target network and the KL coefficient."""
    if config["target_update_frequency"] < 1:
        raise ValueError(
            f"target_update_frequency must be >= 1, got {config['target_update_frequency']}"
        )
    policy.target_model = frozen_copy(policy.model)
    policy.num_updates = 0
    setup_kl(policy, obs_space, action_space, config)


APPOTorchPolicy = build_torch_policy(
    "APPOTorchPolicy",
    loss_fn=appo_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    stats_fn=ppo_stats,
    postprocess_fn=postprocess_appo,
    extra_action_out_fn=vf_preds_fetches,
    before_loss_init=setup_appo,
    optimizer_fn=make_optimizer,
    mixins=[APPOUpdatesMixin, TargetNetworkMixin, KLCoeffMixin, LearningRateSchedule],
)


def validate_config(config: dict[str, Any]) -> None:
    validate_async_config(config)
    if not config["vtrace"] and config["use_gae"] and not config["use_critic"]:
        raise ValueError("use_gae=True needs use_critic=True; set one of them differently")


APPOTrainer = build_trainer(
    "APPO",
    APPOTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_async_optimizer,
    validate_config=validate_config,
)
