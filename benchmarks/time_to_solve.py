"""Time to solve: hpcrl against Stable-Baselines3 and CleanRL-style PPO, classic control.

For each task, seed and system this starts a fresh Python process that trains
until the mean return of the last 100 training episodes reaches the env's
threshold, and times it from spawn to exit in this (parent) process, so
imports, env and model construction, training and exit all count.

    task          env           solved at   hpcrl / sb3 median wall time
    cartpole-ppo  CartPole-v1     475       <= 1/8
    acrobot-ppo   Acrobot-v1     -100       <= 1/4
    pendulum-ppo  Pendulum-v1    -200       <= 1/4
    cartpole-a2c  CartPole-v1     475       <= 1/8
    acrobot-a2c   Acrobot-v1     -100       <= 1/4

A task passes when hpcrl's median wall time over SB3's is at most its target
and every hpcrl seed solved. The systems (``--systems``):

- **hpcrl** runs ``hpcrl train -f examples/tuned/<task>.yaml --seed S -q``.
  Each file stops by itself when ``episode_reward_mean`` (mean of the last 100
  completed episodes) reaches the threshold, or on its ``timesteps_total`` cap;
  the seed solved iff the last result's ``episode_reward_mean`` reaches the
  threshold. ``--hpcrl-config JSON`` is passed on as ``--config``.
- **sb3** runs this script as a child (``--child sb3 --task T --seed S``): SB3's
  PPO or A2C with the rl-baselines3-zoo entry for the env (``SB3_ZOO``) on
  ``make_vec_env`` (DummyVecEnv, as the zoo uses), wrapped in ``VecNormalize``
  where the zoo says ``normalize: true``, ``device="cpu"``. A callback stops
  training as soon as the 100-episode buffer holds 100 episodes (raw returns,
  from the Monitor inside) with mean >= the threshold. Budget: the zoo's own
  ``n_timesteps`` (``--sb3-budget`` overrides it for every task; the zoo's
  linear schedules span the budget).
- **cleanrl** (PPO tasks only: there is no CleanRL A2C run to compare against)
  runs this script as a child (``--child cleanrl --task T --seed S``): the
  algorithm of CleanRL's ``ppo.py`` (discrete actions) or
  ``ppo_continuous_action.py`` (Pendulum) with their default hyperparameters,
  written out below without CleanRL's logging, stopped like the SB3 child.
  Budget: CleanRL's own ``total_timesteps``, 500,000 env steps on CartPole
  and Acrobot; on Pendulum, where CleanRL's 1,000,000 steps would take ~12
  minutes a seed on the 2-core VM, 204,800 (100 rollouts, under 3 minutes;
  ``CLEANRL_BUDGET``). ``--cleanrl-budget`` overrides it for every task. The
  learning rate anneals to 0 over the budget, as in CleanRL.

Seeds run one after the other, the systems alternating, so that changes in
machine load hit all alike; every process runs with ``--threads`` torch threads
(1 by default). Per task the script prints every run and a table (seeds
solved, median wall time and env steps per system), the hpcrl / sb3 verdict
and hpcrl / cleanrl for information; at the end one summary table over the
tasks (``--markdown``: also as a Markdown table). It exits 0 whatever the
verdicts.

Example:
    python benchmarks/time_to_solve.py --tasks cartpole-ppo pendulum-ppo --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import yaml
from solve_harness import (
    TUNED,
    SeedResult,
    SystemSummary,
    add_run_arguments,
    compile_hpcrl_bytecode,
    print_machine,
    print_table,
    run_child,
    run_hpcrl_train,
    run_seeds,
    script_parser,
    summarise,
    zoo_schedule,
)
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

SYSTEMS = ("hpcrl", "sb3", "cleanrl")
EPISODES_IN_MEAN = 100


@dataclass(frozen=True)
class Task:
    name: str
    """also the name of the hpcrl experiment file, examples/tuned/<name>.yaml"""
    env_id: str
    algorithm: str
    """PPO or A2C"""
    solved_return: float
    """the mean return of the last 100 training episodes that counts as solved"""
    target: float
    """the most hpcrl's median wall time may be of SB3's"""

    @property
    def experiment_file(self) -> Path:
        return TUNED / f"{self.name}.yaml"


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("cartpole-ppo", "CartPole-v1", "PPO", 475.0, 1 / 8),
        Task("acrobot-ppo", "Acrobot-v1", "PPO", -100.0, 1 / 4),
        Task("pendulum-ppo", "Pendulum-v1", "PPO", -200.0, 1 / 4),
        Task("cartpole-a2c", "CartPole-v1", "A2C", 475.0, 1 / 8),
        Task("acrobot-a2c", "Acrobot-v1", "A2C", -100.0, 1 / 4),
    )
}

# The rl-baselines3-zoo entries for each env, verified against
# https://github.com/DLR-RM/rl-baselines3-zoo hyperparams/ppo.yml (commit 208b6fd)
# and hyperparams/a2c.yml (commit c6c209e); keys not given keep SB3's defaults.
# "lin_X" is a schedule falling linearly from X to 0 over the budget.
# "normalize: true" is VecNormalize with its defaults (observations and rewards)
# and the algorithm's gamma, as the zoo's ExperimentManager wraps it.
SB3_ZOO: dict[str, dict[str, Any]] = {
    "cartpole-ppo": {
        "n_envs": 8,
        "n_timesteps": 1e5,
        "policy": "MlpPolicy",
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "learning_rate": "lin_0.001",
        "clip_range": "lin_0.2",
    },
    "acrobot-ppo": {
        "normalize": True,
        "n_envs": 16,
        "n_timesteps": 1e6,
        "policy": "MlpPolicy",
        "n_steps": 256,
        "gae_lambda": 0.94,
        "gamma": 0.99,
        "n_epochs": 4,
        "ent_coef": 0.0,
    },
    "pendulum-ppo": {
        "n_envs": 4,
        "n_timesteps": 1e5,
        "policy": "MlpPolicy",
        "n_steps": 1024,
        "gae_lambda": 0.95,
        "gamma": 0.9,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 1e-3,
        "clip_range": 0.2,
        "use_sde": True,
        "sde_sample_freq": 4,
    },
    "cartpole-a2c": {
        "n_envs": 8,
        "n_timesteps": 5e5,
        "policy": "MlpPolicy",
        "ent_coef": 0.0,
    },
    "acrobot-a2c": {
        "normalize": True,
        "n_envs": 16,
        "n_timesteps": 5e5,
        "policy": "MlpPolicy",
        "ent_coef": 0.0,
    },
}


@dataclass(frozen=True)
class CleanRLConfig:
    """The defaults of one CleanRL PPO file (https://github.com/vwxyzjn/cleanrl).
    Advantage normalisation, the clipped value loss and learning-rate annealing
    are on in both, and no target KL stops an update early."""

    continuous: bool
    """ppo_continuous_action.py: Gaussian policy, obs and reward normalisation"""
    num_envs: int
    """envs in the SyncVectorEnv"""
    num_steps: int
    """steps per env in each rollout"""
    learning_rate: float
    """Adam's learning rate at the start, annealed linearly to 0 over the budget"""
    num_minibatches: int
    """minibatches per epoch over the rollout"""
    update_epochs: int
    """epochs of minibatch SGD per rollout"""
    ent_coef: float
    """weight of the entropy bonus"""
    total_timesteps: int
    """CleanRL's own budget"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE's lambda"""
    clip_coef: float = 0.2
    """clip range of the probability ratio and of the value change"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """global gradient norm clip"""


# cleanrl/ppo.py and cleanrl/ppo_continuous_action.py, Args defaults.
CLEANRL_DISCRETE = CleanRLConfig(
    continuous=False,
    num_envs=4,
    num_steps=128,
    learning_rate=2.5e-4,
    num_minibatches=4,
    update_epochs=4,
    ent_coef=0.01,
    total_timesteps=500_000,
)
CLEANRL_CONTINUOUS = CleanRLConfig(
    continuous=True,
    num_envs=1,
    num_steps=2048,
    learning_rate=3e-4,
    num_minibatches=32,
    update_epochs=10,
    ent_coef=0.0,
    total_timesteps=1_000_000,
)
CLEANRL: dict[str, CleanRLConfig] = {
    "cartpole-ppo": CLEANRL_DISCRETE,
    "acrobot-ppo": CLEANRL_DISCRETE,
    "pendulum-ppo": CLEANRL_CONTINUOUS,
}
# Default budgets: CleanRL's total_timesteps, except on Pendulum. With one torch
# thread on the 2-core VM, runs of the child trained at about 5,800 env
# steps/s on CartPole and 4,900 on Acrobot (500,000 steps: under 2 minutes) but
# 1,200-1,500 on Pendulum, where 1,000,000 steps would take 11-14 minutes a seed:
# capped at 100 rollouts of 2,048 steps (one whole seed took 166 s).
CLEANRL_BUDGET: dict[str, int] = {
    "cartpole-ppo": 500_000,
    "acrobot-ppo": 500_000,
    "pendulum-ppo": 204_800,
}


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help="tasks to run"
    )
    add_run_arguments(parser, SYSTEMS)
    parser.add_argument(
        "--sb3-budget",
        type=int,
        default=None,
        help="most env steps SB3 may train on every task (default: the zoo's n_timesteps)",
    )
    parser.add_argument(
        "--cleanrl-budget",
        type=int,
        default=None,
        help="most env steps the CleanRL PPO may train on every task "
        "(default: CleanRL's total_timesteps, capped as CLEANRL_BUDGET says)",
    )
    parser.add_argument(
        "--hpcrl-config",
        default=None,
        help="JSON config merged over every experiment file's (hpcrl train --config)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the summary also as a Markdown table"
    )
    parser.add_argument("--child", choices=["sb3", "cleanrl"], help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=list(TASKS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


# ---------------------------------------------------------------- sb3 child


def sb3_child(task: Task, seed: int, budget: int) -> dict[str, Any]:
    """Train SB3's PPO or A2C with the zoo entry until solved or out of budget."""
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    class StopWhenSolved(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.solved_at: int | None = None

        def _on_step(self) -> bool:
            # SB3 adds this step's finished episodes to ep_info_buffer only
            # after calling the callback, so the buffer is as of the previous
            # step: count the steps up to that one.
            buffer = self.model.ep_info_buffer
            if len(buffer) == EPISODES_IN_MEAN:
                mean_return = sum(info["r"] for info in buffer) / len(buffer)
                if mean_return >= task.solved_return:
                    self.solved_at = self.model.num_timesteps - self.training_env.num_envs
                    return False
            return True

    hp = dict(SB3_ZOO[task.name])
    del hp["n_timesteps"]
    normalize = hp.pop("normalize", False)
    env = make_vec_env(task.env_id, n_envs=hp.pop("n_envs"), seed=seed)
    if normalize:
        env = VecNormalize(env, **({"gamma": hp["gamma"]} if "gamma" in hp else {}))
    for key in ("learning_rate", "clip_range"):
        if key in hp:
            hp[key] = zoo_schedule(hp[key])
    algorithm = {"PPO": PPO, "A2C": A2C}[task.algorithm]
    model = algorithm(hp.pop("policy"), env, seed=seed, device="cpu", verbose=0, **hp)
    callback = StopWhenSolved()
    model.learn(total_timesteps=budget, callback=callback)
    solved = callback.solved_at is not None
    return {"solved": solved, "env_steps": callback.solved_at if solved else model.num_timesteps}


# ------------------------------------------------------------ cleanrl child


def make_cleanrl_env(env_id: str, config: CleanRLConfig) -> gym.Env:
    """The env with CleanRL's wrappers. Episode statistics are recorded before any
    normalisation, so the returns are the env's own. (CleanRL's continuous file
    also flattens dict observations for dm_control; Pendulum's are flat.)"""
    env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id))
    if not config.continuous:
        return env
    env = gym.wrappers.ClipAction(env)
    env = gym.wrappers.NormalizeObservation(env)
    env = gym.wrappers.TransformObservation(
        env, lambda obs: np.clip(obs, -10, 10), env.observation_space
    )
    env = gym.wrappers.NormalizeReward(env, gamma=config.gamma)
    return gym.wrappers.TransformReward(env, lambda reward: np.clip(reward, -10, 10))


def orthogonal(layer: nn.Linear, gain: float = np.sqrt(2)) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, 0.0)
    return layer


class CleanRLAgent(nn.Module):
    """CleanRL's separate actor and critic, each 64-64 tanh, orthogonally initialised
    (gain sqrt(2); 0.01 on the policy head, 1 on the value head); for continuous
    actions a Gaussian with a state-independent log-std starting at 0.

    Example:
        >>> agent = CleanRLAgent(4, 2, continuous=False)
        >>> agent.policy(torch.zeros(3, 4)).sample().shape
        torch.Size([3])
    """

    def __init__(self, obs_size: int, action_size: int, continuous: bool) -> None:
        super().__init__()

        def mlp(outputs: int, head_gain: float) -> nn.Sequential:
            return nn.Sequential(
                orthogonal(nn.Linear(obs_size, 64)),
                nn.Tanh(),
                orthogonal(nn.Linear(64, 64)),
                nn.Tanh(),
                orthogonal(nn.Linear(64, outputs), head_gain),
            )

        self.critic = mlp(1, 1.0)
        self.actor = mlp(action_size, 0.01)
        self.log_std = nn.Parameter(torch.zeros(1, action_size)) if continuous else None

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).flatten()

    def policy(self, obs: torch.Tensor) -> Distribution:
        out = self.actor(obs)
        if self.log_std is None:
            return Categorical(logits=out)
        return Independent(Normal(out, self.log_std.expand_as(out).exp()), 1)


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    starts: torch.Tensor,
    next_value: torch.Tensor,
    next_start: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> torch.Tensor:
    """GAE over a rollout of shape (steps, envs). ``starts[t]`` is 1 where the
    observation of step t began a new episode (the previous one ended, terminated
    or truncated: as in CleanRL, truncation does not bootstrap); ``next_value``
    and ``next_start`` are for the observation after the rollout."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(len(rewards))):
        following_value = next_value if t == len(rewards) - 1 else values[t + 1]
        continues = 1.0 - (next_start if t == len(rewards) - 1 else starts[t + 1])
        delta = rewards[t] + gamma * following_value * continues - values[t]
        advantages[t] = last = delta + gamma * gae_lambda * continues * last
    return advantages


def cleanrl_child(task: Task, seed: int, budget: int) -> dict[str, Any]:
    """Train the CleanRL-style PPO until solved or out of budget."""
    config = CLEANRL[task.name]
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches
    iterations = budget // batch_size
    if iterations < 1:
        raise SystemExit(f"--cleanrl-budget {budget} is less than one rollout of {batch_size}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    # SAME_STEP: a finished env resets within the step that ended it, as in
    # gymnasium before 1.0, which the rollout storage below assumes.
    envs = gym.vector.SyncVectorEnv(
        [lambda: make_cleanrl_env(task.env_id, config)] * config.num_envs,
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    obs_shape = envs.single_observation_space.shape
    action_shape = envs.single_action_space.shape
    action_size = int(np.prod(action_shape)) if config.continuous else envs.single_action_space.n
    agent = CleanRLAgent(int(np.prod(obs_shape)), action_size, config.continuous)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5)

    steps, num_envs = config.num_steps, config.num_envs
    obs = torch.zeros((steps, num_envs, *obs_shape))
    actions = torch.zeros((steps, num_envs, *action_shape))
    log_probs = torch.zeros((steps, num_envs))
    rewards = torch.zeros((steps, num_envs))
    starts = torch.zeros((steps, num_envs))
    values = torch.zeros((steps, num_envs))

    episode_returns: deque[float] = deque(maxlen=EPISODES_IN_MEAN)
    env_steps = 0
    next_obs = torch.Tensor(envs.reset(seed=seed)[0])
    next_start = torch.zeros(num_envs)
    for iteration in range(iterations):
        optimizer.param_groups[0]["lr"] = config.learning_rate * (1.0 - iteration / iterations)

        for step in range(steps):
            env_steps += num_envs
            obs[step] = next_obs
            starts[step] = next_start
            with torch.no_grad():
                policy = agent.policy(next_obs)
                action = policy.sample()
                log_probs[step] = policy.log_prob(action)
                values[step] = agent.value(next_obs)
            actions[step] = action.reshape(num_envs, *action_shape)
            observation, reward, terminated, truncated, infos = envs.step(action.numpy())
            rewards[step] = torch.as_tensor(reward, dtype=torch.float32)
            next_obs = torch.Tensor(observation)
            next_start = torch.Tensor(np.logical_or(terminated, truncated))
            if "final_info" in infos:
                finished = infos["final_info"]
                episode_returns.extend(finished["episode"]["r"][finished["_episode"]])
                if (
                    len(episode_returns) == EPISODES_IN_MEAN
                    and np.mean(episode_returns) >= task.solved_return
                ):
                    return {"solved": True, "env_steps": env_steps}

        with torch.no_grad():
            next_value = agent.value(next_obs)
            advantages = generalized_advantages(
                rewards, values, starts, next_value, next_start, config.gamma, config.gae_lambda
            )
            returns = advantages + values
        ppo_update(
            agent,
            optimizer,
            config,
            minibatch_size,
            obs.reshape(batch_size, *obs_shape),
            actions.reshape(batch_size, *action_shape),
            log_probs.reshape(-1),
            advantages.reshape(-1),
            returns.reshape(-1),
            values.reshape(-1),
        )
    return {"solved": False, "env_steps": env_steps}


def ppo_update(
    agent: CleanRLAgent,
    optimizer: torch.optim.Optimizer,
    config: CleanRLConfig,
    minibatch_size: int,
    obs: torch.Tensor,
    actions: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
) -> None:
    """CleanRL's update: epochs of shuffled minibatches; per minibatch normalised
    advantages, the clipped surrogate, the clipped value loss, the entropy bonus and
    the global gradient-norm clip."""
    if not config.continuous:
        actions = actions.long()
    clip = config.clip_coef
    for _ in range(config.update_epochs):
        order = np.random.permutation(len(obs))
        for start in range(0, len(obs), minibatch_size):
            batch = order[start : start + minibatch_size]
            policy = agent.policy(obs[batch])
            ratio = (policy.log_prob(actions[batch]) - old_log_probs[batch]).exp()
            advantage = advantages[batch]
            advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
            loss_objective = torch.max(
                -advantage * ratio, -advantage * torch.clamp(ratio, 1 - clip, 1 + clip)
            ).mean()

            value = agent.value(obs[batch])
            clipped_value = old_values[batch] + torch.clamp(value - old_values[batch], -clip, clip)
            squared_error = (value - returns[batch]) ** 2
            clipped_squared_error = (clipped_value - returns[batch]) ** 2
            loss_critic = 0.5 * torch.max(squared_error, clipped_squared_error).mean()

            loss_entropy = -policy.entropy().mean()
            loss = loss_objective + config.ent_coef * loss_entropy + config.vf_coef * loss_critic
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
            optimizer.step()


# ------------------------------------------------------------------- parent


def hpcrl_step_cap(experiment_file: Path) -> int | None:
    """The ``stop: timesteps_total`` of the (single) experiment in the file."""
    [experiment] = yaml.safe_load(experiment_file.read_text()).values()
    return experiment.get("stop", {}).get("timesteps_total")


def run_hpcrl(task: Task, seed: int, config: str | None, threads: int) -> SeedResult:
    """``hpcrl train`` from the tuned experiment file; solved iff the last result's
    episode_reward_mean reached the threshold."""
    last, wall_s = run_hpcrl_train(
        task.experiment_file, seed, threads, ["--config", config] if config else []
    )
    solved = last["episode_reward_mean"] >= task.solved_return
    return SeedResult("hpcrl", seed, solved, int(last["timesteps_total"]), wall_s)


def run_child_system(system: str, task: Task, seed: int, budget: int, threads: int) -> SeedResult:
    """This script as a ``--child system`` process."""
    args = ["--child", system, "--task", task.name, "--seed", str(seed)]
    result, wall_s = run_child(
        str(Path(__file__).resolve()), [*args, f"--{system}-budget", str(budget)], threads
    )
    return SeedResult(system, seed, bool(result["solved"]), int(result["env_steps"]), wall_s)


def budget(system: str, task: Task, args: argparse.Namespace) -> int:
    """Env steps the child ``system`` ("sb3" or "cleanrl") may train on ``task``."""
    if system == "sb3":
        return args.sb3_budget or int(SB3_ZOO[task.name]["n_timesteps"])
    return args.cleanrl_budget or CLEANRL_BUDGET[task.name]


def print_header(task: Task, systems: list[str], budgets: dict[str, int], seeds: list[int]) -> None:
    parts = []
    if "hpcrl" in systems:
        cap = hpcrl_step_cap(task.experiment_file)
        cap_text = f"capped at {cap:,} steps" if cap else "no step cap"
        parts.append(f"hpcrl {task.experiment_file.relative_to(TUNED.parent.parent)} ({cap_text})")
    if "sb3" in systems:
        zoo = int(SB3_ZOO[task.name]["n_timesteps"])
        note = "the zoo's n_timesteps" if budgets["sb3"] == zoo else f"the zoo's: {zoo:,}"
        parts.append(f"sb3 {budgets['sb3']:,} steps ({note})")
    if "cleanrl" in systems:
        own = CLEANRL[task.name].total_timesteps
        if budgets["cleanrl"] == own:
            note = "CleanRL's total_timesteps"
        elif budgets["cleanrl"] == CLEANRL_BUDGET[task.name]:
            note = f"CleanRL's {own:,} capped to keep a seed under ~3 minutes"
        else:
            note = f"CleanRL's: {own:,}"
        parts.append(f"cleanrl {budgets['cleanrl']:,} steps ({note})")
    print(
        f"\n{task.name}: {task.algorithm} on {task.env_id}, solved = mean return of the last "
        f"{EPISODES_IN_MEAN} training episodes >= {task.solved_return:g}; seeds {seeds}; "
        f"budgets: {', '.join(parts)}"
    )


@dataclass
class TaskOutcome:
    task: Task
    summaries: dict[str, SystemSummary]
    passed: bool


def print_summary(outcomes: list[TaskOutcome], markdown: bool) -> None:
    """One row per task: each system's median wall time (seeds solved), hpcrl / sb3,
    the target and the verdict."""
    columns = [
        "task",
        "hpcrl s (solved)",
        "sb3 s (solved)",
        "cleanrl s (solved)",
        "hpcrl/sb3",
        "target",
        "verdict",
    ]
    rows = []
    for outcome in outcomes:
        s = outcome.summaries
        cells = [outcome.task.name]
        for system in SYSTEMS:
            summary = s.get(system)
            cells.append(
                f"{summary.median_wall_s:.1f} ({summary.solved}/{summary.runs})" if summary else "-"
            )
        compared = "hpcrl" in s and "sb3" in s
        ratio = s["hpcrl"].median_wall_s / s["sb3"].median_wall_s if compared else None
        cells.append(f"{ratio:.3f}" if compared else "-")
        cells.append(f"<= {outcome.task.target:.3g}")
        cells.append(("PASS" if outcome.passed else "FAIL") if compared else "-")
        rows.append(cells)
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    print("\nSummary (median wall s over the seeds, spawn to exit)")
    for row in [columns, *rows]:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )
        )
    if markdown:
        print()
        print("| " + " | ".join(columns) + " |")
        print("|:--" + "|--:" * (len(columns) - 2) + "|:-:|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


def main() -> None:
    args = parse_args()
    if args.child:
        if args.task is None:
            raise SystemExit("--child needs --task")
        task = TASKS[args.task]
        if args.child == "sb3":
            result = sb3_child(task, args.seed, budget("sb3", task, args))
        elif task.name in CLEANRL:
            result = cleanrl_child(task, args.seed, budget("cleanrl", task, args))
        else:
            raise SystemExit(f"no CleanRL run for {task.name}; its PPO tasks: {list(CLEANRL)}")
        print(json.dumps(result), flush=True)
        return

    for name in args.tasks:
        file = TASKS[name].experiment_file
        if "hpcrl" in args.systems and not file.exists():
            raise SystemExit(
                f"{file} not found: write it, or leave {name} out of --tasks "
                "or hpcrl out of --systems"
            )
    print_machine(args.threads)
    if "hpcrl" in args.systems:
        compile_hpcrl_bytecode()
        if args.hpcrl_config:
            print(f"hpcrl --config {args.hpcrl_config}")
    outcomes = []
    for name in args.tasks:
        task = TASKS[name]
        systems = [s for s in args.systems if s != "cleanrl" or name in CLEANRL]
        budgets = {s: budget(s, task, args) for s in systems if s != "hpcrl"}
        print_header(task, systems, budgets, args.seeds)
        if "cleanrl" in args.systems and "cleanrl" not in systems:
            print(f"cleanrl skipped: no CleanRL {task.algorithm} to compare against")
        runners = {
            "hpcrl": lambda seed, task=task: run_hpcrl(task, seed, args.hpcrl_config, args.threads),
            "sb3": lambda seed, task=task, b=budgets: run_child_system(
                "sb3", task, seed, b["sb3"], args.threads
            ),
            "cleanrl": lambda seed, task=task, b=budgets: run_child_system(
                "cleanrl", task, seed, b["cleanrl"], args.threads
            ),
        }
        results = run_seeds(args.seeds, {system: runners[system] for system in systems})
        passed = print_table(results, systems, task.target)
        summaries = {system: summarise(results, system) for system in systems}
        outcomes.append(TaskOutcome(task, summaries, passed))
    print_summary(outcomes, args.markdown)


if __name__ == "__main__":
    main()
