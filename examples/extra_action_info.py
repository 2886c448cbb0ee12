"""Extra per-row action outputs: from the forward pass to a train-batch column.

A torch policy built with ``build_torch_policy(..., extra_action_out_fn=...)``
returns, with every batch of actions, an extra output per row: here
``action_prob``, the probability the policy gave the action it sampled. The
rollout worker stores every key of that dict as a batch column of the same
name, so it travels with the experience (through the optimizer's
concatenation and advantage standardisation) and reaches ``learn_on_batch``.

The loss uses it as the behaviour probability mu(a|s) of an importance-
weighted policy gradient: ``rho = min(1, pi(a|s) / action_prob)`` (the
truncated ratio of IMPALA's V-trace) scales each row, correcting rows sampled
by an older copy of the weights. The script trains on CartPole-v1 for a few
iterations, printing the mean ``action_prob`` (it grows as the policy gets
surer) and ``rho``, and checks on every train batch that the column arrived
aligned row by row with the others (``action_prob == exp(action_logp)``); it
exits non-zero if the column was missing or misaligned.

Run:
    python examples/extra_action_info.py
    python examples/extra_action_info.py --iterations 3 --num-workers 2
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.pg import postprocess_returns
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.postprocessing import Postprocessing
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch

ACTION_PROB = "action_prob"

DEFAULT_CONFIG = with_common_config(
    {
        "lr": 1e-3,
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 50,
        "train_batch_size": 400,
        "standardize_advantages": True,
    }
)


def action_prob_fetch(policy, input_dict, state_batches, model, action_dist) -> dict[str, Any]:
    """The probability of each sampled action, stored as the ``action_prob`` column."""
    return {ACTION_PROB: action_dist.sampled_action_logp().exp()}


def importance_weighted_pg_loss(policy, model, dist_class, train_batch: SampleBatch) -> LossOutput:
    """-E[min(1, pi(a|s) / mu(a|s)) * log pi(a|s) * A], mu being ``action_prob``."""
    logits, _ = model({SampleBatch.OBS: train_batch[SampleBatch.OBS]}, [], None)
    logp = dist_class(logits, model).logp(train_batch[SampleBatch.ACTIONS])
    behaviour_prob = train_batch[ACTION_PROB]
    rho = (logp.detach().exp() / behaviour_prob).clamp(max=1.0)
    loss = -(rho * logp * train_batch[Postprocessing.ADVANTAGES]).mean()
    return LossOutput(
        loss,
        terms={
            "policy_loss": loss,
            "mean_action_prob": behaviour_prob.mean(),
            "mean_rho": rho.mean(),
            # Both columns were written by the same forward pass: equal if aligned.
            "max_prob_error": (behaviour_prob - train_batch[SampleBatch.ACTION_LOGP].exp())
            .abs()
            .max(),
        },
    )


ActionProbPolicy = build_torch_policy(
    "ActionProbPolicy",
    loss_fn=importance_weighted_pg_loss,
    get_default_config=lambda: DEFAULT_CONFIG,
    postprocess_fn=postprocess_returns,
    extra_action_out_fn=action_prob_fetch,
)

ActionProbPG = build_trainer(
    "ActionProbPG",
    ActionProbPolicy,
    default_config=DEFAULT_CONFIG,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id")
    parser.add_argument("--iterations", type=int, default=20, help="train() calls")
    parser.add_argument("--num-workers", type=int, default=0, help="remote rollout workers")
    parser.add_argument("--seed", type=int, default=0, help="seed of envs, model and sampling")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    config = {"num_workers": args.num_workers, "seed": args.seed}
    with ActionProbPG(config, env=args.env) as trainer:
        batch = trainer.workers.local_worker().sample()
        print(f"a sampled batch has the column {ACTION_PROB!r}: {ACTION_PROB in batch}")
        for _ in range(args.iterations):
            result = trainer.train()
            stats = result["info"]["learner"]["default_policy"]
            print(
                f"iter {result['training_iteration']:3d}  "
                f"episode_reward_mean {result['episode_reward_mean']:6.2f}  "
                f"mean_action_prob {stats['mean_action_prob']:.3f}  "
                f"mean_rho {stats['mean_rho']:.4f}  "
                f"max_prob_error {stats['max_prob_error']:.1e}"
            )
            if not stats["max_prob_error"] < 1e-6:
                print(f"FAIL: {ACTION_PROB!r} is not aligned with action_logp", file=sys.stderr)
                return 1
    print(f"OK: {ACTION_PROB!r} reached learn_on_batch aligned with the other columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
