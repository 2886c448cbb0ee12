"""The hpcrl command: parsing, rejecting bad input, results on disk."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcrl.cli import main

SMALL = (
    '{"model": {"fcnet_hiddens": [8]}, "train_batch_size": 200, '
    '"rollout_fragment_length": 25, "num_envs_per_worker": 1}'
)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpcrl", *args], capture_output=True, text=True, cwd=cwd
    )


def trial_dir(root: Path) -> Path:
    [path] = [p for p in root.glob("*/*") if p.is_dir()]
    return path


def test_train_writes_results(tmp_path):
    out = run_cli(
        "train",
        "--run",
        "PG",
        "--env",
        "CartPole-v1",
        "--config",
        SMALL,
        "--stop",
        '{"timesteps_total": 600}',
        "--local-dir",
        str(tmp_path),
        "--seed",
        "1",
    )
    assert out.returncode == 0, out.stderr
    assert "done: stopped by timesteps_total after 3 iterations" in out.stdout
    trial = trial_dir(tmp_path)
    assert trial.parent.name == "default" and trial.name.startswith("PG_CartPole-v1_")
    params = json.loads((trial / "params.json").read_text())
    assert params["seed"] == 1 and params["model"]["fcnet_hiddens"] == [8]
    lines = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
    assert [r["training_iteration"] for r in lines] == [1, 2, 3]
    assert {"episode_reward_mean", "timesteps_total", "time_total_s", "info"} <= set(lines[0])
    with open(trial / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and "info/learner/default_policy/policy_loss" in rows[0]
    assert list(trial.glob("events.out.tfevents.*"))
    # not a terminal: plain status lines on stderr
    assert "iter 3 | 600 steps" in out.stderr and "\r" not in out.stderr


def test_experiment_file_and_flags_override_it(tmp_path):
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "my-exp:\n  run: A2C\n  env: CartPole-v1\n  stop: {timesteps_total: 100000}\n"
        "  config: {num_envs_per_worker: 2, rollout_fragment_length: 10, train_batch_size: 20,"
        " model: {fcnet_hiddens: [8]}}\n"
    )
    code = main(
        [
            "train",
            "-f",
            str(spec),
            "--stop",
            '{"timesteps_total": 40}',
            "--run",
            "PG",
            "--config",
            '{"train_batch_size": 40}',
            "--local-dir",
            str(tmp_path / "r"),
            "-q",
        ]
    )
    assert code == 0
    trial = trial_dir(tmp_path / "r")
    assert trial.parent.name == "my-exp" and trial.name.startswith("PG_")
    params = json.loads((trial / "params.json").read_text())
    assert params["train_batch_size"] == 40 and params["num_envs_per_worker"] == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--run", "PPX", "--env", "CartPole-v1"], "unknown algorithm 'PPX'; did you mean 'PPO'?"),
        (["--run", "PPO", "--env", "CartPole-v9"], "unknown env 'CartPole-v9'"),
        (["--run", "PPO", "--env", "CartPole-v1", "--config", "{lr: 1}"], "not valid JSON"),
        (["--run", "PPO", "--env", "CartPole-v1", "--config", "[1]"], "must be a JSON object"),
        (
            ["--run", "PPO", "--env", "CartPole-v1", "--config", '{"lamda": 1}'],
            "did you mean 'lambda'?",
        ),
        (
            ["--run", "PPO", "--env", "CartPole-v1", "--stop", '{"reward_mean": 1}'],
            "unknown stop key 'reward_mean'",
        ),
        (["--run", "PPO", "--env", "nosuchmodule:Env-v0"], "cannot import module"),
        (["--env", "CartPole-v1"], "no algorithm"),
        (
            ["--run", "PG", "--env", "CartPole-v1", "--backend", "mpi", "--dask-address", "x"],
            "--dask-address joins a Dask cluster but --backend is 'mpi'",
        ),
        (
            ["--run", "PG", "--env", "CartPole-v1", "--dask-address", "tcp://127.0.0.1:9"]
            + ["--config", '{"worker_timeout_s": 1}'],
            "could not connect to the Dask scheduler at 'tcp://127.0.0.1:9'",
        ),
        (["-f", "/nonexistent.yaml"], "cannot read experiment file"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, capsys):
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("hpcrl: error:") and "Traceback" not in err


def test_module_env_form_imports_module(tmp_path):
    (tmp_path / "my_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyCartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv',"
        " max_episode_steps=50)\n"
    )
    out = run_cli(
        "train",
        "--run",
        "PG",
        "--env",
        "my_envs:MyCartPole-v0",
        "--config",
        SMALL,
        "--stop",
        '{"training_iteration": 1}',
        "--local-dir",
        str(tmp_path / "r"),
        "-q",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr


def test_help_lists_flags():
    out = run_cli("train", "--help")
    for flag in (
        "--run",
        "--env",
        "--config",
        "--stop",
        "-f",
        "--num-workers",
        "--backend",
        "--dask-address",
        "--local-dir",
        "--seed",
        "-v",
    ):
        assert flag in out.stdout


def test_help_names_every_registered_algorithm():
    from hpcrl.algorithms.registry import ALGORITHMS

    out = run_cli("train", "--help")
    for name in ALGORITHMS:
        run_help = out.stdout.split("\n  --run RUN", 1)[1].split("\n  --env", 1)[0]
        assert name in run_help, name


def test_evaluate_plays_a_checkpoint(tmp_path, capsys):
    from hpcrl.algorithms.pg import PGTrainer

    with PGTrainer({"model": {"fcnet_hiddens": [8]}, "seed": 0}, env="CartPole-v1") as trainer:
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
    assert main(["evaluate", checkpoint, "--episodes", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "episode 2: return" in out and "mean return" in out and "over 3 episodes" in out
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "is not a checkpoint directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("algo", "env", "config"),
    [
        ("DQN", "CartPole-v1", {"learning_starts": 50, "timesteps_per_iteration": 100}),
        ("SAC", "Pendulum-v1", {"learning_starts": 50, "timesteps_per_iteration": 100}),
        ("TD3", "Pendulum-v1", {"learning_starts": 50, "timesteps_per_iteration": 100}),
    ],
)
def test_evaluate_plays_replay_algorithms_without_exploration(algo, env, config, tmp_path, capsys):
    from hpcrl.algorithms.registry import get_trainer_class

    with get_trainer_class(algo)({**config, "seed": 0}, env=env) as trainer:
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
    assert main(["evaluate", checkpoint, "--episodes", "2", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert "over 2 episodes" in first
    # greedy actions and seeded envs: the same episodes again
    assert main(["evaluate", checkpoint, "--episodes", "2", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first
