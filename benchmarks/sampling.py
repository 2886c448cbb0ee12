"""Sampling throughput: ``RolloutWorker.sample()`` against a bare env + MLP loop.

For each number of envs, this times

- **hpcrl**: ``RolloutWorker("CartPole-v1", A2CTorchPolicy, config).sample()``,
  i.e. stepping, the policy's forward pass (logits and value), sampling,
  storing the fragment's columns, and postprocessing (GAE with the bootstrap
  value) -- everything a trainer gets from a worker;
- **bare**: the same batched env (``gymnasium.make_vec(...,
  vectorization_mode="vector_entry_point")``) and the same model (built by
  ``ModelCatalog.get_model``, so the same MLP with its separate value branch)
  in a minimal loop: obs -> ``torch.from_numpy`` -> forward + value under
  ``no_grad`` -> sample actions from the softmax of the logits -> numpy ->
  ``env.step``. It stores nothing. ``--bare-sampler multinomial`` (default)
  samples with ``torch.multinomial``; ``exponential`` with ``argmax(p / q)``,
  ``q ~ Exp(1)``: the same draws, written out as hpcrl's ``Categorical`` does,
  without ``torch.multinomial``'s input checks.

hpcrl counts the rows ``sample()`` returns; the bare loop counts every env
step, including the steps gymnasium's autoreset spends on resets (not
transitions, so not rows), which makes the comparison slightly stricter.

Both run with the same number of torch threads (1 by default). The two
alternate: each repeat times ``--samples`` fragments of ``--fragment-length``
steps per env with hpcrl, then as many vector steps of the bare loop. The
table shows the median steps/s of each and the median of the per-repeat ratios.

Example:
    python benchmarks/sampling.py --num-envs 64 1024 --repeats 7
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.models import ModelCatalog

ENV_ID = "CartPole-v1"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--num-envs", type=int, nargs="+", default=[64, 1024], help="envs per worker to time"
    )
    parser.add_argument(
        "--fragment-length", type=int, default=50, help="rollout_fragment_length (steps per env)"
    )
    parser.add_argument(
        "--samples", type=int, default=4, help="sample() calls (fragments) timed per repeat"
    )
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats; median reported")
    parser.add_argument("--warmup", type=int, default=2, help="untimed fragments before timing")
    parser.add_argument(
        "--hiddens", type=int, nargs="+", default=[64, 64], help="fcnet_hiddens of the MLP"
    )
    parser.add_argument(
        "--bare-sampler",
        choices=["multinomial", "exponential"],
        default="multinomial",
        help="how the bare loop samples actions (see above)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both")
    parser.add_argument(
        "--target", type=float, default=0.70, help="required hpcrl / bare ratio for PASS"
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: time.perf_counter; cpu: time.process_time, this process's CPU time "
        "(both loops are single-threaded; use it when other jobs share the cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def hpcrl_runner(args: argparse.Namespace, num_envs: int) -> Callable[[], int]:
    """A function that calls ``RolloutWorker.sample()`` ``--samples`` times and
    returns the number of rows (env steps) it got."""
    config = {
        "num_envs_per_worker": num_envs,
        "rollout_fragment_length": args.fragment_length,
        "vectorization_mode": "vector_entry_point",
        "model": {"fcnet_hiddens": args.hiddens},
        "seed": args.seed,
    }
    worker = RolloutWorker(ENV_ID, A2CTorchPolicy, config)
    for _ in range(args.warmup):
        worker.sample()

    def run() -> int:
        return sum(worker.sample().count for _ in range(args.samples))

    return run


def bare_runner(args: argparse.Namespace, num_envs: int) -> Callable[[], int]:
    """A function that steps the bare env + MLP loop for as many steps as
    ``hpcrl_runner``'s and returns the number of env steps."""
    env = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point")
    obs_space, action_space = env.single_observation_space, env.single_action_space
    model_config = {"fcnet_hiddens": args.hiddens}
    _, num_outputs = ModelCatalog.get_action_dist(action_space, model_config)
    torch.manual_seed(args.seed)
    model = ModelCatalog.get_model(obs_space, action_space, num_outputs, model_config).eval()
    generator = torch.Generator().manual_seed(args.seed)
    obs, _ = env.reset(seed=args.seed)
    multinomial = args.bare_sampler == "multinomial"

    def step(n: int) -> int:
        nonlocal obs
        with torch.no_grad():
            for _ in range(n):
                logits, _ = model({"obs": torch.from_numpy(obs)}, [], None)
                model.value_function()
                probs = torch.softmax(logits, dim=-1)
                if multinomial:
                    actions = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                else:
                    q = torch.empty_like(probs).exponential_(1.0, generator=generator)
                    actions = (probs / q).argmax(-1)
                obs, _, _, _, _ = env.step(actions.numpy())
        return n * num_envs

    step(args.warmup * args.fragment_length)
    return lambda: step(args.samples * args.fragment_length)


def steps_per_second(run: Callable[[], int], clock: Callable[[], float]) -> float:
    start = clock()
    steps = run()
    return steps / (clock() - start)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"{ENV_ID}, A2CTorchPolicy, fcnet_hiddens={args.hiddens}, "
        f"rollout_fragment_length={args.fragment_length}, torch threads={args.threads}, "
        f"bare sampler: {args.bare_sampler}, {args.clock} clock, "
        f"{args.samples} fragments x {args.repeats} repeats (median)"
    )
    print(
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"gymnasium {gym.__version__}, numpy {np.__version__}"
    )
    header = f"{'num_envs':>8}  {'hpcrl steps/s':>14}  {'bare steps/s':>13}  {'ratio':>6}  result"
    print(header)
    print("-" * len(header))
    for num_envs in args.num_envs:
        hpcrl_run, bare_run = hpcrl_runner(args, num_envs), bare_runner(args, num_envs)
        # Alternate the two so that changes in machine load hit both alike.
        hpcrl_rates, bare_rates = [], []
        for _ in range(args.repeats):
            hpcrl_rates.append(steps_per_second(hpcrl_run, clock))
            bare_rates.append(steps_per_second(bare_run, clock))
        hpcrl_rate = statistics.median(hpcrl_rates)
        bare_rate = statistics.median(bare_rates)
        ratio = statistics.median(h / b for h, b in zip(hpcrl_rates, bare_rates))
        result = "PASS" if ratio >= args.target else "FAIL"
        print(
            f"{num_envs:>8}  {hpcrl_rate:>14,.0f}  {bare_rate:>13,.0f}  {ratio:>6.1%}  "
            f"{result} (target {args.target:.0%})",
            flush=True,
        )


if __name__ == "__main__":
    main()
