"""Where the time of a PPO run goes: start-up, each part of an iteration, exit.

Runs ``hpcrl train -f FILE --seed S -q`` (default: the tuned CartPole-v1 file)
in a child process, the real command through ``hpcrl.cli.run_command``, with
timers wrapped around the parts of an iteration:

- sampling: ``env.step`` of the vectorised env, the policy's
  ``compute_actions`` and, as the rest of ``RolloutWorker.sample``, the
  sampler's bookkeeping; postprocessing (GAE) is timed on its own;
- learning: the loss's forward pass, ``backward``, the optimizer step (with
  gradient clipping), and the rest of ``minibatch_sgd`` (minibatch gathers,
  stats); advantage standardisation and batch loading count in the rest;
- weight sync, and the trainer's result (metrics) beside the logging of each
  result (``result.json``, ``progress.csv``, the stop check).

The parent times the process from spawn to exit; the child reports, in wall
clock time since the parent's spawn, when its imports ended, when training
began and ended, and the timers' totals. What the timers do not cover inside
the training loop is shown as "other". The timers add about 1 us per call.

Example:
    python benchmarks/ppo_iteration.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from solve_harness import compile_hpcrl_bytecode, print_machine, script_parser

SPAWN_ENV = "HPCRL_BENCH_SPAWN_TIME"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_FILE = REPO / "examples" / "tuned" / "cartpole-ppo.yaml"


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--file", default=str(DEFAULT_FILE), help="experiment file")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def child(experiment_file: str, seed: int) -> None:
    """Train with timers in place; print the timeline and totals as one JSON line."""
    spawn = float(os.environ[SPAWN_ENV])
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - start
                calls[name] += 1

        return wrapper

    def wrap(owner, attribute, name):
        setattr(owner, attribute, timed(name, getattr(owner, attribute)))

    import torch

    from hpcrl import cli
    from hpcrl.algorithms import ppo
    from hpcrl.evaluation.rollout_worker import RolloutWorker
    from hpcrl.evaluation.sampler import VectorEnvSampler
    from hpcrl.optimizers import sync_samples_optimizer
    from hpcrl.policy import adam, sgd, torch_policy
    from hpcrl.tune import experiment, logger

    imported = time.time()
    wrap(RolloutWorker, "sample", "sample")
    wrap(torch_policy.TorchPolicy, "compute_actions", "sample: policy forward")
    wrap(ppo.PPOTorchPolicy, "postprocess_trajectory", "sample: postprocess (GAE)")
    wrap(torch_policy.TorchPolicy, "compute_loss", "learn: loss forward")
    wrap(torch.Tensor, "backward", "learn: backward")
    wrap(torch_policy.TorchPolicy, "extra_grad_process", "learn: optimizer step + clip")
    wrap(adam.Adam, "step", "learn: optimizer step + clip")
    wrap(sync_samples_optimizer, "minibatch_sgd", "learn")
    wrap(sync_samples_optimizer.SyncSamplesOptimizer, "step", "optimizer step")
    wrap(logger.ResultLogger, "log", "result logging")
    wrap(experiment.Experiment, "_train", "training loop")
    del sgd

    original_start = VectorEnvSampler.start

    def start(self, *args, **kwargs):
        # The vectorised env of each sampler: time its step calls.
        self.env.step = timed("sample: env step", self.env.step)
        return original_start(self, *args, **kwargs)

    VectorEnvSampler.start = start
    train_calls = []
    original_train = experiment.Experiment._train

    def train(self, *args, **kwargs):
        train_calls.append(time.time())
        try:
            return original_train(self, *args, **kwargs)
        finally:
            train_calls.append(time.time())

    experiment.Experiment._train = train
    with tempfile.TemporaryDirectory() as local_dir:
        argv = ["train", "-f", experiment_file, "--seed", str(seed), "-q", "--local-dir", local_dir]
        code = cli.main(argv)
    if code != 0:
        raise SystemExit(code)
    timeline = {
        "imports_done": imported - spawn,
        "training_start": train_calls[0] - spawn,
        "training_end": train_calls[1] - spawn,
        "main_done": time.time() - spawn,
    }
    print(json.dumps({"timeline": timeline, "totals": totals, "calls": calls}), flush=True)
    cli.exit_process(0)


def run_child(experiment_file: str, seed: int, threads: int) -> dict:
    env = {**os.environ, SPAWN_ENV: repr(time.time())}
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, __file__, "--child", "--file", experiment_file, "--seed", str(seed)]
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"the child exited with {process.returncode}:\n{process.stderr[-3000:]}")
    report = json.loads(process.stdout.strip().splitlines()[-1])
    report["wall"] = wall
    return report


def breakdown(report: dict) -> dict[str, float]:
    """Seconds per part, adding up to the process's wall time."""
    t, s = report["timeline"], report["totals"]
    sample = s["sample"]
    sampling_parts = ["sample: env step", "sample: policy forward", "sample: postprocess (GAE)"]
    learn_parts = ["learn: loss forward", "learn: backward", "learn: optimizer step + clip"]
    parts = {
        "start-up: interpreter and imports": t["imports_done"],
        "start-up: config, env, policy, workers": t["training_start"] - t["imports_done"],
    }
    parts.update({name: s.get(name, 0.0) for name in sampling_parts})
    parts["sample: other (sampler bookkeeping)"] = sample - sum(parts[n] for n in sampling_parts)
    parts.update({name: s.get(name, 0.0) for name in learn_parts})
    parts["learn: other (minibatches, stats)"] = s["learn"] - sum(parts[n] for n in learn_parts)
    parts["advantage standardisation, weight sync"] = s["optimizer step"] - sample - s["learn"]
    parts["result logging"] = s["result logging"]
    loop = t["training_end"] - t["training_start"]
    parts["trainer's result (metrics), other"] = loop - s["optimizer step"] - s["result logging"]
    parts["end of run: stop, files, summary"] = t["main_done"] - t["training_end"]
    parts["exit"] = report["wall"] - t["main_done"]
    return parts


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.file, args.seed)
        return
    print(f"{args.file}, seeds {args.seeds}")
    print_machine(args.threads)
    compile_hpcrl_bytecode()
    reports = [run_child(args.file, seed, args.threads) for seed in args.seeds]
    table = [breakdown(r) for r in reports]
    walls = [r["wall"] for r in reports]
    iterations = [r["calls"]["optimizer step"] for r in reports]
    print(f"\nmedian over {len(reports)} runs: {statistics.median(walls):.2f} s per run, ")
    print(f"{statistics.median(iterations):.0f} iterations per run")
    print(f"\n{'part':<42} {'s per run':>9} {'ms per iter':>11} {'share':>6}")
    for name in table[0]:
        seconds = statistics.median(row[name] for row in table)
        per_iter = statistics.median(row[name] / n for row, n in zip(table, iterations))
        share = seconds / statistics.median(walls)
        print(f"{name:<42} {seconds:>9.3f} {per_iter * 1e3:>11.2f} {share:>6.1%}")


if __name__ == "__main__":
    main()
