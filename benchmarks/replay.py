"""Replay buffers: add and sample rates of hpcrl's buffers beside Stable-Baselines3's
ReplayBuffer and TorchRL's replay buffers, and the memory of a full buffer.

Two row layouts, each filled to capacity by every buffer in turn (one buffer alive
at a time):

- ``cartpole``: obs and new_obs float32[4], actions int64, rewards float32,
  terminateds and truncateds bool (46 bytes a row); capacity ``--capacity``
  (1,000,000).
- ``atari``: the same with obs and new_obs uint8[84, 84, 4] (56,462 bytes a row);
  capacity ``--image-capacity`` (100,000: 5.6 GB per buffer).

Buffers, each fed its own native input (prebuilt, outside the timings) and
sampling ``--batch-size`` rows (512):

- ``hpcrl uniform``: ``ReplayBuffer.add(SampleBatch)``, ``sample(512)`` (numpy).
- ``hpcrl prioritized``: ``PrioritizedReplayBuffer(alpha=0.6)``, ``sample(512,
  beta=0.4)``, ``update_priorities(batch_indexes, |td|)``.
- ``SB3 uniform``: ``stable_baselines3.common.buffers.ReplayBuffer`` with
  ``n_envs=--add-rows`` (one ``add`` per chunk of rows, as from a vector env of that
  many envs; default ``handle_timeout_termination=True``, so each add reads the
  infos' ``TimeLimit.truncated``); ``sample(512)`` returns torch tensors (copies).
- ``TorchRL uniform``: ``TensorDictReplayBuffer(storage=LazyTensorStorage)``,
  ``extend(TensorDict)``, ``sample()``.
- ``TorchRL prioritized``: ``TensorDictPrioritizedReplayBuffer(alpha=0.6, beta=0.4,
  storage=LazyTensorStorage)`` (C++ segment trees), ``extend``, ``sample()``,
  ``update_priority(index, |td|)``.

Figures: ``fill rows/s``: adds into the new buffer until it is full, so they
include the first touch of its memory; on a VM whose memory the host hands out
lazily that first touch varies several-fold from run to run, so it is shown but
not compared. ``add rows/s (full)``, ``sample/s`` and ``sample+update/s`` (the
prioritised learner's cycle) on the full buffer: the median over ``--repeats``
blocks of at least ``--min-time`` seconds each. Memory: the growth of the
process's resident set from before construction to full, and the bytes of the
buffer's arrays (hpcrl prioritized: with its two float64 segment trees, 32 bytes
a row at a power-of-two capacity, 64 at most), against the raw bytes of the rows
it holds.

Targets: hpcrl uniform at least as fast as SB3's (add and sample), hpcrl
prioritised at least as fast as TorchRL's prioritised buffer; memory within 10%
of the raw bytes.

Peers: a peer that cannot be imported is printed as "not run: <why>". Install
them without letting pip change torch: ``pip install --no-deps stable-baselines3``.
TorchRL's wheels carry a C++ extension (its segment trees) built against one torch
release, and no torchrl wheel loads with torch 2.13 (0.13.x wants an older torch,
0.14.x a newer one). So TorchRL runs from a separate venv holding the torch it was
built for, with hpcrl on its path:

    python -m venv /tmp/benchenv
    /tmp/benchenv/bin/pip install torch==2.14.1 numpy==2.4.6 gymnasium==1.4.0 h5py pyyaml
    /tmp/benchenv/bin/pip install --no-deps torchrl==0.14.1 tensordict==0.14.3
    /tmp/benchenv/bin/pip install --no-deps stable-baselines3 pyvers hoptorch
    /tmp/benchenv/bin/pip install cloudpickle packaging importlib_metadata orjson
    PYTHONPATH=. /tmp/benchenv/bin/python benchmarks/replay.py

Run:
    python benchmarks/replay.py
    python benchmarks/replay.py --capacity 100000 --image-capacity 10000  # quick
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from hpcrl.policy.sample_batch import SampleBatch
from hpcrl.replay import PrioritizedReplayBuffer, ReplayBuffer

ALPHA, BETA = 0.6, 0.4


def make_chunks(obs_shape: tuple[int, ...], obs_dtype: Any, rows: int, count: int) -> list:
    """``count`` different chunks of ``rows`` rows, as dicts of numpy columns."""
    rng = np.random.default_rng(0)
    chunks = []
    for _ in range(count):
        if obs_dtype == np.uint8:
            obs = rng.integers(0, 256, (rows, *obs_shape), dtype=np.uint8)
            new_obs = rng.integers(0, 256, (rows, *obs_shape), dtype=np.uint8)
        else:
            obs = rng.standard_normal((rows, *obs_shape)).astype(np.float32)
            new_obs = rng.standard_normal((rows, *obs_shape)).astype(np.float32)
        terminateds = rng.random(rows) < 0.05
        chunks.append(
            {
                "obs": obs,
                "new_obs": new_obs,
                "actions": rng.integers(0, 2, rows).astype(np.int64),
                "rewards": np.ones(rows, dtype=np.float32),
                "terminateds": terminateds,
                "truncateds": ~terminateds & (rng.random(rows) < 0.01),
            }
        )
    return chunks


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Each contestant: inputs(chunks) -> its native add() arguments; build(capacity,
# chunks) -> buffer; add(buffer, input); sample(buffer, batch_size) -> batch;
# update(buffer, batch, td_errors) or None; array_bytes(buffer).
class HpcrlUniform:
    name = "hpcrl uniform"

    def inputs(self, chunks):
        return [SampleBatch(c) for c in chunks]

    def build(self, capacity, chunks):
        return ReplayBuffer(capacity, seed=0)

    def add(self, buffer, batch):
        buffer.add(batch)

    def sample(self, buffer, batch_size):
        return buffer.sample(batch_size)

    update = None

    def array_bytes(self, buffer):
        return buffer.nbytes


class HpcrlPrioritized(HpcrlUniform):
    name = "hpcrl prioritized"

    def build(self, capacity, chunks):
        return PrioritizedReplayBuffer(capacity, alpha=ALPHA, seed=0)

    def sample(self, buffer, batch_size):
        return buffer.sample(batch_size, beta=BETA)

    def update(self, buffer, batch, td_errors):
        buffer.update_priorities(batch["batch_indexes"], td_errors)


class SB3Uniform:
    name = "SB3 uniform"

    def __init__(self):
        from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer

        self.cls = SB3ReplayBuffer

    def inputs(self, chunks):
        return [
            (
                c["obs"],
                c["new_obs"],
                c["actions"],
                c["rewards"],
                c["terminateds"] | c["truncateds"],
                [{"TimeLimit.truncated": bool(t)} for t in c["truncateds"]],
            )
            for c in chunks
        ]

    def build(self, capacity, chunks):
        import gymnasium as gym

        obs = chunks[0]["obs"]
        low, high = (0, 255) if obs.dtype == np.uint8 else (-np.inf, np.inf)
        space = gym.spaces.Box(low, high, obs.shape[1:], dtype=obs.dtype)
        return self.cls(capacity, space, gym.spaces.Discrete(2), device="cpu", n_envs=len(obs))

    def add(self, buffer, item):
        buffer.add(*item)

    def sample(self, buffer, batch_size):
        return buffer.sample(batch_size)

    update = None

    def array_bytes(self, buffer):
        names = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
        return sum(getattr(buffer, n).nbytes for n in names if getattr(buffer, n) is not None)


class TorchRLUniform:
    name = "TorchRL uniform"

    def __init__(self):
        import torch
        from tensordict import TensorDict
        from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

        self.torch, self.TensorDict = torch, TensorDict
        self.storage_cls, self.buffer_cls = LazyTensorStorage, TensorDictReplayBuffer

    def inputs(self, chunks):
        return [
            self.TensorDict(
                {k: self.torch.from_numpy(v) for k, v in c.items()}, batch_size=[len(c["obs"])]
            )
            for c in chunks
        ]

    def build(self, capacity, chunks):
        return self.buffer_cls(storage=self.storage_cls(capacity))

    def add(self, buffer, td):
        buffer.extend(td)

    def sample(self, buffer, batch_size):
        return buffer.sample(batch_size)

    update = None

    def array_bytes(self, buffer):
        storage = buffer._storage._storage
        return sum(t.numel() * t.element_size() for t in storage.values(True, True))


class TorchRLPrioritized(TorchRLUniform):
    name = "TorchRL prioritized"

    def __init__(self):
        super().__init__()
        from torchrl.data import TensorDictPrioritizedReplayBuffer

        self.buffer_cls = TensorDictPrioritizedReplayBuffer
        try:
            from torchrl._torchrl import SumSegmentTreeFp32  # noqa: F401
        except ImportError as error:
            raise ImportError(
                f"torchrl's C++ extension does not load with torch {self.torch.__version__} "
                f"(built for another torch release): {error}"
            ) from error

    def build(self, capacity, chunks):
        return self.buffer_cls(alpha=ALPHA, beta=BETA, storage=self.storage_cls(capacity))

    def update(self, buffer, batch, td_errors):
        buffer.update_priority(batch["index"], td_errors)


def timed_rate(step: Callable[[], None], min_time: float, repeats: int) -> float:
    """Median calls per second over ``repeats`` blocks of at least ``min_time`` s."""
    rates = []
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            step()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        rates.append(calls / elapsed)
    return statistics.median(rates)


def release_freed_memory() -> None:
    """Give memory that malloc keeps after frees back to the system, so that the
    resident set grows by what the next buffer really touches."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: figures less exact
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def run_one(contestant, capacity: int, chunks: list, args: argparse.Namespace) -> dict:
    """Fill a new buffer to ``capacity`` rows, then time it full; the buffer is freed
    on return."""
    inputs = contestant.inputs(chunks)
    release_freed_memory()
    rss_before = resident_bytes()
    buffer = contestant.build(capacity, chunks)
    rows = len(chunks[0]["obs"])
    adds = -(-capacity // rows)
    start = time.perf_counter()
    for i in range(adds):
        contestant.add(buffer, inputs[i % len(inputs)])
    fill_seconds = time.perf_counter() - start
    result = {
        "fill": adds * rows / fill_seconds,
        "memory": resident_bytes() - rss_before,
        "arrays": contestant.array_bytes(buffer),
    }
    result.update(steady_rates(contestant, buffer, inputs, rows, args))
    return result


def steady_rates(contestant, buffer, inputs: list, rows: int, args: argparse.Namespace) -> dict:
    """Rows added per second, samples per second, and sample + priority update
    cycles per second, on a full buffer."""
    size = args.batch_size
    added = itertools.count()

    def add() -> None:
        contestant.add(buffer, inputs[next(added) % len(inputs)])

    rates = {
        "add": timed_rate(add, args.min_time, args.repeats) * rows,
        "sample": timed_rate(lambda: contestant.sample(buffer, size), args.min_time, args.repeats),
    }
    if contestant.update is not None:
        td = np.abs(np.random.default_rng(1).standard_normal(size))
        if contestant.name.startswith("TorchRL"):
            td = contestant.torch.from_numpy(td.astype(np.float32))

        def cycle() -> None:
            contestant.update(buffer, contestant.sample(buffer, size), td)

        rates["cycle"] = timed_rate(cycle, args.min_time, args.repeats)
    return rates


def contestants() -> list:
    """Every buffer, or a string saying why a peer is not run."""
    out: list = [HpcrlUniform(), HpcrlPrioritized()]
    for cls, package in (
        (SB3Uniform, "stable-baselines3"),
        (TorchRLUniform, "torchrl"),
        (TorchRLPrioritized, "torchrl"),
    ):
        try:
            out.append(cls())
        except Exception as error:  # an absent or broken peer is reported, not fatal
            why = str(error).split("\n")[0][:110]
            out.append((cls.name, f"not run: {type(error).__name__}: {why} ({package})"))
    return out


def versions() -> str:
    import importlib.metadata as metadata

    found = []
    for package in ("numpy", "torch", "stable-baselines3", "torchrl", "tensordict"):
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} absent")
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--capacity", type=int, default=1_000_000, help="cartpole rows")
    parser.add_argument("--image-capacity", type=int, default=100_000, help="atari rows")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--add-rows", type=int, default=256, help="rows per add call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=0.5, help="seconds per timed block")
    parser.add_argument("--cases", nargs="*", default=["cartpole", "atari"])
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)  # everything here is single-threaded; a fair field
    except ImportError:
        pass
    print(versions())
    print(
        f"batch {args.batch_size}, {args.add_rows} rows per add, alpha {ALPHA}, beta {BETA}, "
        f"median of {args.repeats} blocks of >= {args.min_time}s"
    )
    layouts = {
        "cartpole": ((4,), np.float32, args.capacity),
        "atari": ((84, 84, 4), np.uint8, args.image_capacity),
    }
    table = [
        "| case | buffer | fill rows/s | add rows/s (full) | sample/s | sample+update/s "
        "| RSS growth MB | arrays MB | raw MB | RSS / raw |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    results: dict[tuple[str, str], dict] = {}
    for case in args.cases:
        obs_shape, obs_dtype, capacity = layouts[case]
        chunks = make_chunks(obs_shape, obs_dtype, args.add_rows, count=8)
        row_bytes = sum(v[0].nbytes for v in chunks[0].values())
        print(f"\n{case}: capacity {capacity:,} rows of {row_bytes:,} bytes")
        for contestant in contestants():
            if isinstance(contestant, tuple):
                table.append(f"| {case} | {contestant[0]} | {contestant[1]} | | | | | | | |")
                print(f"  {contestant[0]}: {contestant[1]}", flush=True)
                continue
            held = capacity
            if isinstance(contestant, SB3Uniform):
                held = capacity // args.add_rows * args.add_rows  # whole rows of n_envs
            r = results[case, contestant.name] = run_one(contestant, held, chunks, args)
            raw = held * row_bytes
            cycle = f"{r['cycle']:,.0f}" if "cycle" in r else ""
            line = (
                f"| {case} | {contestant.name} | {r['fill']:,.0f} | {r['add']:,.0f} "
                f"| {r['sample']:,.0f} | {cycle} | {r['memory'] / 1e6:,.1f} "
                f"| {r['arrays'] / 1e6:,.1f} | {raw / 1e6:,.1f} | {r['memory'] / raw:.3f} |"
            )
            table.append(line)
            print("  " + line, flush=True)
    print()
    print("\n".join(table))
    print()
    for case in args.cases:
        compare(results, case, "hpcrl uniform", "SB3 uniform", ("add", "sample"))
        compare(
            results, case, "hpcrl prioritized", "TorchRL prioritized", ("add", "sample", "cycle")
        )


def compare(results: dict, case: str, ours: str, peer: str, figures: tuple[str, ...]) -> None:
    """One line: our figures over the peer's, and whether they reach 1."""
    if (case, ours) not in results or (case, peer) not in results:
        print(f"{case}: {ours} / {peer}: not compared ({peer} not run)")
        return
    ratios = [results[case, ours][f] / results[case, peer][f] for f in figures]
    verdict = "PASS" if min(ratios) >= 1 else "FAIL"
    shown = ", ".join(f"{f} x{r:.2f}" for f, r in zip(figures, ratios))
    print(f"{case}: {ours} / {peer}: {shown}  target >= 1: {verdict}")


if __name__ == "__main__":
    main()
