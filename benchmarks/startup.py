"""Start-up: whole-process seconds from launch to the end of the first iteration.

For each launch path (the local backend, ``mpiexec -n 3`` with the MPI
backend, two data-parallel learners, a Dask LocalCluster with two workers,
and ``--resume`` after a finished first iteration) and each algorithm asked
for, ``hpcrl train`` is started for one iteration on CartPole-v1 (Pendulum-v1
for SAC), and the script measures the seconds from spawn to the first
iteration's status line (stderr) and to the process's exit. Beside them: the
seconds of the imports each process of that path must make (torch, gymnasium,
numpy and the algorithm's modules; plus mpi4py or distributed), each timed in
a fresh interpreter, and RLlib 2.60's time to its first ``train()`` result
when ``--rllib-python`` names an interpreter with Ray installed.

Usage::

    python benchmarks/startup.py                     # every path, PPO, 5 runs each
    python benchmarks/startup.py --algorithms PPO DQN IMPALA --runs 5 \\
        --rllib-python /path/to/ray-venv/bin/python

Every run is a new process, one at a time, in this process's environment
(``OMP_NUM_THREADS`` as you set it; unset, torch takes a thread per core).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

PATHS = ("local", "mpi", "learners", "dask", "resume")
RLLIB_LIMIT_S = 120.0
# Targets on a 2-core machine (medians, seconds, PPO; --resume: the fresh start's
# figure plus one second, for every algorithm).
TARGETS = {"local": 2.5, "mpi": 4.5, "learners": 4.5, "dask": 5.0}
ENVS = {"SAC": "Pendulum-v1", "TD3": "Pendulum-v1", "DDPG": "Pendulum-v1"}
# Small first iterations, so the figures are start-up and not training.
CONFIGS = {
    "PPO": {"train_batch_size": 256, "sgd_minibatch_size": 128, "num_sgd_iter": 1},
    "DQN": {"learning_starts": 100, "timesteps_per_iteration": 200},
    "IMPALA": {
        "train_batch_size": 200,
        "min_iter_time_s": 0.0,
        "timesteps_per_iteration": 200,
    },
    "SAC": {"learning_starts": 100, "timesteps_per_iteration": 200},
    "A2C": {"train_batch_size": 200},
    # its workers learn: 2 of them on every path (child processes on the local one)
    "DDPPO": {"num_workers": 2, "rollout_fragment_length": 32, "num_sgd_iter": 1},
}
IMPORTS = {
    "local": "import torch, gymnasium, numpy, h5py",
    "mpi": "import torch, gymnasium, numpy, h5py; from mpi4py import MPI",
    "learners": "import torch, gymnasium, numpy, h5py, torch.distributed",
    "dask": "import torch, gymnasium, numpy, h5py, distributed",
    "resume": "import torch, gymnasium, numpy, h5py",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--algorithms", nargs="+", default=["PPO"])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument(
        "--rllib-python",
        help="a Python with ray[rllib] 2.60 installed, for RLlib's figures beside hpcrl's",
    )
    return parser.parse_args()


def train_command(algorithm: str, path: str, local_dir: str) -> list[str]:
    config = {"num_workers": 0, **CONFIGS.get(algorithm, {})}
    command = [
        sys.executable, "-m", "hpcrl", "train", "--run", algorithm,
        "--env", ENVS.get(algorithm, "CartPole-v1"), "--local-dir", local_dir,
        "--trial-name", "startup", "--stop", '{"training_iteration": 1}',
    ]  # fmt: skip
    if path == "mpi":
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("mpiexec not found: pip install mpich (or load your MPI)")
        command = [mpiexec, "-n", "3", *command, "--backend", "mpi"]
        config["num_workers"] = 2
    elif path == "learners":
        command += ["--num-learners", "2"]
    elif path == "dask":
        command += ["--backend", "dask"]
        config["num_workers"] = 2
    return [*command, "--config", json.dumps(config)]


def timed(
    command: list[str],
    marker: str = "iter 1 ",
    limit_s: float | None = None,
    on_marker: Callable[[subprocess.Popen], None] | None = None,
) -> tuple[float, float] | None:
    """Seconds from spawn to the first output line holding ``marker`` (hpcrl's status
    line of an iteration), and to exit; ``on_marker(process)`` runs when it comes.
    None when ``limit_s`` passed first (the process is killed then).

    Raises:
        RuntimeError: the process failed or never printed ``marker``.
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(limit_s, process.kill) if limit_s is not None else None
    if watchdog is not None:
        watchdog.start()
    first = None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if first is None and marker in line:
            first = time.perf_counter() - start
            if on_marker is not None:
                on_marker(process)
    code = process.wait()
    if watchdog is not None:
        watchdog.cancel()
    if first is None and code == -signal.SIGKILL and limit_s is not None:
        return None
    if (code != 0 and on_marker is None) or first is None:
        raise RuntimeError(
            f"{' '.join(command)} failed or printed no result:\n{''.join(lines[-20:])}"
        )
    return first, time.perf_counter() - start


def hpcrl_run(algorithm: str, path: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as local_dir:
        if path != "resume":
            return timed(train_command(algorithm, path, local_dir))
        # A run preempted (SIGTERM) after its first iteration, which it checkpoints;
        # the figure is the run resumed from it, to the end of its next iteration.
        command = train_command(algorithm, path, local_dir)
        stop = command.index("--stop") + 1
        command[stop] = '{"training_iteration": 1000}'
        command += ["--checkpoint-freq", "1"]
        timed(command, on_marker=lambda process: process.send_signal(signal.SIGTERM))
        command[stop] = '{"training_iteration": 2}'
        return timed([*command, "--resume"], marker="iter 2 ")


def import_seconds(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True)
    return time.perf_counter() - start


RLLIB_CHILD = """
import importlib, sys
import ray
algorithm, env, runners = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = importlib.import_module(f"ray.rllib.algorithms.{algorithm.lower()}")
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
config = getattr(module, f"{algorithm}Config")().environment(env)
config = config.env_runners(num_env_runners=runners)
# The same small first iteration as hpcrl's (CONFIGS).
if algorithm == "PPO":
    config = config.training(train_batch_size=256, minibatch_size=128, num_epochs=1)
elif algorithm in ("DQN", "SAC"):
    config = config.training(num_steps_sampled_before_learning_starts=100)
    config = config.reporting(min_sample_timesteps_per_iteration=200)
elif algorithm == "IMPALA":
    config = config.training(train_batch_size=200)
config.build_algo().train()
print("RLLIB_FIRST_RESULT", flush=True)
ray.shutdown()
"""


def rllib_run(python: str, algorithm: str, path: str) -> tuple[float, float] | None:
    """RLlib's seconds to its first result; None if it gave none within RLLIB_LIMIT_S
    (with its env runners on the 2 CPUs given to Ray, IMPALA's learner waits for a
    CPU forever)."""
    runners = 2 if path in ("mpi", "dask") else 0
    env_id = ENVS.get(algorithm, "CartPole-v1")
    command = [python, "-c", RLLIB_CHILD, algorithm, env_id, str(runners)]
    result = timed(command, marker="RLLIB_FIRST_RESULT", limit_s=RLLIB_LIMIT_S)
    if result is None:  # killed: its Ray processes stay unless stopped
        subprocess.run([str(Path(python).parent / "ray"), "stop", "--force"], capture_output=True)
    return result


def median_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> None:
    args = parse_args()
    print(
        f"start-up to the end of the first iteration, medians of {args.runs} runs "
        f"({os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        flush=True,
    )
    imports = {
        p: statistics.median(import_seconds(IMPORTS[p]) for _ in range(3)) for p in args.paths
    }
    header = (
        f"{'algorithm':<9} {'path':<9} {'first iter s':>12} {'exit s':>7} "
        f"{'imports s':>9} {'target':>7}"
    )
    if args.rllib_python:
        header += f" {'RLlib 2.60 first s':>19}"
    print(header)
    fresh: dict[str, float] = {}
    for algorithm in args.algorithms:
        for path in args.paths:
            try:
                first, end = median_pair([hpcrl_run(algorithm, path) for _ in range(args.runs)])
            except RuntimeError as err:  # e.g. an algorithm without data-parallel learners
                reason = str(err).strip().splitlines()[-1]
                print(f"{algorithm:<9} {path:<9} n/a: {reason}", flush=True)
                continue
            target = TARGETS.get(path) if algorithm == "PPO" else None
            if path == "resume" and algorithm in fresh:
                target = fresh[algorithm] + 1.0
            if path == "local":
                fresh[algorithm] = first
            verdict = (
                "" if target is None else f"{target:.1f} {'ok' if first <= target else 'OVER'}"
            )
            line = (
                f"{algorithm:<9} {path:<9} {first:>12.2f} {end:>7.2f} "
                f"{imports[path]:>9.2f} {verdict:>7}"
            )
            if args.rllib_python and path in ("local", "mpi"):
                runs = []
                for _ in range(args.runs):
                    run = rllib_run(args.rllib_python, algorithm, path)
                    if run is None:
                        break
                    runs.append(run)
                if len(runs) == args.runs:
                    line += f" {median_pair(runs)[0]:>19.2f}"
                else:
                    line += f" {f'no result in {RLLIB_LIMIT_S:.0f} s':>19}"
            print(line, flush=True)
    print(
        "imports s: one fresh interpreter importing what each process of the path must "
        "(torch, gymnasium, numpy, h5py; mpi4py or distributed), median of 3"
    )


if __name__ == "__main__":
    main()
