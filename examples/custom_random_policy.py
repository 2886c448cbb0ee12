"""A framework-agnostic Policy written from scratch, run by a Trainer.

``RandomPolicy`` subclasses ``hpcrl.policy.policy.Policy`` directly (no torch,
no model) and draws the actions of every env of a worker in one vectorised
call. ``build_trainer`` turns it into an algorithm, ``RandomAgent``, whose
optimizer is the stock ``SyncSamplesOptimizer``: it gathers
``train_batch_size`` rows per step and hands them to ``learn_on_batch``, which
for a policy that does not learn returns no stats. (The base
``Policy.learn_on_batch`` calls ``compute_gradients``, which raises for a
policy without a loss; overriding ``learn_on_batch`` is what makes a
non-learning policy usable with the stock optimizers.)

A random agent on CartPole-v1 balances the pole for about 22 steps, so
``episode_reward_mean`` stays near 22; the script exits non-zero if it does not.

Run:
    python examples/custom_random_policy.py
    python examples/custom_random_policy.py --iterations 3 --num-workers 2
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.optimizers import SyncSamplesOptimizer
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch


class RandomPolicy(Policy):
    """Uniformly random actions for a Discrete or Box action space.

    Example:
        >>> obs_space = gym.spaces.Box(-1.0, 1.0, (4,))
        >>> policy = RandomPolicy(obs_space, gym.spaces.Discrete(2), {"seed": 0})
        >>> actions, state_out, extra = policy.compute_actions(np.zeros((8, 4)))
        >>> actions.shape, state_out, extra
        ((8,), [], {})
    """

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: dict[str, Any]
    ) -> None:
        if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(
                f"RandomPolicy supports Discrete and Box action spaces, got {action_space}"
            )
        super().__init__(observation_space, action_space, config)

    def compute_actions(
        self,
        obs_batch: np.ndarray,
        state_batches: list[np.ndarray] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        n = len(obs_batch)
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):
            actions = space.start + self.np_random.integers(space.n, size=n)
        else:
            actions = self.np_random.uniform(space.low, space.high, size=(n, *space.shape))
        return actions.astype(space.dtype), [], {}

    def learn_on_batch(self, samples: SampleBatch) -> dict[str, Any]:
        # Nothing to learn; report what was seen so the result shows the batch arrived.
        return {"rows_seen": samples.count}


def make_sampling_optimizer(workers, config: dict[str, Any]) -> SyncSamplesOptimizer:
    """Gather ``train_batch_size`` rows per step; ``learn_on_batch`` above ignores them."""
    return SyncSamplesOptimizer(workers, train_batch_size=config["train_batch_size"])


RandomAgent = build_trainer(
    "RandomAgent",
    RandomPolicy,
    default_config=with_common_config(
        {"num_envs_per_worker": 8, "rollout_fragment_length": 50, "train_batch_size": 400}
    ),
    make_policy_optimizer=make_sampling_optimizer,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id")
    parser.add_argument("--iterations", type=int, default=10, help="train() calls")
    parser.add_argument("--num-workers", type=int, default=0, help="remote rollout workers")
    parser.add_argument("--num-envs", type=int, default=8, help="envs per worker")
    parser.add_argument("--seed", type=int, default=0, help="seed of envs and actions")
    parser.add_argument(
        "--expected-reward",
        type=float,
        nargs=2,
        default=(12.0, 35.0),
        metavar=("LOW", "HIGH"),
        help="range episode_reward_mean must end in (random CartPole-v1: about 22)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = {
        "num_workers": args.num_workers,
        "num_envs_per_worker": args.num_envs,
        "seed": args.seed,
    }
    with RandomAgent(config, env=args.env) as trainer:
        for _ in range(args.iterations):
            result = trainer.train()
            learner = result["info"]["learner"]["default_policy"]
            print(
                f"iter {result['training_iteration']:3d}  "
                f"timesteps {result['timesteps_total']:6d}  "
                f"episodes {result['episodes_total']:4d}  "
                f"episode_reward_mean {result['episode_reward_mean']:6.2f}  "
                f"rows_seen {learner['rows_seen']}"
            )
        has_weights = bool(trainer.get_weights()["default_policy"])
    mean = result["episode_reward_mean"]
    low, high = args.expected_reward
    if has_weights or not low <= mean <= high:
        print(f"FAIL: episode_reward_mean {mean:.2f} not in [{low}, {high}]", file=sys.stderr)
        return 1
    print(f"OK: random policy, episode_reward_mean {mean:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
