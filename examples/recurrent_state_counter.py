"""Recurrent state: a policy that carries a step counter from step to step.

``CounterPolicy`` declares one state tensor (``get_initial_state`` returns a
scalar 0). Each call of ``compute_actions`` receives the current counter of
every env as ``state_batches[0]``, acts on it (left on even steps, right on odd
ones) and returns the incremented counter as its state output. The rollout
worker feeds the output back in on the next step and resets it to the initial
state whenever an env starts a new episode.

The worker records the state as the batch columns ``state_in_0`` and
``state_out_0``; ``learn_on_batch`` checks them on every train batch: the
output is the input plus one, and the input equals the ``t`` column (the step
within the episode), i.e. the counter restarted at 0 at every episode start,
in every env, across fragment boundaries. The script exits non-zero if any
row breaks this.

Run:
    python examples/recurrent_state_counter.py
    python examples/recurrent_state_counter.py --iterations 3 --num-workers 2
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from hpcrl.algorithms.config import with_common_config
from hpcrl.algorithms.trainer_template import build_trainer
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch


class CounterPolicy(Policy):
    """Counts the steps of the current episode in its recurrent state.

    Example:
        >>> policy = CounterPolicy(None, None, {})
        >>> actions, [counter], _ = policy.compute_actions(np.zeros((3, 4)), [np.array([0, 1, 5])])
        >>> actions.tolist(), counter.tolist()
        ([0, 1, 1], [1.0, 2.0, 6.0])
    """

    def __init__(self, observation_space: Any, action_space: Any, config: dict[str, Any]) -> None:
        super().__init__(observation_space, action_space, config)
        self.rows_checked = 0
        self.episode_starts = 0
        self.bad_rows = 0

    def get_initial_state(self) -> list[np.ndarray]:
        return [np.zeros((), dtype=np.float32)]

    def compute_actions(
        self,
        obs_batch: np.ndarray,
        state_batches: list[np.ndarray] | None = None,
        **kwargs: Any,
    ) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        (counter,) = state_batches
        actions = counter.astype(np.int64) % 2
        return actions, [(counter + 1).astype(np.float32)], {}

    def learn_on_batch(self, samples: SampleBatch) -> dict[str, Any]:
        state_in = samples["state_in_0"]
        state_out = samples["state_out_0"]
        t = samples[SampleBatch.T]
        bad = (
            (state_out != state_in + 1) | (state_in != t) | (samples[SampleBatch.ACTIONS] != t % 2)
        )
        self.rows_checked += samples.count
        self.episode_starts += int((t == 0).sum())
        self.bad_rows += int(bad.sum())
        return {
            "rows_checked": self.rows_checked,
            "episode_starts": self.episode_starts,
            "bad_rows": self.bad_rows,
            "max_counter": float(state_out.max()),
        }


CounterAgent = build_trainer(
    "CounterAgent",
    CounterPolicy,
    default_config=with_common_config(
        {"num_envs_per_worker": 4, "rollout_fragment_length": 25, "train_batch_size": 200}
    ),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="CartPole-v1", help="gymnasium env id")
    parser.add_argument("--iterations", type=int, default=10, help="train() calls")
    parser.add_argument("--num-workers", type=int, default=0, help="remote rollout workers")
    parser.add_argument("--num-envs", type=int, default=4, help="envs per worker")
    parser.add_argument("--seed", type=int, default=0, help="seed of the envs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = {
        "num_workers": args.num_workers,
        "num_envs_per_worker": args.num_envs,
        "seed": args.seed,
    }
    with CounterAgent(config, env=args.env) as trainer:
        for _ in range(args.iterations):
            result = trainer.train()
            stats = result["info"]["learner"]["default_policy"]
            print(
                f"iter {result['training_iteration']:3d}  "
                f"rows_checked {stats['rows_checked']:6d}  "
                f"episode_starts {stats['episode_starts']:4d}  "
                f"max_counter {stats['max_counter']:4.0f}  "
                f"bad_rows {stats['bad_rows']}"
            )
        # Outside a worker the caller carries the state: feed state_out back in.
        obs = np.zeros(4, dtype=np.float32)
        _, state, _ = trainer.compute_single_action(obs, state=[np.float32(41)])
        _, state, _ = trainer.compute_single_action(obs, state=state)
    counter = float(state[0])
    if stats["bad_rows"] or not stats["episode_starts"] or counter != 43:
        print(
            f"FAIL: {stats['bad_rows']} rows with a wrong counter, "
            f"{stats['episode_starts']} episode starts seen, counter after 41+2 steps {counter}",
            file=sys.stderr,
        )
        return 1
    print(
        f"OK: state_in_0 == t and state_out_0 == state_in_0 + 1 on all "
        f"{stats['rows_checked']} rows ({stats['episode_starts']} episode starts)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
