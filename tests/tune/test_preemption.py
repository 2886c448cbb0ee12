"""Preemption and resume: real signals to a real `hpcrl train`, then --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcrl.algorithms.pg import PGTrainer
from hpcrl.cli import main
from hpcrl.tune.experiment import Experiment
from hpcrl.tune.preemption import EXIT_PREEMPTED, TrialPreempted

CONFIG = {
    "model": {"fcnet_hiddens": [8]},
    "num_envs_per_worker": 4,
    "rollout_fragment_length": 25,
    "train_batch_size": 100,
    "timesteps_per_iteration": 1500,
    "seed": 3,
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_args(local_dir: Path, name: str, iterations: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hpcrl",
        "train",
        "--run",
        "PG",
        "--env",
        "CartPole-v1",
        "--config",
        json.dumps(CONFIG),
        "--stop",
        json.dumps({"training_iteration": iterations}),
        "--local-dir",
        str(local_dir),
        "--name",
        name,
        "--checkpoint-at-end",
        "-q",
    ]


def iterations_logged(trial: Path) -> list[int]:
    path = trial / "result.json"
    if not path.exists():
        return []
    return [json.loads(line)["training_iteration"] for line in path.read_text().splitlines()]


def final_weights(trial: Path) -> dict[str, np.ndarray]:
    [checkpoint] = sorted(trial.glob("checkpoint_*"))[-1:]
    path = checkpoint / "policies" / "default_policy" / "policy_state.h5"
    with h5py.File(path, "r") as f:
        return {name: f["weights"][name][...] for name in f["weights"]}


def test_sigterm_checkpoints_exits_75_and_resume_finishes(tmp_path, capsys):
    args = train_args(tmp_path, "exp", iterations=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 120
    trial = None
    while time.monotonic() < deadline:
        trials = list((tmp_path / "exp").glob("PG_CartPole-v1_*"))
        if trials and len(iterations_logged(trials[0])) >= 2:
            trial = trials[0]
            break
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    assert trial is not None, "no two iterations within 120 s"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, out + err
    assert "preempted by SIGTERM after iteration" in err
    stopped_at = iterations_logged(trial)
    assert 2 <= len(stopped_at) < 8 and stopped_at == list(range(1, len(stopped_at) + 1))
    assert [p.name for p in trial.glob("checkpoint_*")] == [f"checkpoint_{len(stopped_at):06d}"]
    assert json.loads((trial / "trial_state.json").read_text())["status"] == "preempted"

    resumed = subprocess.run(
        [*args, "--resume"], capture_output=True, text=True, env=env, timeout=180
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"from {trial / f'checkpoint_{len(stopped_at):06d}'}" in resumed.stderr
    assert "done: stopped by training_iteration after 8 iterations" in resumed.stdout
    lines = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in lines] == list(range(1, 9))  # none twice
    steps = [r["timesteps_total"] for r in lines]
    assert steps == sorted(steps) and len(set(steps)) == 8
    assert len((trial / "progress.csv").read_text().splitlines()) == 1 + 8

    assert main([*args[3:], "--resume"]) == 0  # in-process: the trial is finished
    assert "already finished, nothing to resume" in capsys.readouterr().out

    # The interrupted run ends with the weights of a run that never stopped.
    with PGTrainer(CONFIG, env="CartPole-v1") as trainer:
        straight = [trainer.train() for _ in range(8)]
        expected = trainer.get_weights()["default_policy"]
    got = final_weights(trial)
    assert set(expected) == set(got)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert [r["episode_reward_mean"] for r in straight] == [r["episode_reward_mean"] for r in lines]


def make_experiment(tmp_path: Path, config: dict | None = None, **kwargs) -> Experiment:
    return Experiment(
        "PG",
        {**CONFIG, "env": "CartPole-v1", "timesteps_per_iteration": 0, **(config or {})},
        {"training_iteration": 4},
        name="exp",
        local_dir=str(tmp_path),
        verbose=0,
        **kwargs,
    )


def test_sigusr1_preempts_and_resume_continues(tmp_path):
    def signal_at_two(result):
        if result["training_iteration"] == 2:
            os.kill(os.getpid(), signal.SIGUSR1)

    experiment = make_experiment(tmp_path, on_result=signal_at_two, checkpoint_freq=3)
    with pytest.raises(TrialPreempted, match="SIGUSR1 after iteration 2") as info:
        experiment.run()
    assert info.value.checkpoint.endswith("checkpoint_000002")
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers restored
    with pytest.warns(UserWarning, match=r"differs from its params.json in \['lr'\]"):
        make_experiment(tmp_path, config={"lr": 0.5}, resume=True).trainer.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same config: no warning
        resumed = make_experiment(tmp_path, resume=True, checkpoint_freq=3)
    assert resumed.trial_dir == experiment.trial_dir and resumed.trainer.iteration == 2
    assert resumed.run()["training_iteration"] == 4
    trial = Path(experiment.trial_dir)
    assert iterations_logged(trial) == [1, 2, 3, 4]
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == [
        "checkpoint_000002",
        "checkpoint_000003",
    ]
    finished = make_experiment(tmp_path, resume=True)
    assert finished.trainer is None and finished.finished["status"] == "finished"
    assert finished.run()["stopped_by"] == "training_iteration"


def test_trial_names_and_resuming_without_a_checkpoint(tmp_path):
    first = make_experiment(tmp_path, trial_name="trial0")
    first.trainer.stop()
    Path(first.trial_dir).mkdir(parents=True)
    (Path(first.trial_dir) / "result.json").write_text('{"training_iteration": 1}\n')
    with pytest.raises(ValueError, match="trial0' exists: add --resume"):
        make_experiment(tmp_path, trial_name="trial0")
    resumed = make_experiment(tmp_path, trial_name="trial0", resume=True)
    assert resumed.resumed and resumed.resumed_from is None  # from the start
    resumed.run()
    assert iterations_logged(Path(resumed.trial_dir)) == [1, 2, 3, 4]
    fresh = make_experiment(tmp_path / "other", resume=True)  # nothing to resume: a new trial
    assert not fresh.resumed
    fresh.trainer.stop()


def test_evaluation_stop_key_counts_only_in_evaluated_iterations(tmp_path):
    stop = {"evaluation/episode_reward_mean": 1.0, "training_iteration": 4}
    with pytest.raises(ValueError, match="set config 'evaluation_interval'"):
        Experiment("PG", {**CONFIG, "env": "CartPole-v1"}, stop, local_dir=str(tmp_path), verbose=0)
    experiment = Experiment(
        "PG",
        {**CONFIG, "env": "CartPole-v1", "evaluation_interval": 2, "evaluation_num_episodes": 1},
        stop,
        local_dir=str(tmp_path),
        verbose=0,
    )
    result = experiment.run()
    assert result["training_iteration"] == 2
    assert result["stopped_by"] == "evaluation/episode_reward_mean"
