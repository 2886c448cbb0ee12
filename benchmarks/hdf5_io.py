"""HDF5 batch recording: BatchWriter throughput beside a bare h5py write of the same arrays,
and what recording costs RolloutWorker.sample().

1. Batches: ``--batches`` batches sampled by a RolloutWorker (A2C policy, MLP [64, 64],
   CartPole-v1, ``--num-envs`` envs x ``--fragment-length`` steps, postprocessed), held in
   memory. With ``--obs-shape`` their ``obs`` and ``new_obs`` are replaced by random
   uint8 arrays of that shape per row (image observations), to measure a bandwidth-bound case.
2. Write throughput of the same arrays (every numeric column of the batches),
   alternating per repeat in one process:
   - ``hpcrl``: ``BatchWriter.write`` of every batch, then ``close`` (SWMR mode, two
     flushes and an index row per batch);
   - ``bare``: h5py, one file, one chunked resizable dataset per column (same chunk
     shapes and compression), each batch appended with ``resize`` + slice
     assignment, one ``close`` at the end: no index, no flushes;
   - ``bare_low_level``: the same with ``dataset.id.set_extent`` + ``dataset.id.write``
     (h5py's low-level calls, which BatchWriter uses too);
   - ``hpcrl_with_infos``: BatchWriter on the batches as sampled, with their ``infos``
     column (one JSON document per row), which a bare h5py write cannot store.
   The ratio is hpcrl's against the faster bare write. MB/s counts the numeric
   columns' bytes for all four. Files go to ``--dir`` (default: a temporary
   directory) and are deleted after each repeat; the page cache takes the writes
   (no fsync), as it does while training.
3. Sampling stall: ``sample()`` of two identical workers, with and without
   ``config["output"]``, alternating; the slowdown of the recording one.

Target: hpcrl's MB/s >= 80% of bare's.

Run:
    python benchmarks/hdf5_io.py
    python benchmarks/hdf5_io.py --obs-shape 84 84 4 --batches 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import h5py
import numpy as np
import torch

from hpcrl.algorithms.a2c import A2CTorchPolicy
from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.io.batch_writer import BatchWriter, chunk_rows, parse_compression
from hpcrl.policy.sample_batch import SampleBatch

# Set by --clock: time.perf_counter (wall) or time.process_time (this process's CPU time,
# user + system, which other jobs on a shared machine disturb less; everything timed
# runs in one thread).
CLOCK = time.perf_counter


def worker_config(args: argparse.Namespace, output: str | None) -> dict[str, Any]:
    return {
        "num_envs_per_worker": args.num_envs,
        "rollout_fragment_length": args.fragment_length,
        "model": {"fcnet_hiddens": [64, 64]},
        "seed": 0,
        "output": output,
        "output_compress": args.compress,
    }


def sample_batches(args: argparse.Namespace) -> list[SampleBatch]:
    worker = RolloutWorker("CartPole-v1", A2CTorchPolicy, worker_config(args, None))
    batches = [worker.sample() for _ in range(args.batches)]
    worker.stop()
    if args.obs_shape:
        rng = np.random.default_rng(0)
        for batch in batches:
            for key in ("obs", "new_obs"):
                batch[key] = rng.integers(0, 256, (batch.count, *args.obs_shape), dtype=np.uint8)
    return batches


def numeric_columns(batch: SampleBatch) -> dict[str, np.ndarray]:
    return {k: v for k, v in batch.items() if v.dtype.kind in "biuf"}


def write_hpcrl(batches: list[SampleBatch], directory: str, compress: str | None) -> float:
    start = CLOCK()
    with BatchWriter(directory, compress=compress) as writer:
        for batch in batches:
            writer.write(batch)
    return CLOCK() - start


def write_bare(
    batches: list[SampleBatch], directory: str, compress: str | None, low_level: bool = False
) -> float:
    """The plainest h5py append of the same arrays, with the writer's chunk shapes:
    ``resize`` and slice assignment, or (``low_level``) ``set_extent`` and ``write``
    on the dataset's id, as BatchWriter does."""
    compression, level = parse_compression(compress)
    start = CLOCK()
    with h5py.File(os.path.join(directory, "bare.h5"), "w", libver="latest") as f:
        datasets: dict[str, h5py.Dataset] = {}
        for batch in batches:
            for key, value in numeric_columns(batch).items():
                dataset = datasets.get(key)
                if dataset is None:
                    row_bytes = value.dtype.itemsize * int(np.prod(value.shape[1:]))
                    rows = chunk_rows(row_bytes, len(value))
                    dataset = datasets[key] = f.create_dataset(
                        key,
                        shape=(0, *value.shape[1:]),
                        maxshape=(None, *value.shape[1:]),
                        dtype=value.dtype,
                        chunks=(rows, *value.shape[1:]),
                        compression=compression,
                        compression_opts=level,
                    )
                n = dataset.shape[0]
                if low_level:
                    shape = value.shape
                    dataset.id.set_extent((n + len(value), *shape[1:]))
                    space = dataset.id.get_space()
                    space.select_hyperslab((n,) + (0,) * (len(shape) - 1), shape)
                    dataset.id.write(h5py.h5s.create_simple(shape), space, value)
                else:
                    dataset.resize(n + len(value), axis=0)
                    dataset[n:] = value
    return CLOCK() - start


def time_sampling(args: argparse.Namespace, directory: str) -> tuple[float, float]:
    """Median seconds per sample() without and with recording."""
    plain = RolloutWorker("CartPole-v1", A2CTorchPolicy, worker_config(args, None))
    recording = RolloutWorker("CartPole-v1", A2CTorchPolicy, worker_config(args, directory))
    plain.sample(), recording.sample()  # start-up: env reset, file creation
    times: dict[str, list[float]] = {"plain": [], "recording": []}
    for _ in range(args.sample_repeats):
        for name, worker in (("plain", plain), ("recording", recording)):
            start = CLOCK()
            worker.sample()
            times[name].append(CLOCK() - start)
    plain.stop()
    recording.stop()
    return statistics.median(times["plain"]), statistics.median(times["recording"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--fragment-length", type=int, default=32)
    parser.add_argument("--obs-shape", type=int, nargs="*", default=[])
    parser.add_argument("--compress", default=None, help="None, gzip, gzip:N or lzf")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sample-repeats", type=int, default=100)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    torch.set_num_threads(1)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time

    sampled = sample_batches(args)
    batches = [SampleBatch(numeric_columns(b)) for b in sampled]
    mb = sum(v.nbytes for b in batches for v in numeric_columns(b).values()) / 1e6
    rows = sum(b.count for b in batches)
    print(
        f"{len(batches)} batches, {rows:,} rows, {mb:.1f} MB of numeric columns "
        f"({len(batches[0].keys())} numeric columns; obs {batches[0]['obs'].shape[1:]} "
        f"{batches[0]['obs'].dtype}); compress={args.compress}; clock={args.clock}"
    )
    root = tempfile.mkdtemp(prefix="hpcrl_hdf5_io_", dir=args.dir)
    writers = {
        "hpcrl": write_hpcrl,
        "bare": write_bare,
        "bare_low_level": lambda *a: write_bare(*a, low_level=True),
        "hpcrl_with_infos": lambda _, *a: write_hpcrl(sampled, *a),
    }
    rates: dict[str, list[float]] = {name: [] for name in writers}
    ratios = []
    try:
        for repeat in range(args.repeats):
            seconds = {}
            for name, write in writers.items():
                directory = os.path.join(root, f"{name}{repeat}")
                os.makedirs(directory)
                seconds[name] = write(batches, directory, args.compress)
                shutil.rmtree(directory)
                rates[name].append(mb / seconds[name])
            # Against the faster of the two bare writes.
            ratios.append(min(seconds["bare"], seconds["bare_low_level"]) / seconds["hpcrl"])
            print(
                f"repeat {repeat}: "
                + "  ".join(f"{name} {rates[name][-1]:8.1f} MB/s" for name in writers)
                + f"  hpcrl / fastest bare {ratios[-1]:.1%}",
                flush=True,
            )
        plain_s, recording_s = time_sampling(args, os.path.join(root, "sampling"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ratio = statistics.median(ratios)
    print()
    print("| writer | MB/s (median) | batches/s |")
    print("|:-------|--------------:|----------:|")
    labels = {
        "hpcrl": "hpcrl BatchWriter",
        "bare": "bare h5py (resize + slice assignment)",
        "bare_low_level": "bare h5py (set_extent + write)",
        "hpcrl_with_infos": "hpcrl BatchWriter, batches with their infos",
    }
    for name, label in labels.items():
        rate = statistics.median(rates[name])
        print(f"| {label} | {rate:,.1f} | {rate / mb * len(batches):,.0f} |")
    verdict = "PASS" if ratio >= 0.8 else "FAIL"
    print(
        f"\nhpcrl / fastest bare (median of per-repeat ratios): {ratio:.1%}  "
        f"target >= 80%: {verdict}"
    )
    stall = recording_s / plain_s - 1
    print(
        f"sample() of {args.num_envs} envs x {args.fragment_length} steps: "
        f"{plain_s * 1e3:.2f} ms without recording, {recording_s * 1e3:.2f} ms with "
        f"({stall:+.1%})"
    )


if __name__ == "__main__":
    main()
