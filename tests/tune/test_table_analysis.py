"""The table of trials (live on a terminal, plain lines elsewhere) and the analysis."""

from __future__ import annotations

import io
import json

import pytest

from hpcrl.tune.analysis import ExperimentAnalysis
from hpcrl.tune.table import TrialTable, format_table, metric_columns
from hpcrl.tune.trial import Trial


class Terminal(io.StringIO):
    def isatty(self):
        return True


def make_trial(index, status="RUNNING", **result):
    return Trial(
        f"PPO_CartPole-v1_{index:05d}",
        "exp",
        {"lr": 0.1 * index},
        f"{index}_lr={0.1 * index:.4g}",
        "/nowhere",
        parameters={"lr": 0.1 * index},
        status=status,
        last_result={"training_iteration": 2, "time_total_s": 3.0, **result},
    )


def test_the_table_shows_parameters_and_the_trainer_columns():
    trials = [make_trial(1, episode_reward_mean=20.5, timesteps_total=4000, loss=1.0)]
    assert metric_columns(trials, None) == ["episode_reward_mean", "timesteps_total"]
    assert metric_columns(trials, "loss") == ["loss", "episode_reward_mean", "timesteps_total"]
    header, row = format_table(trials, None)
    assert header.split() == [
        "trial", "status", "lr", "iter", "time", "(s)", "episode_reward_mean", "timesteps_total",
    ]  # fmt: skip
    assert row.split() == ["PPO_CartPole-v1_00001", "RUNNING", "0.1", "2", "3.0", "20.5", "4000"]


def test_many_trials_show_the_running_ones_first_then_a_count():
    trials = [make_trial(i, "TERMINATED") for i in range(30)] + [make_trial(30)]
    lines = format_table(trials, None, max_rows=5)
    assert "PPO_CartPole-v1_00030  RUNNING" in lines[-2] and lines[-1] == "... and 26 more trials"


def test_on_a_terminal_the_table_is_redrawn_in_place():
    terminal = Terminal()
    table = TrialTable(verbose=2, stream=terminal, environ={})
    trials = [make_trial(1, score=1.0)]
    table.update(trials, "1 RUNNING")
    table.trial_changed(trials[0])  # no status lines: the table shows it
    table.result(trials[0], trials[0].last_result)
    table.update(trials, "1 RUNNING")
    text = terminal.getvalue()
    assert text.startswith("== 1 RUNNING\n") and "trial " not in text.split("\n")[0]
    assert text.count("\033[3F\033[J") == 1  # moved up over the 3 lines drawn, cleared them
    assert "result of PPO_CartPole-v1_00001: training_iteration=2, score=1" in text


def test_under_slurm_lines_are_plain_and_prefixed():
    stream = Terminal()  # even a terminal (srun --pty) gets plain lines
    environ = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0"}
    table = TrialTable(verbose=1, stream=stream, interval_s=1e9, environ=environ)
    trial = make_trial(1)
    table.trial_changed(trial)
    table.update([trial], "1 RUNNING")
    table.update([trial], "1 RUNNING")  # not due yet
    table.close([trial], "1 TERMINATED")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[slurm job 7 task 0] trial PPO_CartPole-v1_00001: RUNNING"
    assert all(line.startswith("[slurm job 7 task 0] ") for line in lines)
    assert sum(line.endswith("== 1 RUNNING") for line in lines) == 1
    assert lines[-3].endswith("== 1 TERMINATED") and "\033" not in stream.getvalue()


def test_verbose_zero_shows_nothing():
    stream = io.StringIO()
    table = TrialTable(verbose=0, stream=stream)
    trial = make_trial(1)
    table.trial_changed(trial)
    table.result(trial, trial.last_result)
    table.close([trial], "x")
    assert stream.getvalue() == ""


def write_results(trial, scores):
    trial.logdir.mkdir(parents=True)
    lines = [json.dumps({"training_iteration": i + 1, "score": s}) for i, s in enumerate(scores)]
    (trial.logdir / "result.json").write_text("\n".join(lines) + "\n")
    trial.last_result = {"training_iteration": len(scores), "score": scores[-1]}
    trial.checkpoints = [
        {"path": str(trial.logdir / f"checkpoint_{i:06d}"), "iteration": i}
        for i in range(1, len(scores) + 1)
    ]


def test_best_trial_config_and_checkpoint_by_last_or_any_result(tmp_path):
    early, late = (Trial(n, "e", {"n": n}, n, tmp_path / n) for n in ("early", "late"))
    write_results(early, [1.0, 9.0, 2.0])  # best at iteration 2, last 2.0
    write_results(late, [1.0, 3.0, 4.0])
    analysis = ExperimentAnalysis([early, late], "score", "max")
    assert analysis.get_best_trial().trial_id == "late"
    assert analysis.get_best_trial(scope="all").trial_id == "early"
    assert analysis.get_best_config(mode="min") == {"n": "early"}  # lowest last score (2.0)
    assert analysis.get_best_checkpoint().endswith("early/checkpoint_000002")
    assert analysis.get_best_checkpoint(late).endswith("late/checkpoint_000003")
    assert analysis.results["early"]["score"] == 2.0
    rows = analysis.dataframe(metric="score", mode="max")
    rows = rows if isinstance(rows, list) else rows.to_dict("records")
    assert [row["score"] for row in rows] == [9.0, 4.0] and rows[0]["config/n"] == "early"
    with pytest.raises(ValueError, match="give a metric and a mode"):
        ExperimentAnalysis([early]).get_best_trial()
