"""PPO on CartPole-v1 from Python: train until solved, save results, act greedily.

The same run as ``hpcrl train -f examples/tuned/cartpole-ppo.yaml``, written
with the Python API: a ``PPOTrainer`` with the tuned config, ``train()`` until
the mean return of the last 100 episodes reaches ``--stop-reward``, then a few
greedy episodes with ``compute_single_action``. Exits non-zero if the reward
is not reached within ``--max-timesteps``.

Run:
    python examples/ppo_cartpole.py
    python examples/ppo_cartpole.py --stop-reward 200 --seed 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gymnasium as gym
import yaml

from hpcrl.algorithms.ppo import PPOTrainer

TUNED = Path(__file__).resolve().parent / "tuned" / "cartpole-ppo.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stop-reward", type=float, default=475.0)
    parser.add_argument("--max-timesteps", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=3)
    args = parser.parse_args()

    (experiment,) = yaml.safe_load(TUNED.read_text()).values()
    config = {**experiment["config"], "seed": args.seed}
    with PPOTrainer(config, env="CartPole-v1") as trainer:
        result = {"episode_reward_mean": float("nan"), "timesteps_total": 0}
        while result["timesteps_total"] < args.max_timesteps:
            result = trainer.train()
            learner = result["info"]["learner"]["default_policy"]
            print(
                f"iter {result['training_iteration']:3d}  steps {result['timesteps_total']:7d}  "
                f"reward {result['episode_reward_mean']:6.1f}  kl {learner['kl']:.4f}  "
                f"entropy {learner['entropy']:.3f}",
                flush=True,
            )
            if result["episode_reward_mean"] >= args.stop_reward:
                break
        solved = result["episode_reward_mean"] >= args.stop_reward
        print(
            f"{'solved' if solved else 'NOT solved'}: reward {result['episode_reward_mean']:.1f}"
            f" after {result['timesteps_total']} steps, {result['time_total_s']:.1f}s"
        )

        env = gym.make("CartPole-v1")
        for episode in range(args.eval_episodes):
            obs, _ = env.reset(seed=1000 + episode)
            total, done = 0.0, False
            while not done:
                action = trainer.compute_single_action(obs, explore=False)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += reward
                done = terminated or truncated
            print(f"greedy episode {episode}: return {total:.0f}")
    return 0 if solved else 1


if __name__ == "__main__":
    sys.exit(main())
