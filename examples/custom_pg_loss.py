"""A policy-gradient algorithm from a loss function and a postprocessor.

``build_torch_policy`` makes a torch policy from two plain functions:

- ``returns_postprocessor`` adds an ``advantages`` column to every sampled
  batch: the discounted return of each step within its trajectory
  (``compute_advantages`` with ``use_gae=False, use_critic=False``);
- ``pg_loss`` is REINFORCE: ``-mean(log pi(a|s) * advantage)``.

``build_trainer`` wraps the policy in a Trainer whose optimizer samples
``train_batch_size`` steps and standardises the advantages before each update.
The script trains on CartPole-v1 until ``episode_reward_mean`` reaches
``--stop-reward`` (150 by default), then shows ``with_updates``: the same
policy with its loss replaced by one with an entropy bonus, in a few lines,
trained the same way. It exits non-zero if either run misses the reward
within ``--max-iterations``.

Run:
    python examples/custom_pg_loss.py
    python examples/custom_pg_loss.py --stop-reward 60 --max-iterations 40
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.evaluation.postprocessing import Postprocessing, compute_advantages
from hpcrl.optimizers import SyncSamplesOptimizer
from hpcrl.policy.loss_output import LossOutput
from hpcrl.policy.policy_template import build_torch_policy
from hpcrl.policy.sample_batch import SampleBatch

DEFAULT_CONFIG = with_common_config(
    {
        "lr": 5e-3,
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 100,
        "train_batch_size": 800,
        # Weight of the entropy bonus (read only by the loss with an entropy term).
        "entropy_coeff": 0.01,
    }
)


def returns_postprocessor(policy, sample_batch, other_agent_batches=None, episode=None):
    """Advantages = discounted returns within each trajectory (no critic, no bootstrap)."""
    return compute_advantages(
        sample_batch, 0.0, gamma=policy.config["gamma"], use_gae=False, use_critic=False
    )


def pg_loss(policy, model, dist_class, train_batch: SampleBatch) -> LossOutput:
    """REINFORCE: -E[log pi(a|s) * A], reported as the learner stat ``policy_loss``."""
    logits, _ = model({SampleBatch.OBS: train_batch[SampleBatch.OBS]}, [], None)
    logp = dist_class(logits, model).logp(train_batch[SampleBatch.ACTIONS])
    loss = -(logp * train_batch[Postprocessing.ADVANTAGES]).mean()
    return LossOutput(loss, terms={"policy_loss": loss})


MyPGPolicy = build_torch_policy(
    "MyPGPolicy",
    loss_fn=pg_loss,
    postprocess_fn=returns_postprocessor,
    get_default_config=lambda: DEFAULT_CONFIG,
)


def make_optimizer(workers, config: dict[str, Any]) -> SyncSamplesOptimizer:
    """Sample ``train_batch_size`` rows; standardise advantages; one update."""
    return SyncSamplesOptimizer(
        workers,
        train_batch_size=config["train_batch_size"],
        standardize_fields=(Postprocessing.ADVANTAGES,),
    )


MyPGTrainer = build_trainer(
    "MyPG", MyPGPolicy, default_config=DEFAULT_CONFIG, make_policy_optimizer=make_optimizer
)


# with_updates: the same policy and trainer with an entropy bonus in the loss.
def pg_loss_with_entropy(policy, model, dist_class, train_batch: SampleBatch) -> LossOutput:
    """REINFORCE minus ``entropy_coeff`` times the policy's mean entropy."""
    logits, _ = model({SampleBatch.OBS: train_batch[SampleBatch.OBS]}, [], None)
    dist = dist_class(logits, model)
    logp = dist.logp(train_batch[SampleBatch.ACTIONS])
    policy_loss = -(logp * train_batch[Postprocessing.ADVANTAGES]).mean()
    entropy = dist.entropy().mean()
    total = policy_loss - policy.config["entropy_coeff"] * entropy
    return LossOutput(total, terms={"policy_loss": policy_loss, "entropy": entropy})


MyPGEntropyPolicy = MyPGPolicy.with_updates(name="MyPGEntropyPolicy", loss_fn=pg_loss_with_entropy)
MyPGEntropyTrainer = MyPGTrainer.with_updates(name="MyPGEntropy", default_policy=MyPGEntropyPolicy)


def train_until(trainer_class: type, config: dict[str, Any], args: argparse.Namespace) -> bool:
    """Train until ``args.stop_reward``; True if it was reached in ``args.max_iterations``."""
    name = trainer_class.__name__
    with trainer_class(config, env=args.env) as trainer:
        for _ in range(args.max_iterations):
            result = trainer.train()
            stats = result["info"]["learner"]["default_policy"]
            extra = f"  entropy {stats['entropy']:.3f}" if "entropy" in stats else ""
            print(
                f"{name} iter {result['training_iteration']:3d}  "
                f"timesteps {result['timesteps_total']:6d}  "
                f"episode_reward_mean {result['episode_reward_mean']:6.2f}{extra}"
            )
            if result["episode_reward_mean"] >= args.stop_reward:
                print(
                    f"{name} reached {args.stop_reward} in "
                    f"{result['training_iteration']} iterations "
                    f"({result['time_total_s']:.1f} s)"
                )
                return True
    print(f"{name} did not reach {args.stop_reward} in {args.max_iterations} iterations")
    return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id")
    parser.add_argument("--stop-reward", type=float, default=150.0, help="target reward mean")
    parser.add_argument("--max-iterations", type=int, default=100, help="give up after this")
    parser.add_argument("--num-workers", type=int, default=0, help="remote rollout workers")
    parser.add_argument("--seed", type=int, default=0, help="seed of envs, model and sampling")
    parser.add_argument(
        "--skip-entropy", action="store_true", help="do not train the entropy-bonus variant"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    config = {"num_workers": args.num_workers, "seed": args.seed}
    ok = train_until(MyPGTrainer, config, args)
    if not args.skip_entropy:
        ok = train_until(MyPGEntropyTrainer, config, args) and ok
    if not ok:
        print("FAIL: the target reward was not reached", file=sys.stderr)
        return 1
    print("OK: custom policy gradient reached the target reward")
    return 0


if __name__ == "__main__":
    sys.exit(main())
