"""BC: behaviour cloning from batches a PPO policy recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from hpcrl.algorithms.bc import BCTrainer
from hpcrl.algorithms.ppo import PPOTorchPolicy, PPOTrainer
from hpcrl.cli import main
from hpcrl.evaluation.policy_evaluation import evaluate_policy
from hpcrl.evaluation.rollout_worker import RolloutWorker

TUNED = Path(__file__).resolve().parents[2] / "examples" / "tuned" / "cartpole-ppo.yaml"
# The tuned PPO settings of the examples (64 envs, 2,048-step batches).
PPO_CONFIG = dict(next(iter(yaml.safe_load(TUNED.read_text()).values()))["config"], seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def record_ppo_batches(directory, reward: float, batches: int) -> float:
    """Train PPO to ``reward``, record ``batches`` batches of its (sampled) actions;
    returns the PPO policy's greedy mean return."""
    with PPOTrainer(PPO_CONFIG, env="CartPole-v1") as ppo:
        result = {"episode_reward_mean": 0.0, "timesteps_total": 0}
        while result["episode_reward_mean"] < reward and result["timesteps_total"] < 100_000:
            result = ppo.train()
        weights = ppo.get_weights()
        greedy = evaluate_policy(ppo.get_policy(), "CartPole-v1", 10, seed=1)
    recorder = RolloutWorker(
        "CartPole-v1", PPOTorchPolicy, {**PPO_CONFIG, "output": str(directory), "seed": 1}
    )
    recorder.set_weights(weights)
    for _ in range(batches):
        recorder.sample()
    recorder.stop()
    return greedy["episode_reward_mean"]


@pytest.mark.parametrize(
    "ppo_reward, bc_target",
    [
        pytest.param(80, 150, id="quick"),
        pytest.param(450, 475, id="solved", marks=pytest.mark.slow),
    ],
)
def test_bc_learns_cartpole_from_recorded_ppo_batches(tmp_path, ppo_reward, bc_target):
    expert = record_ppo_batches(tmp_path, ppo_reward, batches=4)
    assert expert >= bc_target, f"the recorded PPO policy itself reaches only {expert}"
    config = {"input": str(tmp_path), "seed": 0, "lr": 0.003, "model": PPO_CONFIG["model"]}
    with BCTrainer(config, env="CartPole-v1") as bc:
        results = [bc.train()]
        while results[-1]["evaluation"]["episode_reward_mean"] < bc_target and len(results) < 30:
            results.append(bc.train())
    rewards = [r["evaluation"]["episode_reward_mean"] for r in results]
    losses = [r["info"]["learner"]["default_policy"]["policy_loss"] for r in results]
    assert rewards[-1] >= bc_target, rewards
    assert losses[-1] < losses[0]
    assert results[-1]["timesteps_total"] >= 2048 * len(results)  # recorded rows read
    assert np.isnan(results[-1]["episode_reward_mean"])  # BC plays no episodes itself


def test_bc_needs_input():
    with pytest.raises(ValueError, match=r"BC learns from recorded batches: set config\['input'\]"):
        BCTrainer({}, env="CartPole-v1")


def test_hpcrl_train_bc_offline_without_env(tmp_path, capsys):
    recorder = RolloutWorker(
        "CartPole-v1",
        PPOTorchPolicy,
        {"output": str(tmp_path / "data"), "rollout_fragment_length": 50, "num_envs_per_worker": 4},
    )
    recorder.sample()
    recorder.stop()
    config = json.dumps({"input": str(tmp_path / "data"), "train_batch_size": 400})
    code = main(
        [
            "train",
            "--run",
            "BC",
            "--config",
            config,
            "--stop",
            '{"training_iteration": 2}',
            "--local-dir",
            str(tmp_path / "results"),
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "stopped by training_iteration after 2 iterations" in out
    assert "episode_reward_mean nan" in out  # BC plays no episodes; no env to evaluate on
    [trial] = (tmp_path / "results" / "default").iterdir()
    assert trial.name.startswith("BC_offline_")
