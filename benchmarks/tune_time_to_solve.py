"""The search behind the tuned PPO and A2C files: settings that solve fastest by the clock.

For one task (an env and an algorithm) this runs ``hpcrl.tune.run`` with
Optuna's TPE sampler (``OptunaSearch``, seeded) over the task's search space.
Each trial is a function that runs the real command, ``hpcrl train -f BASE
--config SAMPLED --seed S -q``, once per search seed (``--seeds``, 100 and 101
by default: not the seeds the time-to-solve benchmark reports), each a fresh
process timed from spawn to exit, as ``benchmarks/time_to_solve.py`` times
them. BASE is the task's tuned file: it gives the env, the stop criteria (the
threshold on the mean return of the last 100 episodes, and a ``timesteps_total``
cap) and the settings the search leaves as they are.

The trial's value, minimised, is ``cost_s``: the mean over the seeds of the wall
time, where a seed that stopped on the cap without solving counts twice its
wall time. Trials run one at a time (``max_concurrent_trials=1``) so that no
two timed processes share the 2 cores. At the end the best trial's settings
are printed as the ``config`` of a tuned file; the tuned files in
``examples/tuned/`` name the command and budget that produced them.

Example:
    python benchmarks/tune_time_to_solve.py --task cartpole-ppo --trials 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from solve_harness import (
    TUNED,
    compile_hpcrl_bytecode,
    print_machine,
    run_hpcrl_train,
    script_parser,
)

import hpcrl.tune as tune
from hpcrl.tune.optuna_search import OptunaSearch


def _batch(spec: Any) -> int:
    """Train batch = one fragment from every env."""
    return spec.config.num_envs_per_worker * spec.config.rollout_fragment_length


def _ppo_space(continuous: bool) -> dict[str, Any]:
    space = {
        "num_envs_per_worker": tune.choice([8, 16, 32, 64] if continuous else [16, 32, 64, 128]),
        "rollout_fragment_length": tune.choice([32, 64, 128] if continuous else [16, 32, 64]),
        "train_batch_size": tune.sample_from(_batch),
        "sgd_minibatch_size": tune.choice([128, 256, 512, 1024]),
        "num_sgd_iter": tune.choice([1, 2, 3, 4, 6, 10]),
        "lr": tune.loguniform(3e-4, 1e-2),
        "gamma": tune.choice([0.9, 0.95, 0.98] if continuous else [0.98, 0.99, 0.995]),
        "lambda": tune.uniform(0.8, 0.98),
        "model": {
            "fcnet_activation": tune.choice(["tanh", "relu"]),
            "fcnet_hiddens": tune.choice([[32, 32], [64, 64]]),
        },
    }
    if continuous:  # a state-independent log std, as SB3 and CleanRL use, or not
        space["model"]["free_log_std"] = tune.choice([False, True])
    return space


def _a2c_space() -> dict[str, Any]:
    return {
        "num_envs_per_worker": tune.choice([8, 16, 32, 64]),
        "rollout_fragment_length": tune.choice([5, 8, 16, 32]),
        "train_batch_size": tune.sample_from(_batch),
        "lr": tune.loguniform(3e-4, 1e-2),
        "gamma": tune.choice([0.98, 0.99, 0.995]),
        "lambda": tune.uniform(0.8, 1.0),
        "entropy_coeff": tune.choice([0.0, 0.001, 0.01]),
        "model": {
            "fcnet_activation": tune.choice(["tanh", "relu"]),
            "fcnet_hiddens": tune.choice([[32, 32], [64, 64]]),
        },
    }


# task: (tuned file, search space)
TASKS: dict[str, tuple[Path, dict[str, Any]]] = {
    "cartpole-ppo": (TUNED / "cartpole-ppo.yaml", _ppo_space(continuous=False)),
    "acrobot-ppo": (TUNED / "acrobot-ppo.yaml", _ppo_space(continuous=False)),
    "pendulum-ppo": (TUNED / "pendulum-ppo.yaml", _ppo_space(continuous=True)),
    "cartpole-a2c": (TUNED / "cartpole-a2c.yaml", _a2c_space()),
    "acrobot-a2c": (TUNED / "acrobot-a2c.yaml", _a2c_space()),
}

SETTINGS = ("task", "base", "seeds", "threads")


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--trials", type=int, default=30, help="trials in all")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[100, 101], help="hpcrl runs per trial"
    )
    parser.add_argument(
        "--base",
        default=None,
        help="experiment file the trials start from (default: the task's tuned file)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--search-seed", type=int, default=0, help="seed of the TPE sampler")
    parser.add_argument(
        "--local-dir", default=None, help="where the experiment goes (default: a temp dir)"
    )
    return parser.parse_args()


def hpcrl_config(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled settings as ``hpcrl train --config`` takes them: without the
    search's own settings (``SETTINGS``), a minibatch at most the whole batch."""
    sampled = {key: value for key, value in config.items() if key not in SETTINGS}
    if "sgd_minibatch_size" in sampled:
        sampled["sgd_minibatch_size"] = min(
            sampled["sgd_minibatch_size"], sampled["train_batch_size"]
        )
    return sampled


def trial(config: dict[str, Any]) -> None:
    """One trial: ``hpcrl train`` with the sampled settings, once per seed."""
    settings = {key: config[key] for key in SETTINGS}
    sampled = hpcrl_config(config)
    (experiment,) = yaml.safe_load(Path(settings["base"]).read_text()).values()
    threshold = experiment["stop"]["episode_reward_mean"]
    costs, walls, steps, solved = [], [], [], 0
    for seed in settings["seeds"]:
        last, wall_s = run_hpcrl_train(
            Path(settings["base"]),
            seed,
            settings["threads"],
            ["--config", json.dumps(sampled)],
        )
        ok = last["episode_reward_mean"] >= threshold
        solved += ok
        costs.append(wall_s if ok else 2 * wall_s)
        walls.append(wall_s)
        steps.append(last["timesteps_total"])
    tune.report(
        cost_s=statistics.mean(costs),
        solved=solved,
        median_wall_s=statistics.median(walls),
        median_env_steps=statistics.median(steps),
    )


def main() -> None:
    args = parse_args()
    base, space = TASKS[args.task]
    base = Path(args.base).resolve() if args.base else base
    print(f"task {args.task}: {args.trials} trials from {base}, seeds {args.seeds}")
    print_machine(args.threads)
    compile_hpcrl_bytecode()
    config = {
        **space,
        "task": args.task,
        "base": str(base),
        "seeds": args.seeds,
        "threads": args.threads,
    }
    with tempfile.TemporaryDirectory() as scratch:
        analysis = tune.run(
            trial,
            config=config,
            num_samples=args.trials,
            search_alg=OptunaSearch(seed=args.search_seed),
            metric="cost_s",
            mode="min",
            max_concurrent_trials=1,
            local_dir=args.local_dir or scratch,
            name=f"search-{args.task}",
            verbose=1,
            raise_on_failed_trial=False,
        )
        rows = sorted(
            (t for t in analysis.trials if t.last_result),
            key=lambda t: t.last_result["cost_s"],
        )
    print(f"\n{'cost s':>7} {'solved':>6} {'wall s':>7} {'env steps':>10}  settings")
    for t in rows[:10]:
        r = t.last_result
        sampled = hpcrl_config(t.config)
        print(
            f"{r['cost_s']:>7.2f} {r['solved']:>6} {r['median_wall_s']:>7.2f} "
            f"{r['median_env_steps']:>10,.0f}  {json.dumps(sampled)}"
        )
    best = hpcrl_config(rows[0].config)
    print("\nbest settings, as a tuned file's config:")
    yaml.safe_dump(best, sys.stdout, sort_keys=False, default_flow_style=None)


if __name__ == "__main__":
    main()
