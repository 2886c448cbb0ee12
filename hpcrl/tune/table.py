"""The table of trials ``tune.run`` shows: redrawn in place on a terminal, plain
lines in a log file or under Slurm."""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from hpcrl.tune.progress import slurm_prefix
from hpcrl.tune.search import format_value
from hpcrl.tune.trial import ERROR, PAUSED, PENDING, RUNNING, TERMINATED, Trial

# Result keys every trial has: not offered as metric columns.
BOOKKEEPING_KEYS = {
    "training_iteration",
    "time_this_iter_s",
    "time_total_s",
    "timestamp",
    "pid",
    "hostname",
    "trial_id",
    "experiment_tag",
    "stopped_by",
    "timesteps_this_iter",
    "timesteps_per_s",
    "episodes_this_iter",
    "num_healthy_workers",
    "num_worker_restarts",
}
# Shown for Trainer trials (the RLlib columns), after the run's metric.
TRAINER_COLUMNS = ("episode_reward_mean", "timesteps_total")
MAX_METRIC_COLUMNS = 4
# Rows shown before "... and N more"; running and failed trials come first.
MAX_ROWS = 20
_ROW_ORDER = {RUNNING: 0, ERROR: 1, PAUSED: 2, PENDING: 3, TERMINATED: 4}


def metric_columns(trials: Sequence[Trial], metric: str | None) -> list[str]:
    """The result keys to show: ``metric``, then a Trainer's reward and timesteps,
    else the numbers the trials report (first seen first)."""
    columns = [metric] if metric else []
    seen: list[str] = []
    for trial in trials:
        for key, value in trial.last_result.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if numeric and key not in BOOKKEEPING_KEYS and key not in seen:
                seen.append(key)
    preferred = [key for key in TRAINER_COLUMNS if key in seen]
    for key in preferred or seen:
        if key not in columns:
            columns.append(key)
    return columns[:MAX_METRIC_COLUMNS]


def format_table(
    trials: Sequence[Trial], metric: str | None, max_rows: int = MAX_ROWS
) -> list[str]:
    """The table's lines: a header row and a row per trial (at most ``max_rows``).

    Example:
        >>> trial = Trial("f_00000", "exp", {"x": 1}, "0_x=1", "/tmp", parameters={"x": 1},
        ...               status="RUNNING", last_result={"training_iteration": 3,
        ...               "time_total_s": 1.5, "score": 0.25})
        >>> print("\\n".join(format_table([trial], "score")))
        trial    status   x  iter  time (s)  score
        f_00000  RUNNING  1     3       1.5   0.25
    """
    parameters: list[str] = []
    for trial in trials:
        parameters += [key for key in trial.parameters if key not in parameters]
    metrics = metric_columns(trials, metric)
    header = ["trial", "status", *(_short(p) for p in parameters), "iter", "time (s)", *metrics]
    shown = sorted(trials, key=lambda t: _ROW_ORDER.get(t.status, 5))[:max_rows]
    shown.sort(key=trials.index)
    rows = []
    for trial in shown:
        result = trial.last_result
        time_total = result.get("time_total_s")
        rows.append(
            [
                trial.trial_id,
                trial.status,
                *(
                    format_value(trial.parameters[p]) if p in trial.parameters else ""
                    for p in parameters
                ),
                str(result.get("training_iteration", "")),
                f"{time_total:.1f}" if isinstance(time_total, (int, float)) else "",
                *(_cell(result.get(key)) for key in metrics),
            ]
        )
    numeric_from = 2 + len(parameters)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [
            cell.rjust(width) if i >= numeric_from else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    lines = [line(header), *(line(row) for row in rows)]
    if len(trials) > len(shown):
        lines.append(f"... and {len(trials) - len(shown)} more trials")
    return lines


class TrialTable:
    """Shows the trials of a run on ``stream`` (stderr by default).

    On a terminal (``verbose >= 1``) the table is redrawn in place at most every
    second. Elsewhere, and always inside a Slurm job, each status change is a
    line (``trial X: RUNNING``) and the whole table is written every
    ``interval_s`` seconds and at the end, each line starting with
    ``slurm_prefix()``. ``verbose >= 2`` adds a line per result.

    Args:
        verbose: 0 nothing, 1 the table, 2 the table and every result.
        metric: the run's metric (its column comes first).
        stream: where to write.
        interval_s: seconds between plain tables (not on a terminal).
        environ: where to read Slurm's variables (default ``os.environ``).
    """

    def __init__(
        self,
        verbose: int = 1,
        metric: str | None = None,
        stream: TextIO | None = None,
        interval_s: float = 30.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.verbose = verbose
        self.metric = metric
        self.stream = stream if stream is not None else sys.stderr
        self.prefix = slurm_prefix(environ)
        self.live = not self.prefix and bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = 1.0 if self.live else interval_s
        self._drawn_lines = 0
        self._last_draw = -math.inf

    def trial_changed(self, trial: Trial) -> None:
        """A trial was added or changed status."""
        if self.verbose and not self.live:
            self._write([f"trial {trial.trial_id}: {trial.status}"])

    def result(self, trial: Trial, result: dict[str, Any]) -> None:
        """A trial's result (a line of its own at ``verbose >= 2``)."""
        if self.verbose < 2:
            return
        shown = ", ".join(
            f"{key}={_cell(result.get(key))}"
            for key in ["training_iteration", *metric_columns([trial], self.metric)]
        )
        self._erase()
        self._write([f"result of {trial.trial_id}: {shown}"])

    def update(self, trials: Sequence[Trial], header: str, force: bool = False) -> None:
        """Draw the table if it is due."""
        if not self.verbose or not trials:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval_s:
            return
        self._last_draw = now
        lines = [f"== {header}", *format_table(trials, self.metric)]
        if self.live:
            width = shutil.get_terminal_size().columns
            lines = [text[: width - 1] for text in lines]
            self._erase()
            self._drawn_lines = len(lines)
        self._write(lines)

    def close(self, trials: Sequence[Trial], header: str) -> None:
        """The final table."""
        self.update(trials, header, force=True)
        self._drawn_lines = 0

    def _erase(self) -> None:
        """Move up over the table drawn last and clear it (terminal only)."""
        if self.live and self._drawn_lines:
            self.stream.write(f"\033[{self._drawn_lines}F\033[J")
            self._drawn_lines = 0
            self._last_draw = -math.inf  # redraw at the next update

    def _write(self, lines: list[str]) -> None:
        prefix = "" if self.live else self.prefix
        self.stream.write("".join(f"{prefix}{text}\n" for text in lines))
        self.stream.flush()


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return format_value(value)
