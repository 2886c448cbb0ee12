"""PG: vanilla policy gradient (REINFORCE) with discounted returns as advantages.

Williams 1992. Each iteration samples ``train_batch_size`` steps, computes the
discounted return of every step (no critic, no bootstrapping) and takes one
gradient step on ``-mean(log pi(a|s) * advantage)``.
"""

from __future__ import annotations

from typing import Any

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.sgd_optimizer import make_sgd_optimizer
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.postprocessing import Postprocessing, compute_advantages
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        "lr": 1e-3,
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 50,
        "train_batch_size": 400,
        # Scale advantages to zero mean and unit variance over each train batch.
        "standardize_advantages": True,
    }
)


def pg_loss(policy, model, dist_class, train_batch: SampleBatch) -> LossOutput:
    """-E[log pi(a|s) * A]."""
    logits, _ = model.from_batch(train_batch)
    logp = dist_class(logits, model).logp(train_batch[SampleBatch.ACTIONS])
    loss = -(logp * train_batch[Postprocessing.ADVANTAGES]).mean()
    return LossOutput(loss, terms={"policy_loss": loss})


def postprocess_returns(policy, sample_batch, other_agent_batches=None, episode=None):
    """Advantages = discounted returns within each trajectory."""
    return compute_advantages(
        sample_batch, 0.0, policy.config["gamma"], use_gae=False, use_critic=False
    )


PGTorchPolicy = build_torch_policy(
    "PGTorchPolicy",
    loss_fn=pg_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    postprocess_fn=postprocess_returns,
)


PGTrainer = build_trainer(
    "PG",
    PGTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_sgd_optimizer,
)
