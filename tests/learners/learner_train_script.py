"""Train PPO on CartPole with data-parallel learners; run by the learner tests.

Usage: python learner_train_script.py BACKEND ITERATIONS NUM_LEARNERS [failing]

Under ``--backend mpi`` run it on every rank (``mpiexec -n 4``: the driver,
one rollout worker, two learners). Prints the return of the first and the
last iteration. With ``failing`` the policy is ``FailingPPOPolicy``: the
learner named by the environment variable ``FAIL_ON_LEARNER`` raises.
"""

from __future__ import annotations

import sys
import time

from learner_helpers import PPO_CARTPOLE, FailingPPOPolicy

from hpcrl.algorithms.ppo import PPOTrainer


def main() -> None:
    backend, iterations, num_learners = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    failing = sys.argv[4:] == ["failing"]
    config = {
        **PPO_CARTPOLE,
        "backend": backend,
        "num_workers": 1 if backend != "local" else 0,
        "num_learners": num_learners,
    }
    trainer_class = PPOTrainer
    if failing:
        trainer_class = PPOTrainer.with_updates(default_policy=FailingPPOPolicy)
    trainer = trainer_class(config, env="CartPole-v1")
    start = time.monotonic()
    returns = []
    for _ in range(iterations):
        result = trainer.train()
        returns.append(result["episode_reward_mean"])
    info = result["info"]
    print(
        f"TRAINED on {backend} with {info['num_learners']} learners ({info['learner_backend']}): "
        f"first {returns[0]:.1f} last {returns[-1]:.1f} in {time.monotonic() - start:.1f}s; "
        f"kl_coeff {trainer.get_policy().kl_coeff:.4f} "
        f"learner stats {sorted(info['learner']['default_policy'])}",
        flush=True,
    )
    trainer.stop()


if __name__ == "__main__":
    main()
