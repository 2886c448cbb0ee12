"""PG and A2C solve CartPole-v1 (mean return >= 195) in a short, bounded run."""

from __future__ import annotations

import pytest
from training_helpers import train_until

from hpcrl.algorithms.a2c import A2CTrainer
from hpcrl.algorithms.pg import PGTrainer


@pytest.mark.parametrize("trainer_class", [PGTrainer, A2CTrainer])
@pytest.mark.parametrize("seed", [0, 1])
def test_solves_cartpole(trainer_class, seed):
    with trainer_class({"seed": seed}, env="CartPole-v1") as trainer:
        result = train_until(trainer, 195, 150_000)
    assert result["episode_reward_mean"] >= 195, result
