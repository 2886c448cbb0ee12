from __future__ import annotations

import io
import json
import struct

import numpy as np
import torch

from hpcrl.tune.logger import ResultLogger, flatten_result
from hpcrl.tune.progress import StatusReporter, format_status, stop_progress
from hpcrl.tune.tensorboard import crc32c, read_records

RESULT = {
    "training_iteration": 2,
    "timesteps_total": 4000,
    "episode_reward_mean": 120.5,
    "timesteps_per_s": 1500.0,
    "time_total_s": 3.2,
    "info": {"learner": {"default_policy": {"kl": 0.01}}},
}


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_flatten_result():
    assert flatten_result(RESULT)["info/learner/default_policy/kl"] == 0.01


def test_result_logger_writes_json_csv_and_valid_event_records(tmp_path):
    logger = ResultLogger(str(tmp_path))
    logger.log(RESULT)
    logger.log({**RESULT, "training_iteration": 3, "episode_reward_mean": float("nan")})
    logger.close()
    lines = (tmp_path / "result.json").read_text().splitlines()
    assert json.loads(lines[1])["episode_reward_mean"] is None  # NaN written as null
    assert (tmp_path / "progress.csv").read_text().count("\n") == 3
    [events] = tmp_path.glob("events.out.tfevents.*")
    records = read_records(str(events))  # verifies both checksums of every record
    assert len(records) == 3
    assert b"brain.Event:2" in records[0]
    assert b"hpcrl/episode_reward_mean" in records[1]
    # the simple_value of the tag follows it as field 2, fixed32
    tag = b"hpcrl/episode_reward_mean"
    start = records[1].index(tag) + len(tag)
    assert records[1][start] == (2 << 3) | 5
    assert struct.unpack("<f", records[1][start + 1 : start + 5])[0] == 120.5


def test_result_logger_takes_numpy_arrays_and_scalar_tensors(tmp_path):
    logger = ResultLogger(str(tmp_path))
    logger.log({**RESULT, "hist": np.arange(3), "loss": torch.tensor(0.5), "gap": np.nan})
    logger.close()
    [line] = (tmp_path / "result.json").read_text().splitlines()
    record = json.loads(line)
    assert record["hist"] == [0, 1, 2] and record["loss"] == 0.5 and record["gap"] is None


def test_status_line_and_progress_bar():
    stop = {"episode_reward_mean": 241.0}
    assert stop_progress(RESULT, stop) == 0.5
    line = format_status(RESULT, stop)
    assert "iter 2" in line and "4,000 steps" in line and "reward 120.5" in line
    assert "[##########----------]  50% to episode_reward_mean 241" in line


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_live_line_on_a_terminal_plain_lines_elsewhere():
    terminal = Terminal()
    reporter = StatusReporter({"timesteps_total": 8000}, stream=terminal, environ={})
    reporter.report(RESULT)
    reporter.report({**RESULT, "training_iteration": 3})
    reporter.close()
    assert terminal.getvalue().count("\r") == 2 and terminal.getvalue().endswith("\n")

    log = io.StringIO()
    reporter = StatusReporter(
        {"timesteps_total": 8000}, stream=log, interval_s=3600, prefix="[job 7] "
    )
    for i in range(1, 5):
        reporter.report({**RESULT, "training_iteration": i})
    reporter.close()
    lines = log.getvalue().splitlines()
    # the first line, then (throttled) only the last one
    assert [line.split(" | ")[0] for line in lines] == ["[job 7] iter 1", "[job 7] iter 4"]


def test_plain_lines_with_job_and_task_ids_under_slurm_even_on_a_terminal():
    terminal = Terminal()
    slurm = {"SLURM_JOB_ID": "12", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0"}
    reporter = StatusReporter({}, stream=terminal, environ=slurm)
    reporter.report(RESULT)
    reporter.close()
    assert "\r" not in terminal.getvalue()
    assert terminal.getvalue().startswith("[slurm job 12.0 task 0] iter ")
