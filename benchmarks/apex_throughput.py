"""Ape-X throughput: sampled and trained steps/s and learner updates/s of APEX, beside
synchronous DQN on the same cores, in the same run.

CartPole-v1, 2 rollout workers (separate processes: Dask workers of a local
cluster, or MPI ranks under ``mpiexec -n 4 ... --backend mpi``), a ``--hiddens``
MLP, ``--fragment`` steps per sample, ``--train-batch`` rows per update. Each
system runs one warm-up iteration of ``--warmup`` seconds, then one measured
iteration of ``--seconds``:

- **hpcrl APEX**: ``ApexTrainer`` with 1 replay shard (one more process or
  rank), worker-side priorities, the learner thread on the driver;
- **hpcrl DQN**: ``DQNTrainer`` with the same 2 workers, prioritised replay on
  the driver, one update per sampling round (the synchronous pattern).

RLlib 2.60 has no Ape-X (its ``APEX_DQN`` was removed from RLlib), so there is
no peer figure for it here.

Example:
    python benchmarks/apex_throughput.py --seconds 20
    mpiexec -n 4 python benchmarks/apex_throughput.py --backend mpi --systems apex
    mpiexec -n 3 python benchmarks/apex_throughput.py --backend mpi --systems dqn
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from solve_harness import print_machine, script_parser, version

ENV_ID = "CartPole-v1"


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--backend", choices=["dask", "mpi"], default="dask")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time per system")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--fragment", type=int, default=50, help="rollout_fragment_length")
    parser.add_argument("--train-batch", type=int, default=64, help="train_batch_size")
    parser.add_argument("--hiddens", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--systems", nargs="+", default=["apex", "dqn"], choices=["apex", "dqn"])
    return parser.parse_args()


def common_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "env": ENV_ID,
        "backend": args.backend,
        "num_workers": 2,
        "rollout_fragment_length": args.fragment,
        "train_batch_size": args.train_batch,
        "model": {"fcnet_hiddens": args.hiddens},
        "hiddens": [],
        "learning_starts": 1000,
        "buffer_size": 100_000,
        "num_torch_threads": 1,
        "timesteps_per_iteration": 0,
        "seed": 0,
    }


def measure(trainer: Any, args: argparse.Namespace) -> dict[str, float]:
    """Rates over one iteration of ``--seconds``, after one of ``--warmup``."""
    trainer.config["min_iter_time_s"] = args.warmup
    trainer.train()
    before = trainer.optimizer.stats()
    trainer.config["min_iter_time_s"] = args.seconds
    start = time.perf_counter()
    after = trainer.train()["info"]
    elapsed = time.perf_counter() - start
    sampled = (after["num_steps_sampled"] - before["num_steps_sampled"]) / elapsed
    trained = (after["num_steps_trained"] - before["num_steps_trained"]) / elapsed
    # one policy: every update is one train batch
    return {"sampled": sampled, "trained": trained, "updates": trained / args.train_batch}


def run_apex(args: argparse.Namespace) -> dict[str, float]:
    from hpcrl.algorithms.apex import ApexTrainer

    config = {**common_config(args), "num_replay_buffer_shards": 1, "min_iter_time_s": 1.0}
    with ApexTrainer(config) as trainer:
        return measure(trainer, args)


def run_dqn(args: argparse.Namespace) -> dict[str, float]:
    from hpcrl.algorithms.dqn import DQNTrainer

    with DQNTrainer({**common_config(args), "min_iter_time_s": 1.0}) as trainer:
        return measure(trainer, args)


def main() -> None:
    args = parse_args()
    if args.backend == "mpi":
        # One trainer per MPI job: worker ranks exit when its backend shuts down.
        if len(args.systems) != 1:
            raise SystemExit(
                "under MPI run one system per job: `mpiexec -n 4 ... --systems apex`, then "
                "`mpiexec -n 3 ... --systems dqn`"
            )
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() != 0:  # serves an actor in the trainer, never returns
            (run_apex if args.systems == ["apex"] else run_dqn)(args)
            return
    print_machine(1)
    print(
        f"{ENV_ID}, 2 workers ({args.backend}), fragment {args.fragment}, train batch "
        f"{args.train_batch}, MLP {args.hiddens}; {args.seconds:g} s measured after "
        f"{args.warmup:g} s"
    )
    runners = {"apex": ("APEX (1 shard)", run_apex), "dqn": ("DQN (synchronous)", run_dqn)}
    rows = {}
    for system in args.systems:
        name, runner = runners[system]
        rows[system] = figures = runner(args)
        print(
            f"hpcrl {version('hpcrl')} {name}: {figures['sampled']:,.0f} sampled steps/s, "
            f"{figures['trained']:,.0f} trained steps/s, {figures['updates']:,.1f} "
            "learner updates/s",
            flush=True,
        )
    if {"apex", "dqn"} <= rows.keys():
        for key in ("sampled", "trained", "updates"):
            ratio = rows["apex"][key] / max(rows["dqn"][key], 1e-9)
            print(f"APEX / DQN {key}: {ratio:.1f}x")


if __name__ == "__main__":
    main()
