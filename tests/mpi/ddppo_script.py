"""DD-PPO under mpiexec (driver + worker ranks that sample and learn); see
test_ddppo_mpi.py.

Usage: mpiexec -n 3 python ddppo_script.py [FAIL_ON_WORKER | gpu]

Checks after every iteration that every worker holds the same weights and
optimizer state, and that the driver's policy becomes worker 0's when it
pauses (checkpoints); prints "IDENTICAL <iterations>". With FAIL_ON_WORKER,
that worker's env raises during the second iteration; with "gpu", every worker
samples and learns on a GPU of its own, the gradients all-reduced over NCCL.
"""

from __future__ import annotations

import sys

import numpy as np
from failing_env import FailingCartPole  # this script's folder is on sys.path

from hpcrl.algorithms.ddppo import DDPPOTrainer
from hpcrl.env.registry import register_env


def weights(state: dict) -> dict:
    return state["default_policy"]["weights"]


def main() -> None:
    gpu = sys.argv[1:] == ["gpu"]
    fail_on = int(sys.argv[1]) if len(sys.argv) > 1 and not gpu else -1
    register_env("failing_cartpole", FailingCartPole)
    config = {
        "backend": "mpi",
        "env": "failing_cartpole",
        "env_config": {"fail_on_worker": fail_on, "fail_after": 40},
        "rollout_fragment_length": 32,
        "num_envs_per_worker": 2,
        "sgd_minibatch_size": 16,
        "num_sgd_iter": 2,
        "model": {"fcnet_hiddens": [16]},
        "seed": 0,
        "num_gpus_per_worker": int(gpu),
    }
    trainer = DDPPOTrainer(config)
    for _ in range(3):
        result = trainer.train()
        first, *others = trainer.workers.call_remote("get_policy_states")
        for other in others:
            for key, value in weights(first).items():
                assert np.array_equal(weights(other)[key], value), key
        with trainer.optimizer.paused():
            mine = trainer.get_policy().get_weights()
        for key, value in weights(first).items():
            assert np.array_equal(mine[key], value), key
    assert result["info"]["learner_backend"] == ("nccl" if gpu else "gloo")
    devices = [f"cuda:{k}" for k in range(2)] if gpu else ["cpu", "cpu"]
    assert result["info"]["worker_devices"] == devices, result["info"]["worker_devices"]
    workers = result["info"]["num_workers_learning"]
    print(f"IDENTICAL {result['training_iteration']} on {workers} workers", flush=True)
    trainer.stop()


if __name__ == "__main__":
    main()
