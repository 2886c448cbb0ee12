"""PPO on CartPole-v1 with rollout workers on Dask, surviving a killed worker process.

Starts a Dask ``LocalCluster`` (or joins the scheduler given with
``--dask-address``), trains PPO with ``--num-workers`` rollout workers, each
a Dask actor in a worker process of its own, and, with ``--kill-at N``,
kills one of those processes with SIGKILL after iteration N, as a crashed
node would. The trainer notices, re-creates the rollout worker on a live
Dask worker with the current weights, and goes on: the result's
``num_worker_restarts`` goes to 1 and ``num_healthy_workers`` stays at
``--num-workers``. Exits non-zero if training did not go on that way.

Run:
    python examples/dask_cartpole.py --iterations 10 --kill-at 3
    python examples/dask_cartpole.py --dask-address tcp://127.0.0.1:8786
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from hpcrl.algorithms.ppo import PPOTrainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--num-envs", type=int, default=16, help="envs per rollout worker")
    parser.add_argument("--dask-address", help="scheduler to join (default: a local cluster)")
    parser.add_argument(
        "--kill-at", type=int, default=0, help="kill a worker process after this iteration"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = {
        "backend": "dask",
        "dask_address": args.dask_address,
        "num_workers": args.num_workers,
        "num_envs_per_worker": args.num_envs,
        "rollout_fragment_length": 64,
        "train_batch_size": args.num_envs * 64 * args.num_workers,
        "sgd_minibatch_size": 256,
        "num_sgd_iter": 3,
        "lr": 0.003,
        "seed": args.seed,
    }
    with PPOTrainer(config, env="CartPole-v1") as trainer:
        for _ in range(args.iterations):
            result = trainer.train()
            print(
                f"iter {result['training_iteration']:3d}  steps {result['timesteps_total']:7d}  "
                f"reward {result['episode_reward_mean']:6.1f}  "
                f"healthy workers {result['num_healthy_workers']}  "
                f"restarts {result['num_worker_restarts']}",
                flush=True,
            )
            if result["training_iteration"] == args.kill_at:
                victim = trainer.workers.remote_workers()[0]
                print(f"killing {victim.describe()} with SIGKILL", flush=True)
                os.kill(victim.pid, signal.SIGKILL)
    expected = 1 if 0 < args.kill_at < args.iterations else 0
    ok = (
        result["num_worker_restarts"] == expected
        and result["num_healthy_workers"] == args.num_workers
    )
    print(
        f"{'OK' if ok else 'FAILED'}: {result['training_iteration']} iterations, "
        f"{result['num_worker_restarts']} worker restart(s) (expected {expected}), "
        f"{result['num_healthy_workers']} healthy workers"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
