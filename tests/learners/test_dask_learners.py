"""Data-parallel learners as Dask actors on a real Dask LocalCluster."""

from __future__ import annotations

import os
import time

import pytest
from learner_helpers import PPO_CARTPOLE, FailingPPOPolicy

from hpcrl.algorithms.ppo import PPOTrainer
from hpcrl.learners import LearnerError

pytest.importorskip("distributed")
from hpcrl.backends.dask import start_local_cluster  # noqa: E402 - needs distributed


@pytest.fixture(scope="module")
def dask_address():
    # Read by FailingPPOPolicy only; the worker processes inherit it at start.
    os.environ["FAIL_ON_LEARNER"] = "1"
    try:
        cluster = start_local_cluster(3)
    finally:
        del os.environ["FAIL_ON_LEARNER"]
    yield cluster.scheduler_address
    cluster.close()


def config(address: str) -> dict:
    return {**PPO_CARTPOLE, "backend": "dask", "dask_address": address, "num_workers": 1}


def test_ppo_with_two_learner_actors_learns_cartpole(dask_address):
    with PPOTrainer(config(dask_address), env="CartPole-v1") as trainer:
        returns = [trainer.train()["episode_reward_mean"] for _ in range(10)]
        info = trainer.train()["info"]
    assert info["num_learners"] == 2 and info["learner_backend"] == "gloo"
    assert returns[-1] > 30 and returns[-1] > 1.5 * returns[0], returns


def test_a_failing_learner_actor_is_reported_with_rank_and_traceback(dask_address):
    trainer_class = PPOTrainer.with_updates(default_policy=FailingPPOPolicy)
    trainer = trainer_class(config(dask_address), env="CartPole-v1")
    start = time.monotonic()
    try:
        with pytest.raises(LearnerError) as caught:
            trainer.train()
    finally:
        trainer.stop()
    message = str(caught.value)
    assert message.startswith("learner rank 1 of 2 on learner ") and "Dask worker" in message
    assert "ValueError('loss failure on learner 1')" in message and "in failing_loss" in message
    assert time.monotonic() - start < 40
