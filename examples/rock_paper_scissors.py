"""Rock-paper-scissors: a learned PPO policy against scripted opponents.

Two players play 10 simultaneous rounds per episode; a round won gives +1,
lost -1, drawn 0. Each player observes the opponent's previous move (3 before
the first round). ``player_0`` plays the learned policy; ``player_1`` plays a
scripted one (not trained, ``policies_to_train=["learned"]``):

- ``always_same``: picks a move at the start of each episode and keeps it (the
  move is its recurrent state, so it is a policy with state and no weights);
- ``beat_last``: plays the move that beats the learned player's previous move.

Against ``always_same`` the learned policy should learn to beat the move it
just saw: 9 of 10 rounds won after the first. The script trains until its
mean episode reward against the opponent (``policy_reward_mean/learned``)
reaches ``--stop-reward`` or ``--stop-timesteps`` env steps have been sampled,
and exits 1 if the reward was not reached.

    python examples/rock_paper_scissors.py --opponent always_same
    python examples/rock_paper_scissors.py --opponent mixed --num-workers 2 --backend dask
"""

from __future__ import annotations

import argparse
import random
from typing import Any

import gymnasium as gym
import numpy as np

from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.env import MultiAgentEnv
from hpcrl.policy.policy import Policy

ROCK, PAPER, SCISSORS, NONE = 0, 1, 2, 3
BEATS = np.array([PAPER, SCISSORS, ROCK])  # BEATS[m]: the move that beats m


class RockPaperScissors(MultiAgentEnv):
    """Two players, ``rounds`` simultaneous rounds; observation: the opponent's last move."""

    possible_agents = ["player_0", "player_1"]
    observation_space = gym.spaces.Discrete(4)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.rounds = int((config or {}).get("rounds", 10))
        self.round = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.round = 0
        return {agent: NONE for agent in self.possible_agents}, {}

    def step(self, action_dict: dict[str, int]):
        move_0, move_1 = int(action_dict["player_0"]), int(action_dict["player_1"])
        self.round += 1
        reward = 0.0 if move_0 == move_1 else (1.0 if BEATS[move_1] == move_0 else -1.0)
        obs = {"player_0": move_1, "player_1": move_0}
        rewards = {"player_0": reward, "player_1": -reward}
        done = self.round >= self.rounds
        return obs, rewards, {"__all__": done}, {"__all__": False}, {}


class AlwaysSame(Policy):
    """Keeps the move drawn at the start of the episode (its recurrent state)."""

    def get_initial_state(self) -> list[np.ndarray]:
        return [np.asarray(self.np_random.integers(3), dtype=np.int64)]

    def compute_actions(self, obs_batch, state_batches=None, **kwargs):
        (moves,) = state_batches
        return moves.copy(), [moves], {}


class BeatLast(Policy):
    """Plays the move that beats the opponent's previous move (random at first)."""

    def compute_actions(self, obs_batch, state_batches=None, **kwargs):
        last = np.asarray(obs_batch)
        random_moves = self.np_random.integers(3, size=len(last))
        return np.where(last == NONE, random_moves, BEATS[np.minimum(last, 2)]), [], {}


def mapping_for(opponent: str):
    """``policy_mapping_fn``: player_0 learns; player_1 plays ``opponent`` (``mixed``:
    a scripted opponent drawn per episode)."""

    def policy_mapping_fn(agent_id, episode, worker, **kwargs):
        if agent_id == "player_0":
            return "learned"
        if opponent == "mixed":
            return random.Random(episode.episode_id).choice(["always_same", "beat_last"])
        return opponent

    return policy_mapping_fn


def make_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "env": lambda env_config: RockPaperScissors(env_config),
        "num_workers": args.num_workers,
        "backend": args.backend,
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 50,
        "train_batch_size": 2000,
        "sgd_minibatch_size": 500,
        "num_sgd_iter": 10,
        "lr": 3e-3,
        "entropy_coeff": 0.0,
        "model": {"fcnet_hiddens": [32]},
        "seed": args.seed,
        "multiagent": {
            "policies": {
                "learned": (None, None, None, {}),
                "always_same": (AlwaysSame, None, None, {}),
                "beat_last": (BeatLast, None, None, {}),
            },
            "policy_mapping_fn": mapping_for(args.opponent),
            "policies_to_train": ["learned"],
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--opponent", choices=["always_same", "beat_last", "mixed"], default="always_same"
    )
    parser.add_argument("--stop-reward", type=float, default=5.0)
    parser.add_argument("--stop-timesteps", type=int, default=100_000)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--backend", choices=["local", "dask", "mpi"], default="local")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with PPOTrainer(make_config(args)) as trainer:
        reward = float("nan")
        while True:
            result = trainer.train()
            reward = result["policy_reward_mean"].get("learned", float("nan"))
            print(
                f"iter {result['training_iteration']:3d}  "
                f"timesteps {result['timesteps_total']:7d}  "
                f"policy_reward_mean/learned {reward:6.2f}  "
                f"episode_reward_mean {result['episode_reward_mean']:5.2f}"
            )
            if reward >= args.stop_reward or result["timesteps_total"] >= args.stop_timesteps:
                break
    if reward >= args.stop_reward:
        print(
            f"OK: the learned policy's mean episode reward against {args.opponent} is "
            f"{reward:.2f} >= {args.stop_reward} after {result['timesteps_total']} env steps"
        )
        return 0
    print(f"FAILED: mean episode reward {reward:.2f} < {args.stop_reward}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
