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
