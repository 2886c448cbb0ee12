"""What guarding sub-envs costs (``recreate_failed_envs``, ``env_step_timeout_s``).

Times, on CartPole-v1 with 64 copies:

- one vector step of the env alone (random actions made beforehand): CartPole's
  batched ``vector_entry_point`` (what "auto" picks with both keys off),
  gymnasium's ``SyncVectorEnv``, and hpcrl's ``GuardedVectorEnv`` (what "auto"
  picks with either key on) without and with a timeout;
- ``RolloutWorker.sample()`` with a small PG policy, per env step, for the same
  configurations.

The configurations run interleaved, ``--repeats`` times; the table gives medians.
Run it against another checkout (``PYTHONPATH=... --configs auto sync``) to compare
the unguarded paths before and after a change.

    python benchmarks/env_failures.py --repeats 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np
import torch

CONFIGS = {
    "auto": {},
    "sync": {"vectorization_mode": "sync"},
    "recreate": {"recreate_failed_envs": True},
    "timeout": {"env_step_timeout_s": 10.0},
    "both": {"recreate_failed_envs": True, "env_step_timeout_s": 10.0},
}


def make_env(name: str, num_envs: int) -> gym.vector.VectorEnv:
    if name == "auto":
        return gym.make_vec("CartPole-v1", num_envs, vectorization_mode="vector_entry_point")
    if name == "sync":
        return gym.make_vec("CartPole-v1", num_envs, vectorization_mode="sync")
    from hpcrl.env.failures import FailurePolicy
    from hpcrl.env.guarded_vector_env import GuardedVectorEnv

    config = CONFIGS[name]
    policy = FailurePolicy(
        config.get("recreate_failed_envs", False), config.get("env_step_timeout_s")
    )
    return GuardedVectorEnv([lambda: gym.make("CartPole-v1")] * num_envs, policy)


def time_env_steps(env: gym.vector.VectorEnv, steps: int) -> float:
    """Seconds per vector step."""
    actions = np.random.default_rng(0).integers(0, 2, (steps, env.num_envs))
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        env.step(action)
    return (time.perf_counter() - start) / steps


def time_sample(worker, samples: int) -> float:
    """Seconds per env step of ``worker.sample()``."""
    worker.sample()  # warm up
    start = time.perf_counter()
    steps = sum(worker.sample().count for _ in range(samples))
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--env-steps", type=int, default=300)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(1)

    from hpcrl.algorithms.pg import PGTorchPolicy
    from hpcrl.evaluation.rollout_worker import RolloutWorker

    envs = {name: make_env(name, args.num_envs) for name in args.configs}
    workers = {
        name: RolloutWorker(
            "CartPole-v1",
            PGTorchPolicy,
            {
                "num_envs_per_worker": args.num_envs,
                "rollout_fragment_length": 50,
                "seed": 0,
                "model": {"fcnet_hiddens": [64, 64]},
                **CONFIGS[name],
            },
        )
        for name in args.configs
    }
    env_times: dict[str, list[float]] = {name: [] for name in args.configs}
    sample_times: dict[str, list[float]] = {name: [] for name in args.configs}
    for _ in range(args.repeats):
        for name in args.configs:
            env_times[name].append(time_env_steps(envs[name], args.env_steps))
            sample_times[name].append(time_sample(workers[name], args.samples))
    print(f"CartPole-v1, {args.num_envs} copies, medians of {args.repeats} repeats\n")
    print("| config | vector step (us) | sample() per env step (us) | sample() env steps/s |")
    print("|:-------|-----------------:|---------------------------:|---------------------:|")
    for name in args.configs:
        step = statistics.median(env_times[name]) * 1e6
        per_row = statistics.median(sample_times[name]) * 1e6
        print(f"| {name} | {step:,.0f} | {per_row:.2f} | {1e6 / per_row:,.0f} |")
    for worker in workers.values():
        worker.stop()


if __name__ == "__main__":
    main()
