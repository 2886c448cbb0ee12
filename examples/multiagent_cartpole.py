"""Several agents, one shared policy (or one policy each): PPO on a multi-agent CartPole.

``make_multi_agent("CartPole-v1")`` turns CartPole into a MultiAgentEnv of
``--num-agents`` independent poles; an agent leaves when its pole falls and the
episode ends when every pole has. With ``--policies shared`` every agent is
mapped to one policy, which learns from all their experience (one batched
forward pass per step for every agent of every env copy); with ``--policies
per-agent`` agent ``i`` plays policy ``policy_i``, each learning only from its
own agent.

Training stops when every policy's mean return per agent episode
(``policy_reward_mean``) reaches ``--stop-reward``; exits 1 if that does not
happen within ``--max-timesteps`` env steps.

    python examples/multiagent_cartpole.py --num-agents 4 --policies shared
    python examples/multiagent_cartpole.py --num-agents 2 --policies per-agent --num-workers 2
"""

from __future__ import annotations

import argparse

from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.env.multi_agent_env import make_multi_agent
from hpcrl.env.registry import register_env

MultiAgentCartPole = make_multi_agent("CartPole-v1")


def shared(agent_id, episode, worker, **kwargs) -> str:
    """Every agent plays the one shared policy."""
    return "shared"


def per_agent(agent_id, episode, worker, **kwargs) -> str:
    """Agent ``i`` plays ``policy_i``."""
    return f"policy_{agent_id}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-agents", type=int, default=4)
    parser.add_argument("--policies", choices=["shared", "per-agent"], default="shared")
    parser.add_argument("--stop-reward", type=float, default=150.0)
    parser.add_argument("--max-timesteps", type=int, default=200_000)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--backend", choices=["local", "dask", "mpi"], default="local")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    register_env(
        "multi_cartpole", lambda config: MultiAgentCartPole({"num_agents": args.num_agents})
    )
    if args.policies == "shared":
        multiagent = {"policies": ["shared"], "policy_mapping_fn": shared}
    else:
        ids = [f"policy_{i}" for i in range(args.num_agents)]
        multiagent = {"policies": ids, "policy_mapping_fn": per_agent}
    config = {
        "env": "multi_cartpole",
        "num_workers": args.num_workers,
        "backend": args.backend,
        "num_envs_per_worker": 8,
        "rollout_fragment_length": 64,
        "train_batch_size": 2048,
        "sgd_minibatch_size": 512,
        "num_sgd_iter": 4,
        "lr": 3e-3,
        "lambda": 0.9,
        "kl_coeff": 0.0,
        "model": {"fcnet_hiddens": [64, 64]},
        "seed": args.seed,
        "multiagent": multiagent,
    }
    with PPOTrainer(config) as trainer:
        while True:
            result = trainer.train()
            rewards = result["policy_reward_mean"]
            shown = "  ".join(f"{pid} {value:6.1f}" for pid, value in sorted(rewards.items()))
            print(
                f"iter {result['training_iteration']:3d}  "
                f"timesteps {result['timesteps_total']:7d}  {shown}",
                flush=True,
            )
            reached = len(rewards) == len(multiagent["policies"]) and all(
                value >= args.stop_reward for value in rewards.values()
            )
            if reached or result["timesteps_total"] >= args.max_timesteps:
                break
    if reached:
        print(
            f"OK: every policy ({args.policies}) reached {args.stop_reward} per agent episode "
            f"after {result['timesteps_total']} env steps"
        )
        return 0
    print(f"FAILED: policy_reward_mean {rewards} below {args.stop_reward}")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
