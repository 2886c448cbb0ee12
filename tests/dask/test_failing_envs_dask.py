"""Failing envs in Dask workers (see tests/evaluation/test_failing_envs.py): the
error naming the worker, sub-env, env and step reaches the driver intact; with
recreate_failed_envs the restart is counted in the training results."""

from __future__ import annotations

import uuid

import pytest
from flaky_env import LENGTH, FlakyEnv

from hpcrl.algorithms.pg import PGTrainer
from hpcrl.backends import RemoteError
from hpcrl.env.registry import register_env

pytest.importorskip("distributed")


def trainer_on(dask_cluster, **extra) -> PGTrainer:
    register_env("flaky", FlakyEnv)
    config = {
        "backend": "dask",
        "dask_address": dask_cluster.scheduler_address,
        "num_workers": 2,
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 30,
        "train_batch_size": 120,
        "vectorization_mode": "sync",
        "model": {"fcnet_hiddens": [8]},
        "env_config": {"run": uuid.uuid4().hex, "fail_worker": 2},
        **extra,
    }
    return PGTrainer(config, env="flaky")


def test_the_env_error_reaches_the_driver_intact(dask_cluster):
    trainer = trainer_on(dask_cluster)
    try:
        with pytest.raises(RemoteError) as caught:
            trainer.train()
    finally:
        trainer.stop()
    message = str(caught.value)
    assert "rollout worker 2 (Dask worker" in message  # where the backend ran it
    assert (
        "rollout worker 2: sub-env 1 of env 'flaky' raised RuntimeError('flaky env: step "
        "number 16 fails') in step() after 5 steps of its episode; set recreate_failed_envs"
    ) in message
    # the env's own traceback, as the worker formatted it
    assert "--- the env's traceback ---" in message and "flaky_env.py" in message
    assert "RuntimeError: flaky env: step number 16 fails" in message


def test_a_rebuilt_env_is_counted_in_the_results(dask_cluster):
    trainer = trainer_on(dask_cluster, recreate_failed_envs=True)
    try:
        result = trainer.train()
    finally:
        trainer.stop()
    assert result["num_env_restarts"] == 1 and result["num_worker_restarts"] == 0
    assert result["episode_reward_min"] == result["episode_reward_max"] == LENGTH
