"""`hpcrl train -f` with several experiments (RLlib's YAML format) runs one hpcrl.tune run."""

from __future__ import annotations

import json
import subprocess
import sys

from hpcrl.cli import main

EXPERIMENTS = """\
pg-grid:
  run: PG
  env: CartPole-v1
  stop: {timesteps_total: 100}
  config:
    lr: {grid_search: [0.01, 0.001]}
    model: {fcnet_hiddens: [8]}
    train_batch_size: 100
    rollout_fragment_length: 50
    num_envs_per_worker: 1
a2c-one:
  run: A2C
  env: CartPole-v1
  stop: {timesteps_total: 40}
  checkpoint_at_end: true
  config:
    num_envs_per_worker: 2
    rollout_fragment_length: 10
    train_batch_size: 20
    model: {fcnet_hiddens: [8]}
"""


def train(*args):
    return subprocess.run(
        [sys.executable, "-m", "hpcrl", "train", *args], capture_output=True, text=True
    )


def test_a_file_of_experiments_runs_them_all_and_resumes_without_rerunning(tmp_path):
    spec = tmp_path / "experiments.yaml"
    spec.write_text(EXPERIMENTS)
    args = ["-f", str(spec), "--local-dir", str(tmp_path / "r"), "--max-concurrent-trials", "2"]
    out = train(*args, "--seed", "1")
    assert out.returncode == 0, out.stderr
    done = [line for line in out.stdout.splitlines() if line.startswith("done: ")]
    assert len(done) == 3 and all("stopped by timesteps_total" in line for line in done)
    assert "trial PG_CartPole-v1_00000: RUNNING" in out.stderr  # plain lines: not a terminal
    state = json.loads((tmp_path / "r" / "pg-grid" / "experiment_state.json").read_text())
    trials = state["trials"]
    assert sorted(t["config"]["lr"] for t in trials) == [0.001, 0.01]
    assert all(t["config"]["seed"] == 1 and t["status"] == "TERMINATED" for t in trials)
    assert [t["tag"] for t in trials] == ["0_lr=0.01", "1_lr=0.001"]
    [a2c] = json.loads((tmp_path / "r" / "a2c-one" / "experiment_state.json").read_text())["trials"]
    assert a2c["trial_id"] == "A2C_CartPole-v1_00002" and len(a2c["checkpoints"]) == 1

    again = train(*args, "--seed", "1", "--resume")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("done: ") == 3
    assert "RUNNING" not in again.stderr  # finished trials are not run again


def test_flags_that_name_one_trial_or_experiment_are_errors_with_several(tmp_path, capsys):
    spec = tmp_path / "experiments.yaml"
    spec.write_text(EXPERIMENTS)
    assert main(["train", "-f", str(spec), "--trial-name", "t"]) == 2
    assert "--trial-name names the single trial" in capsys.readouterr().err
    assert main(["train", "-f", str(spec), "--name", "n"]) == 2
    assert "the file has 2" in capsys.readouterr().err
    spec.write_text("x:\n  run: PG\n  num_sample: 2\n")
    assert main(["train", "-f", str(spec)]) == 2
    assert "unknown setting(s) ['num_sample']" in capsys.readouterr().err
