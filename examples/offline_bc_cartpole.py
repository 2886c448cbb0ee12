"""Offline learning: record a PPO policy's batches to HDF5, then clone it with BC.

1. PPO trains on CartPole-v1 until its mean return reaches ``--ppo-reward``.
2. A rollout worker with ``config["output"] = DIR`` plays the PPO policy and
   records ``--record-batches`` batches: one HDF5 file per worker in DIR, one
   dataset per column, readable with plain h5py.
3. BC (behaviour cloning) learns from DIR alone (``config["input"] = DIR``; its
   workers step no env), evaluated on CartPole-v1 after every iteration, until
   its greedy mean return reaches ``--target``.
4. The BC trainer saves a checkpoint; ``hpcrl evaluate CHECKPOINT`` plays it.

Exits non-zero if BC does not reach ``--target`` within ``--max-iterations``.

Run:
    python examples/offline_bc_cartpole.py
    python examples/offline_bc_cartpole.py --ppo-reward 300 --target 450 --out-dir /tmp/bc
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import h5py
import torch
import yaml

from hpcrl.algorithms.bc import BCTrainer
from hpcrl.algorithms.ppo import PPOTorchPolicy, PPOTrainer
from hpcrl.evaluation.rollout_worker import RolloutWorker

TUNED = Path(__file__).resolve().parent / "tuned" / "cartpole-ppo.yaml"
# PPO with the tuned settings of tuned/cartpole-ppo.yaml (64 envs, 2,048-step batches).
PPO_CONFIG = next(iter(yaml.safe_load(TUNED.read_text()).values()))["config"]


def train_ppo(reward: float, seed: int) -> dict:
    with PPOTrainer({**PPO_CONFIG, "seed": seed}, env="CartPole-v1") as ppo:
        result = {"episode_reward_mean": 0.0, "timesteps_total": 0}
        while result["episode_reward_mean"] < reward and result["timesteps_total"] < 300_000:
            result = ppo.train()
        print(
            f"PPO: mean return {result['episode_reward_mean']:.1f} after "
            f"{result['timesteps_total']} steps"
        )
        return ppo.get_weights()


def record(weights: dict, directory: Path, batches: int, seed: int) -> None:
    config = {**PPO_CONFIG, "seed": seed + 1, "output": str(directory)}
    worker = RolloutWorker("CartPole-v1", PPOTorchPolicy, config)
    worker.set_weights(weights)
    rows = sum(worker.sample().count for _ in range(batches))
    worker.stop()
    [path] = directory.glob("*.h5")
    with h5py.File(path, "r", swmr=True) as f:
        columns = ", ".join(sorted(f["policies/default_policy"]))
        print(f"recorded {f['index'].shape[0]} batches, {rows} rows, to {path.name}")
    print(f"  datasets of policies/default_policy: {columns}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ppo-reward", type=float, default=150.0)
    parser.add_argument("--record-batches", type=int, default=4)
    parser.add_argument("--target", type=float, default=195.0)
    parser.add_argument("--max-iterations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", help="where to put data and checkpoints (default: temp)")
    args = parser.parse_args()
    # Small MLPs: one torch thread is fastest, and avoids contention on a shared machine.
    torch.set_num_threads(1)

    out = Path(args.out_dir or tempfile.mkdtemp(prefix="offline_bc_"))
    data = out / "ppo_batches"
    record(train_ppo(args.ppo_reward, args.seed), data, args.record_batches, args.seed)

    config = {"input": str(data), "seed": args.seed, "lr": 0.003, "model": PPO_CONFIG["model"]}
    with BCTrainer(config, env="CartPole-v1") as bc:
        for _ in range(args.max_iterations):
            result = bc.train()
            evaluation = result["evaluation"]
            loss = result["info"]["learner"]["default_policy"]["policy_loss"]
            print(
                f"BC iter {result['training_iteration']:2d}  rows read "
                f"{result['timesteps_total']:6d}  -log p(a|s) {loss:.3f}  greedy return "
                f"{evaluation['episode_reward_mean']:.1f}",
                flush=True,
            )
            if evaluation["episode_reward_mean"] >= args.target:
                break
        checkpoint = bc.save(str(out / "bc"))
    greedy = evaluation["episode_reward_mean"]
    reached = greedy >= args.target
    print(f"{'OK' if reached else 'NOT reached'}: BC greedy return {greedy:.1f}")
    print(f"checkpoint: {checkpoint}\n  play it: hpcrl evaluate {checkpoint} --episodes 5")
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
