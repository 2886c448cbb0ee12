"""BC: behaviour cloning, the policy that maximises the likelihood of recorded actions.

Pomerleau 1991; the ``beta = 0`` case of MARWIL (Wang et al. 2018). BC learns
offline: its rollout workers read batches recorded with
``config["output"]`` (by any algorithm) from ``config["input"]`` instead of
stepping envs, and each optimizer step minimises ``-mean(log pi(a|s))`` over
``train_batch_size`` recorded rows in minibatches.

With ``env`` set, every ``evaluation_interval`` iterations the policy plays
``evaluation_num_episodes`` episodes (greedy actions) and the result gains
``evaluation``: ``episode_reward_mean`` and friends. The top-level episode
metrics stay NaN: BC itself plays no episodes.

Example:
    >>> import tempfile
    >>> from hpcrl.algorithms.pg import PGTrainer
    >>> recorded = tempfile.mkdtemp()
    >>> with PGTrainer({"output": recorded, "seed": 0}, env="CartPole-v1") as pg:
    ...     _ = pg.train()
    >>> with BCTrainer({"input": recorded, "evaluation_num_episodes": 2},
    ...                env="CartPole-v1") as bc:
    ...     result = bc.train()
    >>> result["timesteps_total"] >= 2000, result["evaluation"]["episodes"]
    (True, 2)
"""

from __future__ import annotations

from typing import Any

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.sgd_optimizer import make_sgd_optimizer
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch

DEFAULT_CONFIG: dict[str, Any] = with_common_config(
    {
        "lr": 1e-3,
        # Recorded rows per optimizer step.
        "train_batch_size": 2000,
        # Rows per SGD minibatch.
        "sgd_minibatch_size": 250,
        # Epochs over each train batch.
        "num_sgd_iter": 1,
        # Evaluate on env every iteration (Trainer.evaluate; 0: never; none without env).
        "evaluation_interval": 1,
    }
)


def bc_loss(policy, model, dist_class, train_batch: SampleBatch) -> LossOutput:
    """-E[log pi(a|s)] over the recorded (s, a)."""
    logits, _ = model.from_batch(train_batch)
    logp = dist_class(logits, model).logp(train_batch[SampleBatch.ACTIONS])
    loss = -logp.mean()
    return LossOutput(loss, terms={"policy_loss": loss})


BCTorchPolicy = build_torch_policy(
    "BCTorchPolicy", loss_fn=bc_loss, get_default_config=lambda: DEFAULT_CONFIG
)


def validate_config(config: dict[str, Any]) -> None:
    if not config["input"]:
        raise ValueError(
            "BC learns from recorded batches: set config['input'] to a directory of HDF5 "
            "batch files (written by a run with config['output'] = DIR) or a list of them"
        )
    if config["env"] is None:
        # Nothing to evaluate on: BC's default evaluation_interval is 1.
        config["evaluation_interval"] = 0


BCTrainer = build_trainer(
    "BC",
    BCTorchPolicy,
    default_config=DEFAULT_CONFIG,
    make_policy_optimizer=make_sgd_optimizer,
    validate_config=validate_config,
)
