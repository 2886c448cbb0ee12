"""Experiment overhead: trials per minute of ``hpcrl.tune.run`` beside Ray Tune's.

Each system runs ``--trials`` function trials of about ``--trial-seconds`` each
(``--reports`` iterations that sleep and report), ``--concurrent`` at a time
(one CPU per trial), in a fresh process timed from spawn to exit, so start-up,
trial processes and result handling all count. Ray Tune 2.60 runs in its own
interpreter (``--ray-python``; the ``bench`` extra). The ideal rate is
``concurrent / trial_seconds x 60`` trials per minute.

Target: hpcrl >= 2x Ray Tune's trials per minute.

Also timed: ``hpcrl train --run PPO --env CartPole-v1`` for one iteration
(local backend): from spawn to the first iteration's status line, against the
target of 2 s, and to the process's exit.

Example:
    python benchmarks/tune_overhead.py --ray-python /tmp/rayenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from solve_harness import print_machine, version


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--trial-seconds", type=float, default=1.0)
    parser.add_argument("--reports", type=int, default=10, help="results per trial")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="runs per system (median)")
    parser.add_argument(
        "--ray-python", default=None, help="the Python with ray[tune] 2.60 (None: skip Ray Tune)"
    )
    parser.add_argument("--child", choices=["hpcrl", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--local-dir", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def trainable_body(config: dict, report) -> None:
    """What every trial does: ``reports`` sleeps, each followed by a result."""
    pause = config["seconds"] / config["reports"]
    for i in range(config["reports"]):
        time.sleep(pause)
        report({"score": config["x"] * (i + 1), "step": i + 1})


def run_and_print(tune, trainable, args: argparse.Namespace, version: str, **where) -> None:
    """The same experiment on either system's ``tune.run``; prints one JSON line.
    ``where``: the system's name for the results directory."""
    analysis = tune.run(
        trainable,
        config={
            "x": tune.grid_search(list(range(args.trials))),
            "seconds": args.trial_seconds,
            "reports": args.reports,
        },
        name="overhead",
        resources_per_trial={"cpu": 1},
        max_concurrent_trials=args.concurrent,
        verbose=0,
        **where,
    )
    done = sum(trial.status == "TERMINATED" for trial in analysis.trials)
    print(json.dumps({"version": version, "terminated": done}), flush=True)


def hpcrl_child(args: argparse.Namespace) -> None:
    from hpcrl import tune

    def trainable(config):
        trainable_body(config, lambda metrics: tune.report(**metrics))

    run_and_print(tune, trainable, args, version("hpcrl"), local_dir=args.local_dir)


def ray_child(args: argparse.Namespace) -> None:
    import ray
    from ray import tune

    ray.init(num_cpus=args.concurrent, include_dashboard=False, log_to_driver=False)

    def trainable(config):
        trainable_body(config, tune.report)

    run_and_print(tune, trainable, args, ray.__version__, storage_path=args.local_dir)


def timed_child(python: str, system: str, args: argparse.Namespace) -> tuple[dict, float]:
    with tempfile.TemporaryDirectory() as local_dir:
        command = [
            python, str(Path(__file__).resolve()), "--child", system,
            "--trials", str(args.trials), "--trial-seconds", str(args.trial_seconds),
            "--reports", str(args.reports), "--concurrent", str(args.concurrent),
            "--local-dir", local_dir,
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        process = subprocess.run(command, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"exited with {process.returncode}: {process.stderr.strip()[-800:]}")
    return json.loads(process.stdout.strip().splitlines()[-1]), elapsed


def first_iteration_seconds() -> tuple[float, float]:
    """``hpcrl train`` for one PPO iteration: seconds from spawn to its first result's
    status line (on stderr), and to the process's exit."""
    with tempfile.TemporaryDirectory() as local_dir:
        command = [
            sys.executable, "-m", "hpcrl", "train", "--run", "PPO", "--env", "CartPole-v1",
            "--stop", '{"training_iteration": 1}', "--local-dir", local_dir,
        ]  # fmt: skip
        start = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        first = None
        for line in process.stderr:
            if first is None and "iter 1 " in line:
                first = time.perf_counter() - start
        if process.wait() != 0 or first is None:
            raise RuntimeError("hpcrl train failed or printed no result")
        return first, time.perf_counter() - start


def main() -> None:
    args = parse_args()
    if args.child == "hpcrl":
        hpcrl_child(args)
        return
    if args.child == "ray":
        ray_child(args)
        return
    print_machine(1)
    ideal = args.concurrent / args.trial_seconds * 60
    print(
        f"{args.trials} function trials of {args.trial_seconds:g} s ({args.reports} results "
        f"each), {args.concurrent} at a time; ideal {ideal:.0f} trials/min"
    )
    rates = {}
    systems = [("hpcrl", sys.executable)]
    if args.ray_python:
        systems.append(("ray", args.ray_python))
    for system, python in systems:
        runs = []
        for _ in range(args.repeats):
            try:
                info, elapsed = timed_child(python, system, args)
            except RuntimeError as err:
                print(f"{system}: not run: {err}")
                break
            runs.append(elapsed)
        if not runs:
            continue
        elapsed = statistics.median(runs)
        rates[system] = args.trials / elapsed * 60
        name = "Ray Tune" if system == "ray" else "hpcrl.tune"
        print(
            f"{name} {info['version']}: {elapsed:.1f} s for {args.trials} trials "
            f"({info['terminated']} terminated): {rates[system]:.0f} trials/min "
            f"({rates[system] / ideal:.0%} of ideal)"
        )
    if "hpcrl" in rates and "ray" in rates:
        ratio = rates["hpcrl"] / rates["ray"]
        print(f"hpcrl / Ray Tune: {ratio:.2f}x (target >= 2x): {'PASS' if ratio >= 2 else 'FAIL'}")
    runs = [first_iteration_seconds() for _ in range(5)]
    first = statistics.median(run[0] for run in runs)
    whole = statistics.median(run[1] for run in runs)
    print(
        f"hpcrl train --run PPO --env CartPole-v1 (local), medians of 5: first iteration's "
        f"result after {first:.2f} s (target <= 2 s): {'PASS' if first <= 2 else 'FAIL'}; "
        f"process ends after {whole:.2f} s"
    )


if __name__ == "__main__":
    main()
