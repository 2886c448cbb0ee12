"""The learner flags of ``hpcrl train``."""

from __future__ import annotations

import pytest

from hpcrl.cli import build_parser, resolve_train_args


def test_learner_flags_become_config_keys():
    args = build_parser().parse_args(
        ["train", "--run", "PPO", "--env", "CartPole-v1", "--num-learners", "4",
         "--num-gpus-per-learner", "1", "--config", '{"num_learners": 2}']
    )  # fmt: skip
    config = resolve_train_args(args)["config"]
    assert config["num_learners"] == 4 and config["num_gpus_per_learner"] == 1


def test_learner_flags_left_out_leave_the_config_alone():
    args = build_parser().parse_args(["train", "--run", "PPO", "--env", "CartPole-v1"])
    config = resolve_train_args(args)["config"]
    assert "num_learners" not in config and "num_gpus_per_learner" not in config


def test_more_than_one_gpu_per_learner_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["train", "--run", "PPO", "--env", "CartPole-v1", "--num-gpus-per-learner", "2"]
        )
    assert "invalid choice: 2" in capsys.readouterr().err
