"""What the time-to-solve benchmarks share: timed child processes, hpcrl runs, the table.

Every run is a fresh Python process timed from spawn to exit in the parent, so
imports, env and model construction all count. Seeds run one after the other,
the systems alternating, so that changes in machine load hit all alike, and
every process gets the same number of torch threads.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TUNED = REPO / "examples" / "tuned"


@dataclass
class SeedResult:
    system: str
    seed: int
    solved: bool
    env_steps: int
    wall_s: float


@dataclass
class SystemSummary:
    """One system's runs of one task: seeds solved, median wall time and env steps."""

    system: str
    solved: int
    runs: int
    median_wall_s: float
    median_env_steps: float


def script_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark script's parser: its docstring's first paragraph as the
    description, the rest (what it measures, an example) after the options."""
    return argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(doc.split("\n\n")[1:]),
    )


def add_run_arguments(
    parser: argparse.ArgumentParser, systems: Sequence[str] = ("hpcrl", "sb3")
) -> None:
    """``--seeds``, ``--systems`` (any of ``systems``, all by default) and ``--threads``,
    as every time-to-solve script takes them."""
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="one run per seed per system"
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=list(systems),
        default=list(systems),
        help="systems to run",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads in every process (OMP_NUM_THREADS); 0: torch's default",
    )


def zoo_schedule(value: str | float) -> Any:
    """An rl-baselines3-zoo hyperparameter as SB3 takes it: "lin_X" becomes a
    schedule falling linearly from X to 0 over the run."""
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[len("lin_") :])
        return lambda progress_remaining: progress_remaining * start
    return value


def timed_run(command: list[str], threads: int) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``command`` with ``OMP_NUM_THREADS=threads`` (0: torch's default);
    the process and its wall time from spawn to exit."""
    env = dict(os.environ)
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {process.returncode}:\n{process.stderr[-3000:]}"
        )
    return process, wall_s


@functools.cache
def compile_hpcrl_bytecode() -> None:
    """When hpcrl is installed from a source tree (editable), compile its bytecode once.

    A regular pip install compiles bytecode at install time (as SB3's wheel install
    did), but an editable one does not, and with PYTHONDONTWRITEBYTECODE=1 (set in
    this environment) every hpcrl process would compile all its modules again,
    a cost that belongs to neither system. Runs once per process; prints one line
    when it compiled.
    """
    try:
        direct_url = metadata.distribution("hpcrl").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return
    if not direct_url or not json.loads(direct_url).get("dir_info", {}).get("editable"):
        return
    spec = importlib.util.find_spec("hpcrl")
    if spec is None or spec.origin is None:
        return
    package_dir = Path(spec.origin).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package_dir)], check=True)
    print(
        f"hpcrl is installed editable from its source tree: compiled its bytecode once "
        f"(python -m compileall -q {package_dir}), as pip does at install time"
    )


def run_hpcrl_train(
    experiment_file: Path, seed: int, threads: int, extra: Sequence[str] = ()
) -> tuple[dict[str, Any], float]:
    """``hpcrl train -f experiment_file --seed seed -q [extra]``: the trial's last
    result (from its result.json) and the process's wall time."""
    compile_hpcrl_bytecode()
    with tempfile.TemporaryDirectory() as local_dir:
        command = [
            sys.executable,
            "-m",
            "hpcrl",
            "train",
            "-f",
            str(experiment_file),
            "--seed",
            str(seed),
            "--local-dir",
            local_dir,
            "-q",
            *extra,
        ]
        process, wall_s = timed_run(command, threads)
        match = re.search(r"^done: .*; results in (.+)$", process.stdout, re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no summary line in hpcrl's output:\n{process.stdout[-3000:]}")
        lines = (Path(match.group(1)) / "result.json").read_text().splitlines()
    return json.loads(lines[-1]), wall_s


def run_child(script: str, args: list[str], threads: int) -> tuple[dict[str, Any], float]:
    """``python script args``, which prints one JSON line last: that line and the
    wall time."""
    process, wall_s = timed_run([sys.executable, script, *args], threads)
    return json.loads(process.stdout.strip().splitlines()[-1]), wall_s


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def print_machine(threads: int) -> None:
    print(
        f"{cpu_model()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
        f"torch {version('torch')}, gymnasium {version('gymnasium')}, "
        f"hpcrl {version('hpcrl')}, stable-baselines3 {version('stable-baselines3')}"
    )
    print(f"torch threads per process: {threads if threads > 0 else 'torch default'}")


def run_seeds(
    seeds: list[int], runners: dict[str, Callable[[int], SeedResult]]
) -> list[SeedResult]:
    """Every seed with every system in turn, a line printed per run."""
    print(f"{'system':<7} {'seed':>4} {'solved':>6} {'env steps':>10} {'wall s':>7}")
    results = []
    for seed in seeds:
        for runner in runners.values():
            result = runner(seed)
            results.append(result)
            print(
                f"{result.system:<7} {result.seed:>4} {'yes' if result.solved else 'no':>6} "
                f"{result.env_steps:>10,} {result.wall_s:>7.1f}",
                flush=True,
            )
    return results


def summarise(results: list[SeedResult], system: str) -> SystemSummary:
    """``system``'s seeds solved, median wall time and median env steps in ``results``."""
    rows = [r for r in results if r.system == system]
    return SystemSummary(
        system,
        solved=sum(r.solved for r in rows),
        runs=len(rows),
        median_wall_s=statistics.median(r.wall_s for r in rows),
        median_env_steps=statistics.median(r.env_steps for r in rows),
    )


def print_table(results: list[SeedResult], systems: list[str], target: float) -> bool:
    """Per system: seeds solved, median wall time and env steps; then hpcrl's median
    wall time over SB3's against ``target``, and over every other system's for
    information. True when hpcrl and sb3 both ran, the ratio is at most ``target``
    and every hpcrl seed solved (a seed SB3 did not solve counts with its time to
    the end of its budget, which can only favour SB3)."""
    header = f"{'system':<7} {'solved':>7} {'median wall s':>14} {'median env steps':>17}"
    print()
    print(header)
    print("-" * len(header))
    summaries = {system: summarise(results, system) for system in systems}
    for s in summaries.values():
        print(
            f"{s.system:<7} {f'{s.solved}/{s.runs}':>7} {s.median_wall_s:>14.1f} "
            f"{s.median_env_steps:>17,.0f}"
        )
    if "hpcrl" not in summaries:
        return False
    hpcrl = summaries["hpcrl"]
    ok = False
    lines = []
    if "sb3" in summaries:
        ratio = hpcrl.median_wall_s / summaries["sb3"].median_wall_s
        all_solved = hpcrl.solved == hpcrl.runs
        ok = ratio <= target and all_solved
        lines.append(
            f"hpcrl / sb3 median wall time: {ratio:.3f} (target <= {target:.3g}); "
            f"every hpcrl seed solved: {'yes' if all_solved else 'no'} "
            f"-> {'PASS' if ok else 'FAIL'}"
        )
    for other in summaries.values():
        if other.system not in ("hpcrl", "sb3"):
            ratio = hpcrl.median_wall_s / other.median_wall_s
            lines.append(f"hpcrl / {other.system} median wall time: {ratio:.3f} (for information)")
    if lines:
        print("\n" + "\n".join(lines))
    return ok
