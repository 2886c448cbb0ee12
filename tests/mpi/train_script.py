"""Train under mpiexec (or locally) and save the final weights; see test_mpi_backend.py.

Usage: python train_script.py ALGO BACKEND ITERATIONS OUT.npz [FAIL_ON_WORKER]

ALGO "PPO-two-policies" trains PPO with two policies on a multi-agent CartPole.
"""

from __future__ import annotations

import sys

import numpy as np
from failing_env import FailingCartPole  # this script's folder is on sys.path

from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.env.multi_agent_env import make_multi_agent
from hpcrl.env.registry import register_env


def with_agents(context, num_agents: int):
    context = context.copy_with()
    context["num_agents"] = num_agents
    return context


def by_parity(agent_id, episode=None, worker=None, **kwargs):
    return "even" if agent_id % 2 == 0 else "odd"


def main() -> None:
    algo, backend, iterations, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    fail_on = int(sys.argv[5]) if len(sys.argv) > 5 else -1
    register_env("failing_cartpole", FailingCartPole)
    two_policies = algo.endswith("-two-policies")
    if two_policies:
        algo = algo.removesuffix("-two-policies")
        multi_cartpole = make_multi_agent(lambda cfg: FailingCartPole(cfg))
        register_env("failing_cartpole", lambda cfg: multi_cartpole(with_agents(cfg, 3)))
    config = {
        "backend": backend,
        "num_workers": 2,
        "seed": 7,
        "num_envs_per_worker": 4,
        "rollout_fragment_length": 32,
        "model": {"fcnet_hiddens": [32, 32]},
        "env_config": {"fail_on_worker": fail_on},
        "num_torch_threads": 1,
    }
    if algo == "PPO":
        config.update(train_batch_size=256, sgd_minibatch_size=64, num_sgd_iter=2)
    if algo == "A3C":
        config.update(grads_per_step=10)
    if algo in ("IMPALA", "APPO"):
        config.update(train_batch_size=256, min_iter_time_s=0.0, timesteps_per_iteration=512)
    if two_policies:
        config["multiagent"] = {"policies": ["even", "odd"], "policy_mapping_fn": by_parity}
    trainer = get_trainer_class(algo)(config, env="failing_cartpole")
    for _ in range(iterations):
        result = trainer.train()
    weights = trainer.get_weights()
    np.savez(
        out, **{f"{pid}/{key}": value for pid in weights for key, value in weights[pid].items()}
    )
    print(
        f"TRAINED {algo} on {backend}: {result['timesteps_total']} steps, "
        f"{result['num_healthy_workers']} workers",
        flush=True,
    )
    trainer.stop()


if __name__ == "__main__":
    main()
