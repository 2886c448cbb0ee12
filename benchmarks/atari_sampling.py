"""Atari sampling: ``RolloutWorker.sample()`` on Pong with a conv policy, beside a bare loop,
Stable-Baselines3 and RLlib.

For each ``--envs`` N, with one torch thread in every process, this times for ``--seconds``
after a warm-up:

- **hpcrl**: ``RolloutWorker("ALE/Pong-v5", PPOTorchPolicy, config).sample()`` with N envs
  (ale-py's ``AtariVectorEnv`` through ``hpcrl.env.atari``: deepmind preprocessing, uint8
  observations (4, 84, 84)) and ``--fragment`` steps per env: stepping, the forward pass
  (logits and value), sampling, storing the columns, and GAE -- what a trainer gets;
- **bare loop**: the same vector env object (``worker.env``) and the same model
  (``worker.get_policy().model``) with no sampler: obs -> ``torch.from_numpy`` -> forward +
  ``value_function()`` under ``no_grad`` -> ``torch.multinomial`` on the softmax -> numpy ->
  ``env.step``. It stores nothing. The two share the env, each going on from its own last
  observation (this is a timing, not a rollout);
- **SB3** (child process): ``PPO("CnnPolicy")`` on ``make_atari_env("PongNoFrameskip-v4", N)``
  + ``VecFrameStack(..., 4)``, set up as ``learn`` does (``_setup_learn``, the callback's
  ``on_training_start``), timing ``collect_rollouts`` of ``--fragment`` steps per env (it
  stores the rollout and computes GAE too);
- **RLlib** (child process with ``--rllib-python``'s interpreter; the ``bench`` extra):
  PPO on the new API stack, ``ALE/Pong-v5`` (frameskip 1) in RLlib's own
  ``wrap_atari_for_new_api_stack(dim=84, framestack=4)``, ``num_env_runners=0``,
  ``num_envs_per_env_runner=N``, timing the local env runner's
  ``sample(num_timesteps=N * fragment)``.

Networks: by default hpcrl builds RLlib's default 84x84 filters (16-32-256, the last conv
reducing to 1x1; vf_share_layers), and RLlib gets the same network with the padding spelled
out (its new-stack default would pad the 11x11 layer "same" too: a 256x11x11 output). SB3's
``CnnPolicy`` is always its NatureCNN (32-64-64 unpadded, then 512), which is larger.
``--nature-cnn`` gives hpcrl and RLlib that same network (the Nature filters, each with
"valid" padding, then a 512 layer), so all three run the same multiply-adds; each row says
which network it ran and its multiply-adds per observation.

Env stepping differs by design: hpcrl (and the bare loop) step ale-py's C++ threads (one per
usable core, at most N); SB3's ``DummyVecEnv`` and RLlib's ``SyncVectorEnv`` step the envs one
after the other in Python. Run under ``taskset -c 0`` to give every system a single core.

Frames/s counts emulator frames: agent steps/s x frame skip 4. hpcrl counts the rows
``sample()`` returns; the bare loop counts every vector step x N.

Targets: hpcrl >= 70% of the bare loop, and ahead of SB3 and of RLlib.

Example:
    python benchmarks/atari_sampling.py --envs 8 32 --rllib-python /tmp/rayenv/bin/python
    python benchmarks/atari_sampling.py --envs 8 32 --rllib-python /tmp/rayenv/bin/python \\
        --nature-cnn
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from solve_harness import print_machine, script_parser, version

ENV_ID = "ALE/Pong-v5"
SB3_ENV_ID = "PongNoFrameskip-v4"
FRAME_SKIP = 4
# RLlib's (and hpcrl's) default filters for 84x84 images: [out_channels, [kh, kw], stride].
DEFAULT_FILTERS = [[16, [8, 8], 4], [32, [4, 4], 2], [256, [11, 11], 1]]
# The DQN paper's network (Mnih et al. 2015), SB3's NatureCNN: these convs, then 512 units.
NATURE_FILTERS = [[32, [8, 8], 4, "valid"], [64, [4, 4], 2, "valid"], [64, [3, 3], 1, "valid"]]
NATURE_HIDDENS = [512]
TARGET_BARE = 0.70


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--envs", type=int, nargs="+", default=[8, 32], help="envs per sampler")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed per measurement")
    parser.add_argument("--fragment", type=int, default=64, help="steps per env per sample call")
    parser.add_argument(
        "--repeats", type=int, default=1, help="hpcrl/bare alternations per N; median reported"
    )
    parser.add_argument(
        "--nature-cnn",
        action="store_true",
        help="hpcrl and RLlib use the Nature CNN shape (SB3 always does)",
    )
    parser.add_argument("--peers", nargs="*", default=["sb3", "rllib"], choices=["sb3", "rllib"])
    parser.add_argument(
        "--rllib-python", default=sys.executable, help="the Python with ray[rllib] installed"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["sb3", "rllib"], help=argparse.SUPPRESS)
    return parser.parse_args()


def network_name(args: argparse.Namespace) -> str:
    return "NatureCNN" if args.nature_cnn else "84x84 default"


def timed_rate(step: Callable[[], int], seconds: float) -> float:
    """Calls ``step`` (which returns agent steps done) for ``seconds``; agent steps/s."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        count += step()
    return count / elapsed


def multiply_adds(module: Any, forward: Callable[[], Any]) -> int:
    """Multiply-adds of the Conv2d and Linear layers of ``module`` that ``forward`` (a pass
    over one observation) runs."""
    import torch

    total = 0

    def count(layer: Any, inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(layer, torch.nn.Linear):
            total += layer.in_features * layer.out_features
        else:
            per_output = layer.in_channels // layer.groups * layer.kernel_size[0]
            total += output[0].numel() * per_output * layer.kernel_size[1]

    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [layer.register_forward_hook(count) for layer in layers]
    try:
        with torch.no_grad():
            forward()
    finally:
        for hook in hooks:
            hook.remove()
    return total


# -- hpcrl and the bare loop (this process) ----------------------------------
def hpcrl_worker(args: argparse.Namespace, num_envs: int) -> Any:
    from hpcrl.algorithms.ppo import DEFAULT_CONFIG, PPOTorchPolicy
    from hpcrl.evaluation.rollout_worker import RolloutWorker

    model = {"vf_share_layers": True}
    if args.nature_cnn:
        model.update(conv_filters=NATURE_FILTERS, post_fcnet_hiddens=NATURE_HIDDENS)
    config = {
        **DEFAULT_CONFIG,
        "num_envs_per_worker": num_envs,
        "rollout_fragment_length": args.fragment,
        "seed": args.seed,
        "model": model,
    }
    return RolloutWorker(ENV_ID, PPOTorchPolicy, config)


def bare_loop(worker: Any, seed: int) -> Callable[[int], int]:
    """``step(n)``: n steps of the worker's env with its model and nothing else; returns
    the agent steps done (n x envs)."""
    import torch

    env, model = worker.env, worker.get_policy().model.eval()
    generator = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)

    def step(n: int) -> int:
        nonlocal obs
        with torch.no_grad():
            for _ in range(n):
                logits, _ = model({"obs": torch.from_numpy(obs)}, [], None)
                model.value_function()
                probs = torch.softmax(logits, dim=-1)
                actions = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                obs, _, _, _, _ = env.step(actions.numpy())
        return n * env.num_envs

    return step


def measure_hpcrl(args: argparse.Namespace, num_envs: int) -> dict[str, Any]:
    """hpcrl's and the bare loop's agent steps/s (medians over ``--repeats``), the median
    of their per-repeat ratios, and the model's multiply-adds per observation."""
    import torch

    worker = hpcrl_worker(args, num_envs)
    try:
        model = worker.get_policy().model
        obs = torch.zeros((1, *worker.env.single_observation_space.shape), dtype=torch.uint8)

        def forward() -> None:
            model({"obs": obs}, [], None)
            model.value_function()

        macs = multiply_adds(model, forward)
        worker.sample()  # warm-up
        bare = bare_loop(worker, args.seed)
        bare(8)  # warm-up
        hpcrl_rates, bare_rates = [], []
        for _ in range(args.repeats):
            hpcrl_rates.append(timed_rate(lambda: worker.sample().count, args.seconds))
            bare_rates.append(timed_rate(lambda: bare(8), args.seconds))
    finally:
        worker.stop()
    return {
        "hpcrl": statistics.median(hpcrl_rates),
        "bare": statistics.median(bare_rates),
        "ratio": statistics.median(h / b for h, b in zip(hpcrl_rates, bare_rates)),
        "macs": macs,
    }


# -- peers (child processes) -------------------------------------------------
def sb3_child(args: argparse.Namespace, num_envs: int) -> dict[str, Any]:
    """SB3's PPO collecting rollouts; its agent steps/s."""
    import ale_py
    import gymnasium as gym
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    gym.register_envs(ale_py)
    env = VecFrameStack(make_atari_env(SB3_ENV_ID, n_envs=num_envs, seed=args.seed), 4)
    algo = PPO("CnnPolicy", env, n_steps=args.fragment, seed=args.seed, device="cpu", verbose=0)
    # As learn() does before its loop.
    _, callback = algo._setup_learn(total_timesteps=10**12, callback=None)
    callback.on_training_start(locals(), globals())

    def collect() -> int:
        algo.collect_rollouts(algo.env, callback, algo.rollout_buffer, algo.n_steps)
        return algo.n_steps * num_envs

    obs = torch.zeros((1, *algo.observation_space.shape), dtype=torch.uint8)
    macs = multiply_adds(algo.policy, lambda: algo.policy(obs))
    collect()  # warm-up
    rate = timed_rate(collect, args.seconds)
    return {
        "system": f"SB3 {stable_baselines3.__version__}",
        "network": "NatureCNN",
        "macs": macs,
        "rate": rate,
        "torch_threads": torch.get_num_threads(),
    }


def rllib_child(args: argparse.Namespace, num_envs: int) -> dict[str, Any]:
    """RLlib's PPO env runner sampling; its agent steps/s."""
    import ale_py
    import gymnasium as gym
    import ray
    import torch
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack
    from ray.tune.registry import register_env

    gym.register_envs(ale_py)
    register_env(
        "atari",
        lambda env_config: wrap_atari_for_new_api_stack(
            gym.make(ENV_ID, **env_config), dim=84, framestack=4
        ),
    )
    filters = NATURE_FILTERS if args.nature_cnn else DEFAULT_FILTERS
    last = len(filters) - 1
    # hpcrl's layout: as each filter says, else "same" padding but on the last conv.
    conv_filters = [
        [f[0], tuple(f[1]), f[2], f[3] if len(f) == 4 else ("valid" if i == last else "same")]
        for i, f in enumerate(filters)
    ]
    ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    config = (
        PPOConfig()
        .environment("atari", env_config={"frameskip": 1})  # the wrapper skips frames
        .env_runners(
            num_env_runners=0,
            num_envs_per_env_runner=num_envs,
            rollout_fragment_length=args.fragment,
        )
        .training(train_batch_size_per_learner=num_envs * args.fragment)
        .rl_module(
            model_config=DefaultModelConfig(
                conv_filters=conv_filters,
                head_fcnet_hiddens=NATURE_HIDDENS if args.nature_cnn else [],
                vf_share_layers=True,
            )
        )
    )
    algo = config.build_algo()
    torch.set_num_threads(1)
    runner = algo.env_runner
    module = runner.module
    obs = torch.zeros((1, *runner.env.single_observation_space.shape))
    macs = multiply_adds(module, lambda: module.forward_exploration({"obs": obs}))

    def collect() -> int:
        episodes = runner.sample(num_timesteps=num_envs * args.fragment)
        return sum(len(episode) for episode in episodes)

    collect()  # warm-up
    rate = timed_rate(collect, args.seconds)
    result = {
        "system": f"RLlib {ray.__version__}",
        "network": network_name(args),
        "macs": macs,
        "rate": rate,
        "torch_threads": torch.get_num_threads(),
    }
    algo.stop()
    ray.shutdown()
    return result


def run_peer(args: argparse.Namespace, peer: str, num_envs: int) -> dict[str, Any] | str:
    """The peer's result from a child process, or why it has none."""
    python = args.rllib_python if peer == "rllib" else sys.executable
    command = [
        python,
        str(Path(__file__).resolve()),
        "--child",
        peer,
        "--envs",
        str(num_envs),
        "--seconds",
        str(args.seconds),
        "--fragment",
        str(args.fragment),
        "--seed",
        str(args.seed),
        *(["--nature-cnn"] if args.nature_cnn else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        process = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=args.seconds + 600
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{type(error).__name__}: {error}"
    if process.returncode != 0:
        lines = process.stderr.strip().splitlines() or ["(no output on stderr)"]
        return f"exited with {process.returncode}: {lines[-1]}"
    return json.loads(process.stdout.strip().splitlines()[-1])


# -- the table ---------------------------------------------------------------
ROW = "  {:<12} {:<15} {:>8} {:>14} {:>10}"


def print_row(system: str, network: str, macs: float, rate: float) -> None:
    print(
        ROW.format(
            system, network, f"{macs / 1e6:.1f}", f"{rate:,.0f}", f"{rate * FRAME_SKIP:,.0f}"
        )
    )


def print_ratio(label: str, ratio: float | None, target: float, as_share: bool) -> bool | None:
    """One ratio line with PASS/FAIL; None (and no verdict) when there is no figure."""
    if ratio is None:
        print(f"  {label}: no figure")
        return None
    ok = ratio >= target if as_share else ratio > target
    figure = f"{ratio:.1%} (target >= {target:.0%})" if as_share else f"{ratio:.2f}x (target > 1)"
    print(f"  {label}: {figure}: {'PASS' if ok else 'FAIL'}")
    return ok


def measure_all(args: argparse.Namespace, num_envs: int) -> list[bool | None]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\n{num_envs} envs (hpcrl's AtariVectorEnv: {min(num_envs, cores or 1)} C++ threads)")
    print(ROW.format("system", "network", "MMAC/obs", "agent steps/s", "frames/s"))
    ours = measure_hpcrl(args, num_envs)
    print_row(f"hpcrl {version('hpcrl')}", network_name(args), ours["macs"], ours["hpcrl"])
    print_row("bare loop", network_name(args), ours["macs"], ours["bare"])
    peers: dict[str, dict[str, Any] | str] = {}
    for peer in args.peers:
        peers[peer] = result = run_peer(args, peer, num_envs)
        if isinstance(result, str):
            print(f"  {peer}: not run: {result}")
        else:
            print_row(result["system"], result["network"], result["macs"], result["rate"])
            if result["torch_threads"] != 1:
                print(f"  (warning: {result['system']} ran with {result['torch_threads']} threads)")
    verdicts = [print_ratio("hpcrl / bare loop", ours["ratio"], TARGET_BARE, as_share=True)]
    for peer, result in peers.items():
        ratio = None if isinstance(result, str) else ours["hpcrl"] / result["rate"]
        name = peer if isinstance(result, str) else result["system"]
        verdicts.append(print_ratio(f"hpcrl / {name}", ratio, 1.0, as_share=False))
    return verdicts


def main() -> None:
    args = parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    if args.child is not None:
        [num_envs] = args.envs
        child = sb3_child if args.child == "sb3" else rllib_child
        print(json.dumps(child(args, num_envs)), flush=True)
        return
    print_machine(1)
    print(f"ale-py {version('ale-py')}; RLlib's Python: {args.rllib_python}")
    print(
        f"{ENV_ID} (SB3: {SB3_ENV_ID}), frame skip {FRAME_SKIP}, {args.fragment} steps per env "
        f"per sample call, {args.seconds:g} s per measurement, hpcrl and bare loop alternated "
        f"{args.repeats}x (median); MMAC/obs: multiply-adds per observation of the network run"
    )
    verdicts = [v for num_envs in args.envs for v in measure_all(args, num_envs)]
    if None in verdicts:
        print("\nall targets: not decided (a peer did not run)")
    else:
        print(f"\nall targets: {'PASS' if all(verdicts) else 'FAIL'}")


if __name__ == "__main__":
    main()
