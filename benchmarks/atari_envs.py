"""Frames per second of the two Atari vector envs of hpcrl.env.atari.

- **ale**: ale-py's ``AtariVectorEnv`` (C++ threads), ``vectorization_mode="vector_entry_point"``.
- **gymnasium**: a ``SyncVectorEnv`` of ``AtariPreprocessing`` + ``FrameStackObservation``
  around each game, ``vectorization_mode="sync"`` (``--modes ... async`` adds the
  subprocess version).

Both with the deepmind preprocessing defaults (no-op starts, frame skip 4, 84x84
grayscale, 4 frames stacked) and random actions; no policy. A step is one action
in every env; frames/s counts emulator frames (steps x envs x frame skip).

    python benchmarks/atari_envs.py --env ALE/Pong-v5 --num-envs 8 32 --seconds 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from hpcrl.env.atari import ATARI_PREPROCESSING_DEFAULTS, make_atari_vector_env

LABELS = {"vector_entry_point": "ale", "sync": "gymnasium", "async": "gymnasium async"}


def steps_per_second(env_id: str, num_envs: int, mode: str, seconds: float) -> float:
    env = make_atari_vector_env(env_id, num_envs, {}, mode)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        n_actions = int(env.single_action_space.n)
        actions = rng.integers(0, n_actions, size=(256, num_envs))
        for t in range(10):  # warm-up
            env.step(actions[t])
        steps, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            for _ in range(10):
                env.step(actions[steps % len(actions)])
                steps += 1
        return steps * num_envs / elapsed
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--modes", nargs="+", default=["vector_entry_point", "sync"])
    parser.add_argument("--seconds", type=float, default=5.0, help="timed per case")
    args = parser.parse_args()
    skip = ATARI_PREPROCESSING_DEFAULTS["frame_skip"]
    print(f"{args.env}, {args.seconds:g} s per case")
    print("| num_envs | vector env      | env steps/s | frames/s |")
    print("|---------:|:----------------|------------:|---------:|")
    for num_envs in args.num_envs:
        for mode in args.modes:
            rate = steps_per_second(args.env, num_envs, mode, args.seconds)
            print(f"| {num_envs:8d} | {LABELS[mode]:15s} | {rate:11,.0f} | {rate * skip:8,.0f} |")


if __name__ == "__main__":
    main()
