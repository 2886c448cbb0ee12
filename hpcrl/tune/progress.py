"""Training status: a live line on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO


def stop_progress(result: dict[str, Any], stop: dict[str, float]) -> float:
    """Fraction (0..1) of the way to the nearest stop criterion."""
    fractions = []
    for key, target in stop.items():
        value = result.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and target > 0:
            fractions.append(min(1.0, max(0.0, value / target)))
    return max(fractions, default=0.0)


def format_status(result: dict[str, Any], stop: dict[str, float], bar_width: int = 20) -> str:
    """One line: iteration, timesteps, reward, throughput, progress toward ``stop``."""
    reward = result.get("episode_reward_mean", float("nan"))
    parts = [
        f"iter {result['training_iteration']}",
        f"{result['timesteps_total']:,} steps",
        f"reward {reward:.1f}" if math.isfinite(reward) else "reward n/a",
    ]
    evaluation = result.get("evaluation", {}).get("episode_reward_mean")
    if evaluation is not None:
        parts.append(f"eval {evaluation:.1f}")
    parts += [
        f"{result.get('timesteps_per_s', float('nan')):,.0f} steps/s",
        f"{result['time_total_s']:.1f}s",
    ]
    if stop:
        fraction = stop_progress(result, stop)
        filled = int(round(fraction * bar_width))
        goal = ", ".join(f"{k} {v:g}" for k, v in stop.items())
        parts.append(f"[{'#' * filled}{'-' * (bar_width - filled)}] {fraction:4.0%} to {goal}")
    return " | ".join(parts)


def slurm_prefix(environ: Mapping[str, str] | None = None) -> str:
    """``"[slurm job J task T] "`` inside a Slurm job (``J`` is ``ARRAYJOB_TASK`` for a
    job array task, with ``.STEP`` inside a job step), else ``""``.

    Example:
        >>> slurm_prefix({"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"})
        '[slurm job 42.0 task 0] '
        >>> slurm_prefix({"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40",
        ...               "SLURM_ARRAY_TASK_ID": "3"})
        '[slurm job 40_3 task 0] '
        >>> slurm_prefix({})
        ''
    """
    env = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in env:
        return ""
    job = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_STEP_ID" in env:
        job += f".{env['SLURM_STEP_ID']}"
    return f"[slurm job {job} task {env.get('SLURM_PROCID', '0')}] "


class StatusReporter:
    """Shows each result: rewritten in place on a terminal, else a plain line at
    most every ``interval_s`` seconds (and always the last one).

    Inside a Slurm job the lines are always plain, each starting with the job and
    task ids (``slurm_prefix``): a job's output goes to a log file, even where
    ``srun --pty`` makes it look like a terminal.

    Args:
        stop: the stop criteria (for the progress bar).
        stream: where to write (stderr by default).
        interval_s: minimum seconds between plain lines.
        prefix: text before every plain line (default: ``slurm_prefix()``).
        environ: the environment to read Slurm's variables from (default
            ``os.environ``).
    """

    def __init__(
        self,
        stop: dict[str, float],
        stream: TextIO | None = None,
        interval_s: float = 5.0,
        prefix: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.stop = stop
        self.stream = stream if stream is not None else sys.stderr
        slurm = slurm_prefix(environ)
        self.live = not slurm and bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s
        self.prefix = slurm if prefix is None else prefix
        self._last_line = -math.inf
        self._pending: str | None = None

    def report(self, result: dict[str, Any]) -> None:
        line = format_status(result, self.stop)
        if self.live:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._write(line)
            self._last_line = now
            self._pending = None
        else:
            self._pending = line

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
        elif self._pending is not None:
            self._write(self._pending)
        self.stream.flush()

    def _write(self, line: str) -> None:
        self.stream.write(f"{self.prefix}{line}\n")
        self.stream.flush()
