"""Learner throughput: samples/s of data-parallel PPO SGD for 1 and 2 learners (and a GPU).

Each configuration is a ``LearnerGroup`` (as ``DataParallelOptimizer`` uses
it) learning on the same synthetic PPO train batch: ``--rows`` rows of
``--obs-dim`` float observations, a ``--hiddens`` MLP with a separate value
branch, ``--num-sgd-iter`` epochs of minibatches of ``--minibatch`` rows
(split across the learners), grad clipping and the KL term on. One
measurement is one ``learn()`` call: sending each learner its shard, every
SGD step with its gradient all-reduce, and the stats coming back.
samples/s = rows x epochs / seconds, median over ``--repeats`` after one
warm-up call. The table also shows, for the median call, its seconds and those
the slowest learner spent in SGD (everything it did) and in all-reduces.

Configurations:

- ``cpu x1``: one learner in this process (what a trainer does without
  learners, plus the group's bookkeeping);
- ``cpu x2``: two learner processes over gloo;
- ``gpu x1``: one learner on ``cuda:0``, when CUDA is available (``--no-gpu``
  skips it).

Every learner uses ``--threads-per-learner`` torch threads (default 1: a
learner per core, so x2 uses twice the cores of x1, as two GPUs would be
twice one GPU).

Under a launcher (``torchrun --nproc-per-node K`` or ``srun -n K``) with
``--from-env``, every process is one learner: the rendezvous comes from the
launcher's variables, the learners use their node-local GPU with NCCL when
``--gpu`` is given (gloo on CPUs otherwise), and rank 0 prints the figure.

Examples:
    python benchmarks/learner_scaling.py
    torchrun --nproc-per-node 2 benchmarks/learner_scaling.py --from-env
    srun -n 8 --gpus-per-task 1 python benchmarks/learner_scaling.py --from-env --gpu
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from hpcrl.algorithms.ppo import PPOTorchPolicy
from hpcrl.backends.local import LocalBackend
from hpcrl.learners.learner import Learner
from hpcrl.learners.learner_group import LearnerGroup
from hpcrl.learners.rendezvous import rendezvous_from_environment
from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.policy.sgd import plan_minibatches, shard_sizes


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8192, help="rows per train batch")
    parser.add_argument("--minibatch", type=int, default=1024, help="rows per SGD minibatch")
    parser.add_argument("--num-sgd-iter", type=int, default=2)
    parser.add_argument("--obs-dim", type=int, default=64)
    parser.add_argument("--hiddens", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads-per-learner", type=int, default=1)
    parser.add_argument("--no-gpu", action="store_true", help="skip the GPU configuration")
    parser.add_argument("--from-env", action="store_true", help="one learner per process")
    parser.add_argument("--gpu", action="store_true", help="with --from-env: learn on GPUs")
    return parser.parse_args()


def setup(args: argparse.Namespace) -> tuple[gym.Space, gym.Space, dict, SampleBatch]:
    obs_space = gym.spaces.Box(-1.0, 1.0, (args.obs_dim,), np.float32)
    action_space = gym.spaces.Discrete(4)
    config = {
        "model": {"fcnet_hiddens": list(args.hiddens)},
        "seed": 0,
        "lr": 1e-4,
        "grad_clip": 0.5,
        "kl_coeff": 0.2,
    }
    rng = np.random.default_rng(0)
    rows = args.rows
    logits = rng.normal(size=(rows, 4)).astype(np.float32)
    actions = rng.integers(0, 4, rows)
    logp = logits[np.arange(rows), actions] - np.log(np.exp(logits).sum(axis=1))
    batch = SampleBatch(
        {
            "obs": rng.uniform(-1, 1, (rows, args.obs_dim)).astype(np.float32),
            "actions": actions,
            "action_logp": logp.astype(np.float32),
            "action_dist_inputs": logits,
            "advantages": rng.normal(size=rows).astype(np.float32),
            "vf_preds": rng.normal(size=rows).astype(np.float32),
            "value_targets": rng.normal(size=rows).astype(np.float32),
        }
    )
    return obs_space, action_space, config, batch


def measure(learn: Callable[[], dict], repeats: int) -> dict[str, float]:
    """The median call of ``learn()`` (after one warm-up call): its seconds
    (``wall_s``) and what ``learn()`` returned about it."""
    learn()
    calls = []
    for _ in range(repeats):
        start = time.perf_counter()
        timings = learn()
        calls.append({**timings, "wall_s": time.perf_counter() - start})
    calls.sort(key=lambda call: call["wall_s"])
    return calls[len(calls) // 2]


def run_group(args: argparse.Namespace, num_learners: int, gpus: int) -> tuple[float, dict]:
    """Samples/s, and the seconds of the median call: in all, in the slowest
    learner's SGD and in its all-reduces."""
    obs_space, action_space, config, batch = setup(args)
    config["num_torch_threads"] = args.threads_per_learner
    if num_learners == 1:
        torch.set_num_threads(args.threads_per_learner)
    group = LearnerGroup(
        LocalBackend(),
        {"default_policy": (PPOTorchPolicy, obs_space, action_space, config)},
        num_learners=num_learners,
        num_gpus_per_learner=gpus,
    )
    rng = np.random.default_rng(0)

    def learn() -> dict:
        group.learn({"default_policy": batch}, args.num_sgd_iter, args.minibatch, rng)
        return group.timings

    try:
        times = measure(learn, args.repeats)
        return args.rows * args.num_sgd_iter / times["wall_s"], times
    finally:
        group.stop()


def run_from_env(args: argparse.Namespace) -> None:
    """This process is one learner of a launcher-started group."""
    rendezvous = rendezvous_from_environment(os.environ)
    obs_space, action_space, config, batch = setup(args)
    device = f"cuda:{rendezvous.local_rank % torch.cuda.device_count()}" if args.gpu else "cpu"
    learner = Learner(
        {"default_policy": (PPOTorchPolicy, obs_space, action_space, config)},
        args.threads_per_learner,
    )
    learner.join(rendezvous, "nccl" if args.gpu else "gloo", device, timeout_s=300)
    sizes = shard_sizes(args.rows, rendezvous.world_size)
    start = sum(sizes[: rendezvous.rank])
    shard = batch.slice(start, start + sizes[rendezvous.rank])
    rng = np.random.default_rng(0)  # the same plans on every learner

    def learn() -> dict:
        plan = plan_minibatches(sizes, args.num_sgd_iter, args.minibatch, rng)
        return learner.learn({"default_policy": (shard, plan[rendezvous.rank])})

    rate = args.rows * args.num_sgd_iter / measure(learn, args.repeats)["wall_s"]
    if rendezvous.is_master:
        print(f"{rendezvous.world_size} learners on {device.split(':')[0]}: {rate:,.0f} samples/s")
    learner.stop()


def main() -> None:
    args = parse_args()
    if args.from_env:
        run_from_env(args)
        return
    print(
        f"{args.rows} rows x {args.num_sgd_iter} epochs, minibatches of {args.minibatch}, "
        f"obs {args.obs_dim}, hiddens {args.hiddens}; {args.threads_per_learner} torch "
        "thread(s) per learner; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}"
    )
    configurations = [("cpu", 1, 0), ("cpu", 2, 0)]
    if torch.cuda.is_available() and not args.no_gpu:
        configurations.append(("gpu", 1, 1))
    print("| learners | device | backend | samples/s | vs cpu x1 | call s | SGD s | all-reduce s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    base = None
    for device, num_learners, gpus in configurations:
        rate, times = run_group(args, num_learners, gpus)
        base = base or rate
        backend = "nccl" if gpus else ("gloo" if num_learners > 1 else "none")
        name = torch.cuda.get_device_name(0) if gpus else device
        print(
            f"| {num_learners} | {name} | {backend} | {rate:,.0f} | {rate / base:.2f}x | "
            f"{times['wall_s']:.3f} | {times['sgd_s']:.3f} | {times['allreduce_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
