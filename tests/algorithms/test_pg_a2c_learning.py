"""PG and A2C solve CartPole-v1 (mean return >= 195) in a short, bounded run."""

from __future__ import annotations

import pytest

from hpcrl.algorithms.a2c import A2CTrainer
from hpcrl.algorithms.pg import PGTrainer


def train_until(trainer, reward, max_timesteps):
    result = {}
    with trainer:
        while True:
            result = trainer.train()
            if result["episode_reward_mean"] >= reward:
                return result
            if result["timesteps_total"] >= max_timesteps:
                return result


@pytest.mark.parametrize("trainer_class", [PGTrainer, A2CTrainer])
@pytest.mark.parametrize("seed", [0, 1])
def test_solves_cartpole(trainer_class, seed):
    result = train_until(trainer_class({"seed": seed}, env="CartPole-v1"), 195, 150_000)
    assert result["episode_reward_mean"] >= 195, result
