"""Each script in examples/ runs with small arguments, exits 0 and says what it showed."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script: str, *args: str) -> str:
    """Run ``examples/<script>`` in a fresh interpreter; return its stdout."""
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{script} {' '.join(args)} exited with {completed.returncode}\n"
        f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
    )
    return completed.stdout


@pytest.mark.parametrize(
    "script",
    [
        "custom_random_policy.py",
        "recurrent_state_counter.py",
        "extra_action_info.py",
        "custom_pg_loss.py",
        "ppo_cartpole.py",
        "offline_bc_cartpole.py",
        "dask_cartpole.py",
        "rock_paper_scissors.py",
        "multiagent_cartpole.py",
        "custom_recurrent_model.py",
    ],
)
def test_help(script, capsys, monkeypatch):
    # In-process: --help exits before anything runs, so a subprocess would only add startup.
    monkeypatch.setattr(sys, "argv", [script, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_custom_random_policy():
    out = run_example("custom_random_policy.py", "--iterations", "3", "--num-workers", "1")
    assert "iter   3" in out
    assert "OK: random policy, episode_reward_mean" in out


def test_recurrent_state_counter():
    out = run_example(
        "recurrent_state_counter.py", "--iterations", "2", "--num-workers", "2", "--num-envs", "3"
    )
    assert "bad_rows 0" in out
    assert "OK: state_in_0 == t and state_out_0 == state_in_0 + 1" in out


def test_custom_recurrent_model_learns_what_needs_memory():
    # A feed-forward policy stays near 40 on this task (test_recurrent_training.py).
    out = run_example(
        "custom_recurrent_model.py", "--stop-reward", "80", "--max-timesteps", "120000"
    )
    assert "OK: the custom GRU reached" in out


def test_extra_action_info():
    out = run_example("extra_action_info.py", "--iterations", "2")
    assert "a sampled batch has the column 'action_prob': True" in out
    assert "OK: 'action_prob' reached learn_on_batch" in out


def test_custom_pg_loss():
    out = run_example("custom_pg_loss.py", "--stop-reward", "40", "--max-iterations", "30")
    assert "MyPG reached 40.0" in out
    assert "MyPGEntropy reached 40.0" in out
    assert "entropy" in out
    assert "OK: custom policy gradient reached the target reward" in out


def test_ppo_cartpole():
    out = run_example("ppo_cartpole.py", "--stop-reward", "100", "--eval-episodes", "1")
    assert "solved: reward" in out and "greedy episode 0: return" in out


def test_offline_bc_cartpole(tmp_path):
    out = run_example(
        "offline_bc_cartpole.py",
        "--ppo-reward",
        "80",
        "--target",
        "150",
        "--out-dir",
        str(tmp_path),
    )
    assert "recorded 4 batches" in out and "datasets of policies/default_policy:" in out
    assert "OK: BC greedy return" in out
    assert list((tmp_path / "ppo_batches").glob("*.h5"))
    assert "hpcrl evaluate" in out and list((tmp_path / "bc").glob("checkpoint_*"))


def test_dask_cartpole_survives_a_killed_worker():
    pytest.importorskip("distributed")
    out = run_example("dask_cartpole.py", "--iterations", "2", "--kill-at", "1", "--num-envs", "2")
    assert "started a Dask LocalCluster" in out and "killing rollout worker 1" in out
    assert "OK: 2 iterations, 1 worker restart(s) (expected 1), 2 healthy workers" in out


def test_rock_paper_scissors_learned_policy_beats_always_same():
    # The target: a mean episode reward of at least 5 (of 10) against the
    # "always the same move" opponent within 100,000 env steps.
    out = run_example(
        "rock_paper_scissors.py", "--opponent", "always_same", "--stop-timesteps", "100000"
    )
    assert "OK: the learned policy's mean episode reward against always_same is" in out


def test_rock_paper_scissors_against_mixed_opponents_on_dask():
    pytest.importorskip("distributed")
    out = run_example(
        "rock_paper_scissors.py", "--opponent", "mixed", "--stop-reward", "-10",
        "--num-workers", "2", "--backend", "dask",
    )  # fmt: skip
    assert "OK: the learned policy's mean episode reward against mixed" in out


def test_multiagent_cartpole_shared_and_per_agent_policies():
    out = run_example("multiagent_cartpole.py", "--num-agents", "2", "--stop-reward", "60")
    assert "OK: every policy (shared) reached 60.0" in out
    out = run_example(
        "multiagent_cartpole.py", "--num-agents", "2", "--policies", "per-agent",
        "--stop-reward", "40",
    )  # fmt: skip
    assert "policy_0" in out and "policy_1" in out
    assert "OK: every policy (per-agent) reached 40.0" in out


def test_tictactoe_from_the_command_line(tmp_path):
    pytest.importorskip("pettingzoo")
    pytest.importorskip("pygame")
    completed = subprocess.run(
        [
            sys.executable, "-m", "hpcrl", "train", "-f",
            str(EXAMPLES / "tuned" / "tictactoe-ppo.yaml"),
            "--stop", '{"timesteps_total": 4000}', "--local-dir", str(tmp_path),
            "--checkpoint-at-end", "-q",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "stopped by timesteps_total" in completed.stdout
    [checkpoint] = tmp_path.glob("tictactoe-ppo/*/checkpoint_*")
    progress = next(tmp_path.glob("tictactoe-ppo/*/progress.csv")).read_text()
    assert "policy_reward_mean/player_1" in progress and "info/learner/player_2/kl" in progress


def test_pong_ppo_file_trains_on_the_cpu(tmp_path):
    pytest.importorskip("ale_py")
    completed = subprocess.run(
        [
            sys.executable, "-m", "hpcrl", "train", "-f",
            str(EXAMPLES / "tuned" / "pong-ppo.yaml"),
            "--stop", '{"training_iteration": 1}', "--local-dir", str(tmp_path), "-q",
        ],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "stopped by training_iteration after 1 iterations" in completed.stdout
    progress = next(tmp_path.glob("pong-ppo/*/progress.csv")).read_text()
    assert "info/learner/default_policy/vf_explained_var" in progress
