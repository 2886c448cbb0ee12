"""Soak: the memory of every process of a long run, to catch what grows.

Each algorithm (``--algorithms PPO IMPALA DQN``) runs in a child process (the
driver) for ``--minutes`` on CartPole-v1 with a small MLP and ``output``
recording on (every sampling worker appends its batches to an HDF5 file in a
temporary directory). This process samples, every ``--interval-s``, the
resident set size (RSS) of the driver and of every process below it: the Dask
scheduler lives in the driver, each Dask worker (rollout worker, learner) is a
process under a nanny process; learner processes of the local backend
(``--num-learners`` > 1) are children of the driver.

Printed per process: RSS after ``--warmup-minutes`` (the caches, the replay
buffer and the allocator's pools are full by then), RSS at the end, its peak
and the growth between the two. Target: growth < 5% for every process
(``--target``).

The driver also counts live Python objects by type (``gc.get_objects()``, in
the driver and in every Dask worker) at the end of warm-up and at the end,
and prints the types whose count grew most: where to look when a process
grows. ``--tracemalloc`` adds the driver's top allocation sites by growth
(slower).

Backends: "dask" (default; workers are Dask worker processes of a
``LocalCluster``, so the growth of each is seen on its own), "mpi" (the driver
is started as ``mpiexec -n <num_workers + 1>``: rank 0 drives, each other rank
serves a worker) or "local" (the workers are objects in the driver).

Example:
    python benchmarks/soak.py --algorithms PPO --minutes 30
    python benchmarks/soak.py --algorithms IMPALA DQN --minutes 12 --interval-s 30
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from solve_harness import print_machine, script_parser

ENV_ID = "CartPole-v1"

# Small on purpose: the soak looks for growth, not speed, and shares the machine.
ALGORITHM_CONFIGS: dict[str, dict[str, Any]] = {
    "PPO": {
        "num_envs_per_worker": 4,
        "rollout_fragment_length": 125,
        "train_batch_size": 1000,
        "sgd_minibatch_size": 250,
        "num_sgd_iter": 4,
        "lr": 3e-4,
    },
    "IMPALA": {
        "num_envs_per_worker": 4,
        "rollout_fragment_length": 50,
        "train_batch_size": 500,
        "lr": 5e-4,
    },
    "DQN": {
        "num_envs_per_worker": 4,
        "rollout_fragment_length": 4,
        "train_batch_size": 32,
        "buffer_size": 20_000,
        "learning_starts": 1000,
        "target_network_update_freq": 500,
    },
}


def parse_args() -> argparse.Namespace:
    parser = script_parser(__doc__)
    parser.add_argument("--algorithms", nargs="+", choices=list(ALGORITHM_CONFIGS), default=["PPO"])
    parser.add_argument("--minutes", type=float, default=30.0, help="run time per algorithm")
    parser.add_argument(
        "--warmup-minutes", type=float, default=5.0, help="growth is measured from here"
    )
    parser.add_argument("--interval-s", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--backend", choices=["local", "dask", "mpi"], default="dask")
    parser.add_argument("--num-workers", type=int, default=2, help="remote rollout workers")
    parser.add_argument("--num-learners", type=int, default=1, help="data-parallel learners")
    parser.add_argument("--hiddens", type=int, nargs="+", default=[64, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--target", type=float, default=5.0, help="largest growth in %%")
    parser.add_argument("--tracemalloc", action="store_true", help="trace the driver's allocations")
    parser.add_argument(
        "--samples-file", type=Path, help="also write every RSS sample here (JSON lines)"
    )
    parser.add_argument("--child", choices=list(ALGORITHM_CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--roles-file", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


# -- the child: the driver of one run ------------------------------------------
def trainer_config(args: argparse.Namespace, algorithm: str, output_dir: str) -> dict[str, Any]:
    return {
        "env": ENV_ID,
        "backend": args.backend,
        "num_workers": args.num_workers,
        "num_learners": args.num_learners,
        "model": {"fcnet_hiddens": args.hiddens},
        "num_torch_threads": args.threads,
        "seed": 0,
        "output": output_dir,
        "min_iter_time_s": 1.0,
        **ALGORITHM_CONFIGS[algorithm],
    }


def type_counts() -> dict[str, int]:
    """Live objects tracked by the garbage collector, by type name."""
    gc.collect()
    return dict(collections.Counter(type(o).__qualname__ for o in gc.get_objects()))


def process_roles(trainer: Any) -> dict[int, str]:
    """pid -> what the process is, for the driver and the backend's actors."""
    roles = {os.getpid(): "driver"}
    for actor in getattr(trainer.workers.backend, "_actors", []):
        if getattr(actor, "pid", 0):
            roles[actor.pid] = f"{actor.role} {actor.index}"
    return roles


def all_type_counts(trainer: Any) -> dict[str, dict[str, int]]:
    """``type_counts()`` of the driver and, on Dask, of every Dask worker (by pid)."""
    counts = {"driver": type_counts()}
    client = getattr(trainer.workers.backend, "client", None)
    if client is not None:
        pids = client.run(os.getpid)
        for address, result in client.run(type_counts).items():
            counts[f"pid {pids[address]}"] = result
    return counts


def run_child(args: argparse.Namespace) -> None:
    """Train ``args.child`` until ``--minutes`` have passed since the start; one JSON
    line per sample interval, and the object-count growth at the end."""
    import torch

    from hpcrl.algorithms.registry import get_trainer_class

    torch.set_num_threads(args.threads)
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(10)
    start = time.monotonic()
    # The object counts take a few MiB of the driver's heap, which it keeps: the first
    # is made before the parent's warm sample, the last after its final one.
    count_at = max(0.0, args.warmup_minutes * 60 - args.interval_s / 2)
    stop_at = args.minutes * 60 + min(args.interval_s / 2, 10.0)
    with tempfile.TemporaryDirectory(prefix="hpcrl-soak-") as output_dir:
        trainer = get_trainer_class(args.child)(trainer_config(args, args.child, output_dir))
        args.roles_file.write_text(json.dumps(process_roles(trainer)))
        warm_counts: dict[str, dict[str, int]] | None = None
        warm_snapshot = None
        next_report = start + args.interval_s
        result: dict[str, Any] = {}
        while time.monotonic() - start < stop_at:
            result = trainer.train()
            now = time.monotonic()
            if warm_counts is None and now - start >= count_at:
                warm_counts = all_type_counts(trainer)
                if args.tracemalloc:
                    warm_snapshot = tracemalloc.take_snapshot()
            if now >= next_report:
                next_report += args.interval_s
                recorded = sum(f.stat().st_size for f in Path(output_dir).iterdir())
                line = {
                    "minute": round((now - start) / 60, 2),
                    "iteration": result["training_iteration"],
                    "timesteps_total": result["timesteps_total"],
                    "episode_reward_mean": result.get("episode_reward_mean"),
                    "recorded_mb": round(recorded / 2**20, 1),
                }
                print(json.dumps(line), flush=True)
        end_counts = all_type_counts(trainer)
        if warm_counts is not None:
            print_object_growth(warm_counts, end_counts)
        if warm_snapshot is not None:
            print("driver allocation sites by growth (tracemalloc):")
            diff = tracemalloc.take_snapshot().compare_to(warm_snapshot, "traceback")
            for stat in diff[:10]:
                print(f"  {stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks")
                for frame in stat.traceback.format()[-6:]:
                    print(f"      {frame}")
        trainer.stop()
    print(json.dumps({"done": True, **{k: result.get(k) for k in ("timesteps_total",)}}))


def print_object_growth(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], top: int = 8
) -> None:
    print("live Python objects by type, end of warm-up -> end (largest growth):")
    for process, counts in after.items():
        old = before.get(process, {})
        growth = sorted(((n - old.get(t, 0), t, n) for t, n in counts.items()), reverse=True)
        shown = ", ".join(f"{t} {n - d}->{n}" for d, t, n in growth[:top] if d > 0)
        print(f"  {process}: total {sum(old.values())}->{sum(counts.values())}; {shown or '-'}")


# -- the parent: samples the RSS of the driver and everything under it ---------
@dataclass
class ProcessTrace:
    pid: int
    role: str
    samples: list[tuple[float, int]] = field(default_factory=list)  # (minute, RSS bytes)

    def rss_at(self, minute: float) -> int | None:
        """The first sample at or after ``minute``."""
        return next((rss for m, rss in self.samples if m >= minute), None)


def describe(process: psutil.Process, roles: dict[int, str], root_pid: int) -> str:
    """What ``process`` is: its role from the driver, else guessed from its command line."""
    if process.pid in roles:
        return roles[process.pid]
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return "?"
    if "mpiexec" in cmdline or "hydra_pmi_proxy" in cmdline:
        return f"MPI launcher ({process.name()})"
    if process.pid == root_pid:
        return "driver"
    if "--child" in cmdline:  # this script on an MPI rank other than the driver's
        return "MPI worker rank"
    if "hpcrl.learners.processes" in cmdline:
        return "learner process"
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    if "multiprocessing.forkserver" in cmdline:
        return "Dask workers' forkserver"
    if "spawn_main" in cmdline:
        return "Dask worker (no actor)"
    return cmdline[:34]


def sample_tree(
    driver: psutil.Process, traces: dict[int, ProcessTrace], roles: dict[int, str], minute: float
) -> None:
    try:
        processes = [driver, *driver.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        try:
            rss = process.memory_info().rss
        except psutil.Error:
            continue
        trace = traces.get(process.pid)
        if trace is None:
            trace = traces[process.pid] = ProcessTrace(process.pid, "?")
        trace.role = describe(process, roles, driver.pid)
        trace.samples.append((minute, rss))


def soak(args: argparse.Namespace, algorithm: str) -> bool:
    """Run ``algorithm`` in a child, sample it; print the table. True when every
    process grew less than the target."""
    print(f"\n== {algorithm}, backend {args.backend}, {args.minutes:g} min ==", flush=True)
    with tempfile.TemporaryDirectory(prefix="hpcrl-soak-roles-") as tmp:
        roles_file = Path(tmp) / "roles.json"
        command = [sys.executable, __file__, "--child", algorithm, "--roles-file", str(roles_file)]
        command += forwarded_arguments(args)
        if args.backend == "mpi":  # rank 0 drives, one rank per worker
            command = ["mpiexec", "-n", str(args.num_workers + 1), *command]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        start = time.monotonic()
        child = subprocess.Popen(command, env=env, text=True)
        driver = psutil.Process(child.pid)
        traces: dict[int, ProcessTrace] = {}
        roles: dict[int, str] = {}
        next_sample = start
        while child.poll() is None:
            if not roles and roles_file.exists():
                roles = {int(pid): role for pid, role in json.loads(roles_file.read_text()).items()}
            minute = (time.monotonic() - start) / 60
            if time.monotonic() >= next_sample and minute * 60 < args.minutes * 60 + 1:
                next_sample += args.interval_s
                sample_tree(driver, traces, roles, minute)
                record_samples(args, algorithm, traces, minute)
            time.sleep(0.5)
        if child.returncode != 0:
            print(f"{algorithm}: the driver exited with {child.returncode}")
            return False
    return print_table(list(traces.values()), args.warmup_minutes, args.target)


def forwarded_arguments(args: argparse.Namespace) -> list[str]:
    forwarded = [
        "--minutes", str(args.minutes), "--warmup-minutes", str(args.warmup_minutes),
        "--interval-s", str(args.interval_s), "--backend", args.backend,
        "--num-workers", str(args.num_workers), "--num-learners", str(args.num_learners),
        "--threads", str(args.threads), "--hiddens", *map(str, args.hiddens),
    ]  # fmt: skip
    return forwarded + (["--tracemalloc"] if args.tracemalloc else [])


def record_samples(
    args: argparse.Namespace, algorithm: str, traces: dict[int, ProcessTrace], minute: float
) -> None:
    if args.samples_file is None:
        return
    rows = {
        t.pid: [t.role, t.samples[-1][1]] for t in traces.values() if t.samples[-1][0] == minute
    }
    with args.samples_file.open("a") as file:
        file.write(json.dumps({"algorithm": algorithm, "minute": round(minute, 2), "rss": rows}))
        file.write("\n")


def print_table(traces: list[ProcessTrace], warmup_minutes: float, target: float) -> bool:
    header = (
        f"{'process':<34} {'pid':>7} {'RSS warm MiB':>12} {'RSS end MiB':>11} "
        f"{'peak MiB':>8} {'growth':>7}  result"
    )
    print(header)
    print("-" * len(header))
    all_ok = True
    for trace in sorted(traces, key=lambda t: t.pid):
        warm = trace.rss_at(warmup_minutes)
        if warm is None or len(trace.samples) < 2:
            continue  # gone before warm-up ended (e.g. a short-lived helper)
        end = trace.samples[-1][1]
        peak = max(rss for _, rss in trace.samples)
        growth = 100 * (end - warm) / warm
        ok = growth < target
        all_ok = all_ok and ok
        print(
            f"{trace.role[:34]:<34} {trace.pid:>7} {warm / 2**20:>12.1f} {end / 2**20:>11.1f} "
            f"{peak / 2**20:>8.1f} {growth:>+6.1f}%  {'PASS' if ok else 'FAIL'}"
        )
    print(f"every process grew < {target:g}% after warm-up: {'PASS' if all_ok else 'FAIL'}")
    return all_ok


def main() -> None:
    args = parse_args()
    if args.child:
        run_child(args)
        return
    if args.warmup_minutes >= args.minutes:
        raise SystemExit(
            f"--warmup-minutes {args.warmup_minutes:g} must be below --minutes {args.minutes:g}"
        )
    print_machine(args.threads)
    print(
        f"{ENV_ID}, MLP {args.hiddens}, {args.num_workers} workers, {args.num_learners} "
        f"learner(s), output recording on; RSS every {args.interval_s:g} s, growth from "
        f"minute {args.warmup_minutes:g} to the end"
    )
    results = {algorithm: soak(args, algorithm) for algorithm in args.algorithms}
    print("\n" + ", ".join(f"{a}: {'PASS' if ok else 'FAIL'}" for a, ok in results.items()))
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
