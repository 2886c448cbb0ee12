"""benchmarks/time_to_solve.py: tiny runs of its children, its GAE, its CleanRL PPO learning."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPT = BENCHMARKS / "time_to_solve.py"


@pytest.fixture
def time_to_solve(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import time_to_solve

    return time_to_solve


# The SB3 side needs the bench extra (peers stay out of the test extra).
needs_sb3 = pytest.mark.skipif(
    importlib.util.find_spec("stable_baselines3") is None,
    reason="needs stable-baselines3: pip install -e '.[bench]'",
)


def run_script(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@needs_sb3
def test_sb3_and_cleanrl_children_run_a_task_and_the_summary_lists_them():
    out = run_script(
        "--tasks", "cartpole-ppo", "--systems", "sb3", "cleanrl", "--seeds", "0",
        "--sb3-budget", "256", "--cleanrl-budget", "512", "--markdown",
    ).stdout  # fmt: skip
    rows = [line.split()[:4] for line in out.splitlines()]
    assert ["sb3", "0", "no", "256"] in rows, out
    assert ["cleanrl", "0", "no", "512"] in rows, out
    assert "| cartpole-ppo | - | " in out, out


def test_cleanrl_child_for_continuous_actions_prints_its_json_line():
    out = run_script("--child", "cleanrl", "--task", "pendulum-ppo", "--cleanrl-budget", "2048")
    assert json.loads(out.stdout.splitlines()[-1]) == {"solved": False, "env_steps": 2048}


@needs_sb3
def test_every_zoo_entry_builds_its_sb3_model(time_to_solve):
    for task in time_to_solve.TASKS.values():
        assert time_to_solve.sb3_child(task, seed=0, budget=0) == {
            "solved": False,
            "env_steps": 0,
        }


def test_generalized_advantages_against_a_hand_computed_reference(time_to_solve):
    # Three steps of one env; the observation of step 2 begins a new episode, so
    # step 1 does not bootstrap. gamma 0.9, lambda 0.8:
    #   A2 = 3 + 0.9 * 4 - 1                  = 5.6
    #   A1 = 2 - 0.25                         = 1.75
    #   A0 = 1 + 0.9 * 0.25 - 0.5 + 0.72 * A1 = 1.985
    advantages = time_to_solve.generalized_advantages(
        rewards=torch.tensor([[1.0], [2.0], [3.0]]),
        values=torch.tensor([[0.5], [0.25], [1.0]]),
        starts=torch.tensor([[0.0], [0.0], [1.0]]),
        next_value=torch.tensor([4.0]),
        next_start=torch.tensor([0.0]),
        gamma=0.9,
        gae_lambda=0.8,
    )
    assert torch.allclose(advantages, torch.tensor([[1.985], [1.75], [5.6]]))


def test_cleanrl_ppo_learns_cartpole_and_stops_when_solved(time_to_solve):
    """Random play averages ~22 on CartPole; 60 takes the PPO about 10,000 steps."""
    task = dataclasses.replace(time_to_solve.TASKS["cartpole-ppo"], solved_return=60.0)
    result = time_to_solve.cleanrl_child(task, seed=0, budget=40_960)
    assert result["solved"], result
    assert result["env_steps"] < 40_960
