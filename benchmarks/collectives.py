"""What ES and DD-PPO send per iteration and rank, and how long an iteration takes,
with 1 and 2 workers, beside synchronous PPO with the same total envs.

CartPole-v1, a 64-64 tanh MLP, workers as Dask worker processes of a local
cluster (``--backend dask``) or as MPI ranks (``--backend mpi``: each system
and worker count is one ``mpiexec -n <workers + 1>`` job started by this
script), one torch thread each. For each system and worker count: the median
iteration time over ``--iterations`` iterations (after one warm-up), and the
bytes one worker rank sends per iteration, counted from the contents of what
it sends (array bytes; not measured on the wire):

- **ES**: its share: noise indices, returns and lengths of its episode pairs
  and its observation statistics (``info/exchange_bytes_per_worker``): a few
  numbers per episode, whatever the size of the network. Under MPI the shares
  are exchanged in one ``allgather`` over the ranks; on Dask they go through
  the driver (``info/exchange`` says which);
- **DD-PPO**: one all-reduce of the gradients per minibatch: parameters x 4
  bytes x minibatches per epoch x epochs (a ring all-reduce sends about twice
  that per rank);
- **PPO (synchronous)**: its sample batch to the driver (rows x bytes per
  row), and it receives the weights (parameters x 4 bytes).

Example:
    python benchmarks/collectives.py --iterations 5
    python benchmarks/collectives.py --iterations 5 --backend mpi
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
from solve_harness import print_machine, script_parser, version

ENV_ID = "CartPole-v1"
MODEL = {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh"}


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--iterations", type=int, default=5, help="measured iterations")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--envs", type=int, default=4, help="envs per worker (PPO, DD-PPO)")
    parser.add_argument("--fragment", type=int, default=128, help="rollout_fragment_length")
    parser.add_argument("--episodes", type=int, default=40, help="ES episodes per iteration")
    parser.add_argument("--backend", choices=["dask", "mpi"], default="dask")
    parser.add_argument("--system", help=argparse.SUPPRESS)  # an mpiexec child: one system
    return parser.parse_args()


def timed_iterations(trainer: Any, iterations: int) -> tuple[float, dict[str, Any]]:
    trainer.train()  # warm-up
    times, result = [], {}
    for _ in range(iterations):
        start = time.perf_counter()
        result = trainer.train()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def num_params(trainer: Any) -> int:
    return sum(v.size for v in trainer.get_policy().get_weights().values())


def run_es(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    from hpcrl.algorithms.es import ESTrainer

    config = {"backend": args.backend, "num_workers": workers, "model": MODEL, "seed": 0,
              "episodes_per_batch": args.episodes, "train_batch_size": 0,
              "noise_size": 5_000_000, "num_torch_threads": 1}  # fmt: skip
    with ESTrainer(config, env=ENV_ID) as trainer:
        seconds, result = timed_iterations(trainer, args.iterations)
        params = num_params(trainer)
    info = result["info"]
    return {"seconds": seconds, "sent": info["exchange_bytes_per_worker"], "params": params,
            "steps": result["timesteps_this_iter"], "exchange": info["exchange"]}  # fmt: skip


def run_ddppo(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    from hpcrl.algorithms.ddppo import DDPPOTrainer

    config = {"backend": args.backend, "num_workers": workers, "model": MODEL, "seed": 0,
              "num_envs_per_worker": args.envs, "rollout_fragment_length": args.fragment,
              "sgd_minibatch_size": 128, "num_sgd_iter": 4, "num_torch_threads": 1}  # fmt: skip
    with DDPPOTrainer(config, env=ENV_ID) as trainer:
        seconds, result = timed_iterations(trainer, args.iterations)
        params = num_params(trainer)
        optimizer = trainer.optimizer
        allreduces = optimizer.minibatches_per_epoch * optimizer.num_sgd_iter
    sent = params * 4 * allreduces if workers > 1 else 0
    return {"seconds": seconds, "sent": sent, "params": params,
            "steps": result["timesteps_this_iter"]}  # fmt: skip


def run_ppo(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    from hpcrl.algorithms.ppo import PPOTrainer

    rows = workers * args.envs * args.fragment
    config = {"backend": args.backend, "num_workers": workers, "model": MODEL, "seed": 0,
              "num_envs_per_worker": args.envs, "rollout_fragment_length": args.fragment,
              "train_batch_size": rows, "sgd_minibatch_size": 128, "num_sgd_iter": 4,
              "num_torch_threads": 1}  # fmt: skip
    with PPOTrainer(config, env=ENV_ID) as trainer:
        seconds, result = timed_iterations(trainer, args.iterations)
        params = num_params(trainer)
        [batch] = trainer.workers.call_remote("sample")[:1]
    sent = sum(v.nbytes for v in batch.values() if isinstance(v, np.ndarray))
    return {"seconds": seconds, "sent": sent, "received": params * 4, "params": params,
            "steps": result["timesteps_this_iter"]}  # fmt: skip


RUNNERS = {"ES": run_es, "DD-PPO": run_ddppo, "PPO (synchronous)": run_ppo}


def run_under_mpiexec(args: argparse.Namespace, name: str, workers: int) -> dict[str, Any]:
    """One system and worker count as its own ``mpiexec -n <workers + 1>`` job (one
    MPIBackend per job); its rank 0 prints the row as JSON."""
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("--backend mpi needs mpiexec on PATH (pip install mpich)")
    command = [mpiexec, "-n", str(workers + 1), sys.executable, __file__, "--backend", "mpi",
               "--system", name, "--workers", str(workers), "--iterations", str(args.iterations),
               "--envs", str(args.envs), "--fragment", str(args.fragment),
               "--episodes", str(args.episodes)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    rows = [line for line in out.stdout.splitlines() if line.startswith("ROW ")]
    if out.returncode != 0 or not rows:
        raise SystemExit(f"{' '.join(command)} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}")
    return json.loads(rows[-1][4:])


def main() -> None:
    args = parse_args()
    if args.system is not None:  # rank 0 of an mpiexec child (the others serve in it)
        row = RUNNERS[args.system](args, args.workers[0])
        print("ROW " + json.dumps(row), flush=True)
        return
    print_machine(1)
    where = "Dask workers" if args.backend == "dask" else "MPI ranks (one job per row)"
    print(
        f"{ENV_ID}, MLP 64-64, {where}; {args.iterations} measured iterations; "
        f"PPO and DD-PPO: {args.envs} envs x {args.fragment} steps per worker; ES: "
        f"{args.episodes} episodes per iteration"
    )
    print(f"{'system':<20} {'workers':>7} {'s/iter':>8} {'steps/iter':>10} "
          f"{'bytes sent/rank/iter':>21} {'parameters':>10}")  # fmt: skip
    for name, runner in RUNNERS.items():
        for workers in args.workers:
            if args.backend == "mpi":
                row = run_under_mpiexec(args, name, workers)
            else:
                row = runner(args, workers)
            extra = f"  (+ receives {row['received']:,} of weights)" if "received" in row else ""
            if "exchange" in row:
                extra = f"  (exchange: {row['exchange']})"
            print(
                f"{name:<20} {workers:>7} {row['seconds']:>8.3f} {row['steps']:>10,} "
                f"{row['sent']:>21,} {row['params']:>10,}{extra}",
                flush=True,
            )
    print(f"hpcrl {version('hpcrl')}")


if __name__ == "__main__":
    main()
