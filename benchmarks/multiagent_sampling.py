"""Multi-agent sampling throughput: ``RolloutWorker.sample()`` with two policies against
a bare loop of the same envs and the same per-policy forward passes.

The env is ``make_multi_agent("CartPole-v1")`` with ``--num-agents`` agents per
copy (independent CartPoles; an agent leaves when its pole falls, the episode
ends when all have), ``--num-envs`` copies per worker. Even agents play policy
``even``, odd agents ``odd`` (both ``A2CTorchPolicy``). For each repeat this times

- **hpcrl**: ``RolloutWorker.sample()`` over ``--samples`` fragments: grouping
  the acting agents of all copies by policy, one forward pass (logits and
  value) per policy, sampling, stepping every copy, storing the rows, linking
  each row to its agent's next observation, and postprocessing (GAE with the
  bootstrap value) per policy -- everything a trainer gets from a worker;
- **bare**: the same env copies and the same two models (``ModelCatalog``) in a
  minimal loop: group the observations by policy, one ``no_grad`` forward +
  value per policy, sample from the softmax, split the actions into per-copy
  dicts, step each copy, reset the copies whose episode ended. It stores
  nothing.

Both count agent steps (rows). The two alternate; the table shows the median
agent steps/s of each and the median of the per-repeat ratios.

With ``--peers rllib`` (needs ``ray[rllib]``, in the ``bench`` extra) the same
run also times RLlib's ``MultiAgentEnvRunner.sample()`` on its own
``make_multi_agent("CartPole-v1")`` with the same copies, agents, fragment
length, policies and MLP; it returns episodes, and leaves GAE to the learner,
so it does less per row than hpcrl's ``sample()``.

Example:
    python benchmarks/multiagent_sampling.py --num-envs 64 --num-agents 4 --repeats 7
    python benchmarks/multiagent_sampling.py --repeats 5 --peers rllib
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.env.multi_agent_env import make_multi_agent
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.models import ModelCatalog

MultiAgentCartPole = make_multi_agent("CartPole-v1")


def policy_of(agent_id: int, episode=None, worker=None, **kwargs) -> str:
    return "even" if agent_id % 2 == 0 else "odd"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, default=64, help="env copies per worker")
    parser.add_argument("--num-agents", type=int, default=4, help="agents per env copy")
    parser.add_argument("--fragment-length", type=int, default=50, help="env steps per copy")
    parser.add_argument("--samples", type=int, default=2, help="sample() calls timed per repeat")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats; median reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed fragments before timing")
    parser.add_argument("--hiddens", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both")
    parser.add_argument("--target", type=float, default=0.60, help="hpcrl / bare ratio to PASS")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: time.perf_counter; cpu: time.process_time (use it when other jobs "
        "share the cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peers", nargs="*", choices=["rllib"], default=[], help="peers timed in the same run"
    )
    return parser.parse_args()


def hpcrl_runner(args: argparse.Namespace) -> Callable[[], int]:
    config = {
        "num_envs_per_worker": args.num_envs,
        "rollout_fragment_length": args.fragment_length,
        "model": {"fcnet_hiddens": args.hiddens},
        "seed": args.seed,
        "multiagent": {"policies": ["even", "odd"], "policy_mapping_fn": policy_of},
    }
    worker = RolloutWorker(
        lambda env_config: MultiAgentCartPole({"num_agents": args.num_agents}),
        A2CTorchPolicy,
        config,
    )
    for _ in range(args.warmup):
        worker.sample()
    return lambda: sum(worker.sample().agent_steps() for _ in range(args.samples))


def bare_runner(args: argparse.Namespace) -> Callable[[], int]:
    envs = [MultiAgentCartPole({"num_agents": args.num_agents}) for _ in range(args.num_envs)]
    obs_space, action_space = envs[0].observation_space, envs[0].action_space
    model_config = {"fcnet_hiddens": args.hiddens}
    _, num_outputs = ModelCatalog.get_action_dist(action_space, model_config)
    torch.manual_seed(args.seed)
    models = {
        pid: ModelCatalog.get_model(obs_space, action_space, num_outputs, model_config).eval()
        for pid in ("even", "odd")
    }
    generator = torch.Generator().manual_seed(args.seed)
    observations = [env.reset(seed=args.seed + 100 * i)[0] for i, env in enumerate(envs)]

    def step(n: int) -> int:
        rows = 0
        with torch.no_grad():
            for _ in range(n):
                groups: dict[str, list] = {"even": [], "odd": []}
                for e, obs in enumerate(observations):
                    for agent_id, ob in obs.items():
                        groups[policy_of(agent_id)].append((e, agent_id, ob))
                actions: list[dict] = [{} for _ in envs]
                for pid, entries in groups.items():
                    if not entries:
                        continue
                    batch = torch.from_numpy(np.stack([ob for _, _, ob in entries]))
                    logits, _ = models[pid]({"obs": batch}, [], None)
                    models[pid].value_function()
                    probs = torch.softmax(logits, dim=-1)
                    chosen = torch.multinomial(probs, 1, generator=generator).squeeze(-1).numpy()
                    for (e, agent_id, _), action in zip(entries, chosen):
                        actions[e][agent_id] = action
                    rows += len(entries)
                for e, env in enumerate(envs):
                    obs, _, terminateds, truncateds, _ = env.step(actions[e])
                    if terminateds["__all__"] or truncateds["__all__"]:
                        obs, _ = env.reset()
                    else:
                        obs = {
                            a: o
                            for a, o in obs.items()
                            if not (terminateds.get(a) or truncateds.get(a))
                        }
                    observations[e] = obs
        return rows

    step(args.warmup * args.fragment_length)
    return lambda: step(args.samples * args.fragment_length)


def rllib_runner(args: argparse.Namespace) -> Callable[[], int]:
    """RLlib's multi-agent env runner (new API stack) on the same work."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.env.multi_agent_env import make_multi_agent as rllib_make_multi_agent
    from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner

    config = (
        PPOConfig()
        .environment(
            rllib_make_multi_agent("CartPole-v1"), env_config={"num_agents": args.num_agents}
        )
        .multi_agent(
            policies={"even", "odd"},
            policy_mapping_fn=lambda agent_id, episode, **kwargs: policy_of(agent_id),
        )
        .env_runners(
            num_env_runners=0,
            num_envs_per_env_runner=args.num_envs,
            rollout_fragment_length=args.fragment_length,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=args.hiddens))
        .debugging(seed=args.seed)
    )
    runner = MultiAgentEnvRunner(config=config)
    for _ in range(args.warmup):
        runner.sample()

    def run() -> int:
        rows = 0
        for _ in range(args.samples):
            rows += sum(episode.agent_steps() for episode in runner.sample())
        return rows

    return run


def rate(run: Callable[[], int], clock: Callable[[], float]) -> float:
    start = clock()
    steps = run()
    return steps / (clock() - start)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"make_multi_agent('CartPole-v1'), {args.num_envs} copies x {args.num_agents} agents, "
        f"2 A2CTorchPolicy policies, fcnet_hiddens={args.hiddens}, "
        f"rollout_fragment_length={args.fragment_length}, torch threads={args.threads}, "
        f"{args.clock} clock, {args.samples} fragments x {args.repeats} repeats (median)"
    )
    print(
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"gymnasium {gym.__version__}, numpy {np.__version__}"
    )
    runs = {"hpcrl": hpcrl_runner(args), "bare": bare_runner(args)}
    if "rllib" in args.peers:
        try:
            runs["rllib"] = rllib_runner(args)
        except ImportError as err:
            print(f"RLlib not run: {err} (pip install 'ray[rllib]')")
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():  # alternating, so load changes hit all alike
            rates[name].append(rate(run, clock))
    ratio = statistics.median(h / b for h, b in zip(rates["hpcrl"], rates["bare"]))
    result = "PASS" if ratio >= args.target else "FAIL"
    print(f"{'hpcrl agent steps/s':>20}  {'bare agent steps/s':>19}  {'ratio':>6}  result")
    print(
        f"{statistics.median(rates['hpcrl']):>20,.0f}  "
        f"{statistics.median(rates['bare']):>19,.0f}  "
        f"{ratio:>6.1%}  {result} (target {args.target:.0%})",
        flush=True,
    )
    if "rllib" in rates:
        import ray

        rllib = statistics.median(rates["rllib"])
        speedup = statistics.median(h / r for h, r in zip(rates["hpcrl"], rates["rllib"]))
        print(
            f"RLlib {ray.__version__} MultiAgentEnvRunner.sample(): {rllib:,.0f} agent steps/s; "
            f"hpcrl is {speedup:.1f}x as fast"
        )


if __name__ == "__main__":
    main()
