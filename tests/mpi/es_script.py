"""ES or ARS under mpiexec (driver + worker ranks); see test_es_mpi.py.

Usage: mpiexec -n 3 python es_script.py ES|ARS [FAIL_ON_WORKER]

Checks after every iteration that every worker rank holds exactly the driver's
parameters, and prints "IDENTICAL <iterations>". With FAIL_ON_WORKER, that
worker's env raises during the second iteration.
"""

from __future__ import annotations

import sys

import numpy as np
from failing_env import FailingCartPole  # this script's folder is on sys.path

from hpcrl.algorithms.es import ARSTrainer, ESTrainer, flat_state
from hpcrl.env.registry import register_env


def main() -> None:
    algorithm = sys.argv[1]
    fail_on = int(sys.argv[2]) if len(sys.argv) > 2 else -1
    register_env("failing_cartpole", FailingCartPole)
    config = {
        "backend": "mpi",
        "env": "failing_cartpole",
        "env_config": {"fail_on_worker": fail_on, "fail_after": 300},
        "noise_size": 200_000,
        "model": {"fcnet_hiddens": [8]},
        "eval_prob": 0.2,
        "seed": 0,
    }
    if algorithm == "ES":
        trainer = ESTrainer({**config, "episodes_per_batch": 8, "train_batch_size": 0})
    else:
        trainer = ARSTrainer({**config, "num_rollouts": 4, "rollouts_used": 2})
    for _ in range(3):
        result = trainer.train()
        driver = trainer.get_policy().get_flat()
        for theirs in trainer.workers.call_remote("apply", flat_state):
            assert np.array_equal(theirs, driver), "a worker's parameters differ"
    assert result["info"]["exchange_bytes_per_worker"] < 4 * driver.size
    assert result["info"]["exchange"] == "allgather", result["info"]["exchange"]
    workers = trainer.workers.num_workers
    print(f"IDENTICAL {result['training_iteration']} on {workers} workers", flush=True)
    trainer.stop()


if __name__ == "__main__":
    main()
