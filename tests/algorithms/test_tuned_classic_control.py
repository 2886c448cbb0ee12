"""The tuned PPO and A2C files for classic control solve within their caps.

Each file stops on the mean return of the last 100 episodes reaching the env's
threshold (CartPole-v1 475, Acrobot-v1 -100, Pendulum-v1 -200) or on its
``timesteps_total`` cap; benchmarks/time_to_solve.py times them against
Stable-Baselines3. Here one seed of each must reach the threshold before the cap.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpcrl.algorithms.registry import get_trainer_class

TUNED = Path(__file__).resolve().parents[2] / "examples" / "tuned"
FILES = ["cartpole-ppo", "acrobot-ppo", "pendulum-ppo", "cartpole-a2c", "acrobot-a2c"]


@pytest.mark.parametrize("name", FILES)
def test_tuned_file_solves_before_its_cap(name):
    (experiment,) = yaml.safe_load((TUNED / f"{name}.yaml").read_text()).values()
    threshold = experiment["stop"]["episode_reward_mean"]
    cap = experiment["stop"]["timesteps_total"]
    assert experiment["config"]["metrics_smoothing_episodes"] == 100
    trainer_class = get_trainer_class(experiment["run"])
    with trainer_class({**experiment["config"], "seed": 0}, env=experiment["env"]) as trainer:
        result = {}
        while result.get("timesteps_total", 0) < cap:
            result = trainer.train()
            if result["episode_reward_mean"] >= threshold:
                break
    assert result["episode_reward_mean"] >= threshold, (
        f"{result['episode_reward_mean']:.1f} after {result['timesteps_total']:,} steps"
    )
