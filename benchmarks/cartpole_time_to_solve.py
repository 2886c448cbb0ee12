"""CartPole time to solve: hpcrl PPO against Stable-Baselines3 PPO, each tuned.

For each seed and each system this starts a fresh Python process, trains PPO
on CartPole-v1 until the mean return of the last 100 training episodes
reaches 475, and times the process from spawn to exit in this (parent)
process, so imports, env and model construction all count.

- **hpcrl** runs the real command
  ``hpcrl train -f examples/tuned/cartpole-ppo.yaml --seed S -q``. It stops by
  itself when ``episode_reward_mean`` (mean of the last 100 completed
  episodes) reaches 475; if it stops on the file's ``timesteps_total`` cap
  instead, the seed did not solve.
- **sb3** runs this script in child mode (``--child sb3 --seed S``): SB3's PPO
  with its tuned rl-baselines3-zoo entry for CartPole-v1 (``SB3_ZOO_CARTPOLE``),
  stopped by a callback as soon as its 100-episode buffer holds 100 episodes
  with mean return >= 475. If that does not happen within ``--sb3-budget`` env
  steps (default: the zoo's own ``n_timesteps``, 1e5), the seed did not solve.

Seeds run one after the other, the two systems alternating, so that changes in
machine load hit both alike. Both systems run with the same number of torch
threads (``--threads``, 1 by default): on a small shared machine, torch's
default of one thread per core slows both down badly whenever another job
takes a core. The table reports per system the seeds solved
and the median wall time and env steps over the seeds, and the ratio of the
median wall times against ``--target``.

Example:
    python benchmarks/cartpole_time_to_solve.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from solve_harness import (
    TUNED,
    SeedResult,
    add_run_arguments,
    print_machine,
    print_table,
    run_child,
    run_hpcrl_train,
    run_seeds,
    zoo_schedule,
)

ENV_ID = "CartPole-v1"
SOLVED_RETURN = 475.0
EPISODES_IN_MEAN = 100
EXPERIMENT_FILE = TUNED / "cartpole-ppo.yaml"

# The tuned PPO entry for CartPole-v1 in rl-baselines3-zoo's hyperparams/ppo.yml
# (https://github.com/DLR-RM/rl-baselines3-zoo). "lin_X" there is a schedule
# falling linearly from X to 0 over n_timesteps.
SB3_ZOO_CARTPOLE: dict[str, Any] = {
    "n_envs": 8,
    "n_timesteps": 1e5,
    "policy": "MlpPolicy",
    "n_steps": 32,
    "batch_size": 256,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "n_epochs": 20,
    "ent_coef": 0.0,
    "learning_rate": "lin_0.001",
    "clip_range": "lin_0.2",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--sb3-budget",
        type=int,
        default=int(SB3_ZOO_CARTPOLE["n_timesteps"]),
        help="most env steps SB3 may train (its learning-rate and clip schedules span this)",
    )
    parser.add_argument(
        "--hpcrl-config",
        default=None,
        help="JSON config merged over the experiment file's (hpcrl train --config)",
    )
    parser.add_argument(
        "--target", type=float, default=0.25, help="required hpcrl / sb3 median wall time"
    )
    parser.add_argument("--child", choices=["sb3"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def sb3_child(seed: int, budget: int) -> None:
    """Train SB3 PPO with the zoo entry until solved; print one JSON line."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    class StopWhenSolved(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.solved_at: int | None = None

        def _on_step(self) -> bool:
            # SB3 adds this step's finished episodes to ep_info_buffer only
            # after calling the callback, so the buffer is as of the previous
            # step: count the steps up to that one.
            buffer = self.model.ep_info_buffer
            if len(buffer) == EPISODES_IN_MEAN:
                mean_return = sum(info["r"] for info in buffer) / len(buffer)
                if mean_return >= SOLVED_RETURN:
                    self.solved_at = self.model.num_timesteps - self.training_env.num_envs
                    return False
            return True

    hp = SB3_ZOO_CARTPOLE
    env = make_vec_env(ENV_ID, n_envs=hp["n_envs"], seed=seed)
    model = PPO(
        hp["policy"],
        env,
        n_steps=hp["n_steps"],
        batch_size=hp["batch_size"],
        gae_lambda=hp["gae_lambda"],
        gamma=hp["gamma"],
        n_epochs=hp["n_epochs"],
        ent_coef=hp["ent_coef"],
        learning_rate=zoo_schedule(hp["learning_rate"]),
        clip_range=zoo_schedule(hp["clip_range"]),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    callback = StopWhenSolved()
    model.learn(total_timesteps=budget, callback=callback)
    solved = callback.solved_at is not None
    steps = callback.solved_at if solved else model.num_timesteps
    print(json.dumps({"solved": solved, "env_steps": steps}), flush=True)


def run_hpcrl(seed: int, config: str | None, threads: int) -> SeedResult:
    """``hpcrl train`` from the tuned experiment file; solved iff it stopped on
    the episode_reward_mean criterion."""
    last, wall_s = run_hpcrl_train(
        EXPERIMENT_FILE, seed, threads, ["--config", config] if config else []
    )
    solved = last["episode_reward_mean"] >= SOLVED_RETURN
    return SeedResult("hpcrl", seed, solved, int(last["timesteps_total"]), wall_s)


def run_sb3(seed: int, budget: int, threads: int) -> SeedResult:
    args = ["--child", "sb3", "--seed", str(seed), "--sb3-budget", str(budget)]
    result, wall_s = run_child(str(Path(__file__).resolve()), args, threads)
    return SeedResult("sb3", seed, bool(result["solved"]), int(result["env_steps"]), wall_s)


def main() -> None:
    args = parse_args()
    if args.child == "sb3":
        sb3_child(args.seed, args.sb3_budget)
        return
    print(
        f"{ENV_ID}, solved = mean return of the last {EPISODES_IN_MEAN} training episodes "
        f">= {SOLVED_RETURN:g}; seeds {args.seeds}; sb3 budget {args.sb3_budget:,} env steps"
    )
    print_machine(args.threads)
    if args.hpcrl_config:
        print(f"hpcrl --config {args.hpcrl_config}")
    runners = {
        "hpcrl": lambda seed: run_hpcrl(seed, args.hpcrl_config, args.threads),
        "sb3": lambda seed: run_sb3(seed, args.sb3_budget, args.threads),
    }
    results = run_seeds(args.seeds, {name: runners[name] for name in args.systems})
    print_table(results, args.systems, args.target)


if __name__ == "__main__":
    main()
