"""Checkpoint and exact resume under MPI (run with mpiexec -n 3).

Usage: python mpi_resume_script.py first DIR    train 2 iterations, save, train 2 more,
                                                write the weights to DIR/straight.npz
       python mpi_resume_script.py second DIR   restore the checkpoint, train 2 iterations,
                                                write the weights to DIR/resumed.npz
Both record the workers' batches to DIR/batches. With a third argument DQN, the run
is DQN (its replay buffer in the checkpoint) and records nothing.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from hpcrl.algorithms.dqn import DQNTrainer
from hpcrl.algorithms.ppo import PPOTrainer


def main() -> None:
    mode, directory = sys.argv[1], sys.argv[2]
    config = {
        "backend": "mpi",
        "num_workers": 2,
        "model": {"fcnet_hiddens": [16]},
        "num_envs_per_worker": 3,
        "rollout_fragment_length": 30,
        "train_batch_size": 180,
        "sgd_minibatch_size": 60,
        "num_sgd_iter": 2,
        "seed": 4,
        "output": os.path.join(directory, "batches"),
    }
    trainer_class = PPOTrainer
    if len(sys.argv) > 3 and sys.argv[3] == "DQN":
        trainer_class = DQNTrainer
        config = {
            "backend": "mpi",
            "num_workers": 2,
            "model": {"fcnet_hiddens": [16], "fcnet_activation": "relu"},
            "hiddens": [16],
            "n_step": 3,
            "learning_starts": 100,
            "buffer_size": 1000,
            "timesteps_per_iteration": 200,
            "target_network_update_freq": 100,
            "seed": 4,
        }
    trainer = trainer_class(config, env="CartPole-v1")  # worker ranks serve inside
    if mode == "first":
        trainer.train()
        trainer.train()
        trainer.save(os.path.join(directory, "checkpoints"))
    else:
        trainer.restore(os.path.join(directory, "checkpoints", "checkpoint_000002"))
    trainer.train()
    trainer.train()
    name = "straight.npz" if mode == "first" else "resumed.npz"
    np.savez(os.path.join(directory, name), **trainer.get_weights()["default_policy"])
    trainer.stop()
    print(f"DONE {mode}", flush=True)


if __name__ == "__main__":
    main()
