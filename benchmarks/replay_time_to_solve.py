"""Replay algorithms' time to solve: hpcrl DQN and SAC against Stable-Baselines3's.

Two tasks, each system with its own tuned settings:

- **dqn**: DQN on CartPole-v1 until the greedy policy returns >= 475;
- **sac**: SAC on Pendulum-v1 until the greedy (mean) policy returns >= -200.

"Returns" is the same test in both systems: every ``EVAL_EVERY`` env steps, 10
evaluation episodes with the most likely actions in a separate env; the run
stops at the first evaluation whose mean return reaches the target. Training
episodes do not count: DQN's training episodes carry epsilon-greedy noise.

Each seed of each system is a fresh Python process timed from spawn to exit
(1 torch thread by default), so imports, env and model construction count.

- **hpcrl** runs ``hpcrl train -f examples/tuned/cartpole-v1-dqn.yaml`` (or
  ``pendulum-sac.yaml``) ``--seed S -q``. Those files evaluate every iteration
  of 1,000 steps and stop on ``evaluation/episode_reward_mean``; a run that
  stops on their ``timesteps_total`` cap instead did not solve.
- **sb3** runs this script in child mode: SB3's DQN or SAC with the
  rl-baselines3-zoo entry for the env (``SB3_ZOO``), with an ``EvalCallback``
  (10 deterministic episodes every ``EVAL_EVERY`` steps) and
  ``StopTrainingOnRewardThreshold``; the budget is the zoo's ``n_timesteps``.

Example:
    python benchmarks/replay_time_to_solve.py --tasks dqn sac --seeds 0 1 2 3 4
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
    script_parser,
)

EVAL_EVERY = 1000
EVAL_EPISODES = 10

# task: (env, target return, hpcrl experiment file, hpcrl/sb3 median wall-time target)
TASKS: dict[str, tuple[str, float, Path, float]] = {
    "dqn": ("CartPole-v1", 475.0, TUNED / "cartpole-v1-dqn.yaml", 1 / 3),
    "sac": ("Pendulum-v1", -200.0, TUNED / "pendulum-sac.yaml", 1 / 2),
}

# The tuned entries of rl-baselines3-zoo (https://github.com/DLR-RM/rl-baselines3-zoo,
# hyperparams/dqn.yml and sac.yml); keys not given keep SB3's defaults (for SAC:
# 256-256 networks, batch 256, learning_starts 100, tau 0.005, automatic entropy).
SB3_ZOO: dict[str, dict[str, Any]] = {
    "dqn": {
        "n_timesteps": 50_000,
        "learning_rate": 2.3e-3,
        "batch_size": 64,
        "buffer_size": 100_000,
        "learning_starts": 1000,
        "gamma": 0.99,
        "target_update_interval": 10,
        "train_freq": 256,
        "gradient_steps": 128,
        "exploration_fraction": 0.16,
        "exploration_final_eps": 0.04,
        "policy_kwargs": {"net_arch": [256, 256]},
    },
    "sac": {
        "n_timesteps": 20_000,
        "learning_rate": 1e-3,
    },
}


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS), help="tasks to run"
    )
    add_run_arguments(parser)
    parser.add_argument("--child", choices=sorted(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def sb3_child(task: str, seed: int) -> None:
    """Train SB3's algorithm with the zoo entry until an evaluation reaches the
    target; print one JSON line."""
    import stable_baselines3
    from stable_baselines3.common.callbacks import EvalCallback, StopTrainingOnRewardThreshold
    from stable_baselines3.common.env_util import make_vec_env

    env_id, target, _, _ = TASKS[task]
    hp = dict(SB3_ZOO[task])
    budget = int(hp.pop("n_timesteps"))
    algorithm = stable_baselines3.DQN if task == "dqn" else stable_baselines3.SAC
    model = algorithm(
        "MlpPolicy", make_vec_env(env_id, seed=seed), seed=seed, device="cpu", verbose=0, **hp
    )
    stopper = StopTrainingOnRewardThreshold(reward_threshold=target, verbose=0)
    evaluation = EvalCallback(
        make_vec_env(env_id, seed=seed + 10_000),
        callback_on_new_best=stopper,
        n_eval_episodes=EVAL_EPISODES,
        eval_freq=EVAL_EVERY,
        deterministic=True,
        verbose=0,
    )
    model.learn(total_timesteps=budget, callback=evaluation)
    solved = bool(evaluation.best_mean_reward >= target)
    print(json.dumps({"solved": solved, "env_steps": model.num_timesteps}), flush=True)


def run_hpcrl(task: str, seed: int, threads: int) -> SeedResult:
    """Solved iff the run stopped on its evaluation criterion."""
    _, target, experiment_file, _ = TASKS[task]
    last, wall_s = run_hpcrl_train(experiment_file, seed, threads)
    solved = last.get("evaluation", {}).get("episode_reward_mean", float("-inf")) >= target
    return SeedResult("hpcrl", seed, solved, int(last["timesteps_total"]), wall_s)


def run_sb3(task: str, seed: int, threads: int) -> SeedResult:
    args = ["--child", task, "--seed", str(seed)]
    result, wall_s = run_child(str(Path(__file__).resolve()), args, threads)
    return SeedResult("sb3", seed, bool(result["solved"]), int(result["env_steps"]), wall_s)


def main() -> None:
    args = parse_args()
    if args.child:
        sb3_child(args.child, args.seed)
        return
    print_machine(args.threads)
    verdicts = {}
    for task in args.tasks:
        env_id, target, experiment_file, ratio = TASKS[task]
        print(
            f"\n{task.upper()} on {env_id}: solved = mean return of {EVAL_EPISODES} greedy "
            f"evaluation episodes >= {target:g}, evaluated every {EVAL_EVERY:,} env steps; "
            f"seeds {args.seeds}; hpcrl {experiment_file.relative_to(TUNED.parent.parent)}, "
            f"sb3 rl-zoo budget {SB3_ZOO[task]['n_timesteps']:,} steps"
        )
        runners = {
            "hpcrl": lambda seed, task=task: run_hpcrl(task, seed, args.threads),
            "sb3": lambda seed, task=task: run_sb3(task, seed, args.threads),
        }
        results = run_seeds(args.seeds, {name: runners[name] for name in args.systems})
        verdicts[task] = print_table(results, args.systems, ratio)
    if set(args.systems) == {"hpcrl", "sb3"}:
        print("\n" + ", ".join(f"{t}: {'PASS' if ok else 'FAIL'}" for t, ok in verdicts.items()))


if __name__ == "__main__":
    main()
