"""IMPALA throughput: what the learner consumes against what the workers can sample.

CartPole-v1, 2 rollout workers (separate processes: Dask workers of a local
cluster, or MPI ranks under ``mpiexec -n 3 ... --backend mpi``), one learner
thread on the driver, ``--fragment`` steps per sample call, ``--envs`` envs per
worker, ``--train-batch`` rows per learner update, a ``--hiddens`` MLP. Timed
in the same run, each for ``--seconds`` after a warm-up:

- **standalone**: the same two workers sampling on their own, each with two
  ``sample`` calls queued as IMPALA keeps them, batches dropped on arrival:
  the most the workers can give;
- **hpcrl IMPALA**: ``IMPALATrainer``: env steps/s consumed by the learner
  (trained), sampled steps/s, and the mean policy lag of consumed batches;
- **RLlib IMPALA** (``--peers rllib``; needs ``ray[rllib]``, the ``bench``
  extra, run with ``--rllib-python``'s interpreter): the same env, 2 env
  runners, fragment, train batch and MLP; its lifetime env steps sampled and
  trained over the same time.

Targets: hpcrl consumed >= 80% of standalone; >= 3x RLlib's trained steps/s.

Example:
    python benchmarks/async_throughput.py --seconds 20 --peers rllib
    mpiexec -n 3 python benchmarks/async_throughput.py --backend mpi
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from solve_harness import print_machine, script_parser, version

ENV_ID = "CartPole-v1"


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--backend", choices=["dask", "mpi"], default="dask")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per system")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--fragment", type=int, default=50, help="rollout_fragment_length")
    parser.add_argument("--envs", type=int, default=1, help="envs per worker")
    parser.add_argument("--train-batch", type=int, default=500, help="train_batch_size")
    parser.add_argument("--hiddens", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--peers", nargs="*", default=[], choices=["rllib"])
    parser.add_argument(
        "--rllib-python", default=sys.executable, help="the Python with ray[rllib] installed"
    )
    parser.add_argument("--child", choices=["rllib"], help=argparse.SUPPRESS)
    return parser.parse_args()


def hpcrl_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "env": ENV_ID,
        "backend": args.backend,
        "num_workers": 2,
        "num_envs_per_worker": args.envs,
        "rollout_fragment_length": args.fragment,
        "train_batch_size": args.train_batch,
        "model": {"fcnet_hiddens": args.hiddens},
        "num_torch_threads": 1,
        "seed": 0,
    }


def standalone(trainer: Any, seconds: float, warmup: float) -> float:
    """Sampled env steps/s of the trainer's workers with two calls queued each and
    no learner."""
    backend = trainer.workers.backend
    actors = trainer.workers.remote_workers()
    calls = {
        i: deque(backend.call([a], "sample") + backend.call([a], "sample"))
        for i, a in enumerate(actors)
    }
    steps, start, measuring = 0, time.perf_counter(), False
    while True:
        now = time.perf_counter()
        if not measuring and now - start >= warmup:
            steps, start, measuring = 0, now, True
        if measuring and now - start >= seconds:
            break
        done, _ = backend.wait([c[0] for c in calls.values()], num_returns=1, timeout=1.0)
        ready = {id(f) for f in done}
        for i, queued in calls.items():
            if queued and id(queued[0]) in ready:
                [batch] = backend.get([queued.popleft()])
                steps += batch.count
                queued.extend(backend.call([actors[i]], "sample"))
    rate = steps / (time.perf_counter() - start)
    for queued in calls.values():
        backend.get(list(queued))
    return rate


def hpcrl_impala(args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    from hpcrl.algorithms.impala import IMPALATrainer

    config = {**hpcrl_config(args), "min_iter_time_s": args.warmup}
    trainer = IMPALATrainer(config)
    try:
        alone = standalone(trainer, args.seconds, args.warmup)
        trainer.train()  # warm-up iteration
        before = trainer.optimizer.save()
        trainer.config["min_iter_time_s"] = args.seconds
        start = time.perf_counter()
        result = trainer.train()
        elapsed = time.perf_counter() - start
        info = result["info"]
    finally:
        trainer.stop()
    return alone, {
        "trained": (info["num_steps_trained"] - before["num_steps_trained"]) / elapsed,
        "sampled": (info["num_steps_sampled"] - before["num_steps_sampled"]) / elapsed,
        "lag": info["policy_lag_mean"],
    }


def rllib_child(args: argparse.Namespace) -> None:
    """RLlib's IMPALA on the same work; prints one JSON line of steps/s."""
    import ray
    from ray.rllib.algorithms.impala import IMPALAConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    # Two env runners and a learner: ask for enough logical CPUs that all of them start
    # on a small machine (they then share its cores, as hpcrl's processes do).
    ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    config = (
        IMPALAConfig()
        .environment(ENV_ID)
        .env_runners(
            num_env_runners=2,
            num_envs_per_env_runner=args.envs,
            rollout_fragment_length=args.fragment,
        )
        .training(train_batch_size_per_learner=args.train_batch)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=args.hiddens))
        .reporting(min_time_s_per_iteration=1)
    )
    algo = config.build_algo()

    def counts(result: dict[str, Any]) -> tuple[float, float]:
        """Lifetime env steps sampled by the env runners and trained by the learners."""
        sampled = result.get("env_runners", {}).get("num_env_steps_sampled_lifetime", 0)
        learners = result.get("learners", {}).get("__all_modules__", {})
        trained = learners.get("num_env_steps_trained_lifetime", 0)
        return float(sampled), float(trained)

    start = time.perf_counter()
    result = algo.train()
    while time.perf_counter() - start < args.warmup:
        result = algo.train()
    sampled0, trained0 = counts(result)
    start = time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        result = algo.train()
    elapsed = time.perf_counter() - start
    sampled, trained = counts(result)
    algo.stop()
    print(
        json.dumps(
            {
                "version": ray.__version__,
                "sampled": (sampled - sampled0) / elapsed,
                "trained": (trained - trained0) / elapsed,
            }
        ),
        flush=True,
    )


def run_rllib(args: argparse.Namespace) -> dict[str, Any] | str:
    command = [
        args.rllib_python,
        str(Path(__file__).resolve()),
        "--child",
        "rllib",
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--fragment",
        str(args.fragment),
        "--envs",
        str(args.envs),
        "--train-batch",
        str(args.train_batch),
        "--hiddens",
        *map(str, args.hiddens),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    if process.returncode != 0:
        return f"exited with {process.returncode}: {process.stderr.strip()[-500:]}"
    return json.loads(process.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.child == "rllib":
        rllib_child(args)
        return
    print_machine(1)
    print(
        f"{ENV_ID}, 2 workers ({args.backend}), {args.envs} env(s) each, fragment "
        f"{args.fragment}, train batch {args.train_batch}, MLP {args.hiddens}; "
        f"{args.seconds:g} s measured after {args.warmup:g} s"
    )
    alone, impala = hpcrl_impala(args)
    share = impala["trained"] / alone
    print(f"standalone workers: {alone:,.0f} sampled steps/s")
    print(
        f"hpcrl {version('hpcrl')} IMPALA: {impala['trained']:,.0f} trained steps/s "
        f"({share:.0%} of standalone; target >= 80%: {'PASS' if share >= 0.8 else 'FAIL'}), "
        f"{impala['sampled']:,.0f} sampled steps/s, policy lag {impala['lag']:.2f}"
    )
    if "rllib" in args.peers:
        rllib = run_rllib(args)
        if isinstance(rllib, str):
            print(f"RLlib not run: {rllib}")
        else:
            speedup = impala["trained"] / max(rllib["trained"], 1e-9)
            print(
                f"RLlib {rllib['version']} IMPALA: {rllib['trained']:,.0f} trained steps/s, "
                f"{rllib['sampled']:,.0f} sampled steps/s; hpcrl is {speedup:.1f}x "
                f"(target >= 3x: {'PASS' if speedup >= 3 else 'FAIL'})"
            )


if __name__ == "__main__":
    main()
