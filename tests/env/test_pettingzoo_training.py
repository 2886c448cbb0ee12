"""PettingZoo envs trained with PPO: a turn-based classic game with action masks (no
illegal action, ever), and a Parallel env from the command line, then evaluated."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
pytest.importorskip("pygame")  # PettingZoo's classic games import it

from hpcrl.algorithms.ppo import PPOTrainer  # noqa: E402
from hpcrl.env.registry import register_env  # noqa: E402
from hpcrl.models.preprocessors import get_preprocessor  # noqa: E402
from hpcrl.policy.sample_batch import SampleBatch  # noqa: E402


def tictactoe(config):
    from pettingzoo.classic.tictactoe import tictactoe

    return tictactoe.env()


register_env("tictactoe", tictactoe)


def test_tictactoe_shared_policy_never_plays_an_illegal_move():
    config = {
        "env": "tictactoe",
        "num_envs_per_worker": 4,
        "rollout_fragment_length": 25,
        "train_batch_size": 200,
        "sgd_minibatch_size": 100,
        "num_sgd_iter": 2,
        "model": {"fcnet_hiddens": [32]},
        "seed": 0,
    }
    with PPOTrainer(config) as trainer:
        policy = trainer.get_policy()
        mask_width = policy.observation_space["action_mask"].shape[0]
        layout = get_preprocessor(policy.observation_space).children
        assert list(layout)[0] == "action_mask"  # the flat rows start with the mask
        worker = trainer.workers.local_worker()
        recorded = []
        original = worker.sample

        def keep(*args, **kwargs):
            batch = original(*args, **kwargs)
            recorded.append(batch)
            return batch

        worker.sample = keep
        for _ in range(3):
            result = trainer.train()
    assert result["episodes_total"] > 10
    rows = 0
    for batch in recorded:
        moves = batch.policy_batches["default_policy"]
        masks = moves[SampleBatch.OBS][:, :mask_width]
        chosen = masks[np.arange(moves.count), moves[SampleBatch.ACTIONS]]
        assert (chosen == 1).all(), "an illegal move was sampled"
        rows += moves.count
    assert rows >= 500
    # an illegal move would end the game with a -1 for the mover (PettingZoo's own rule):
    # every game's returns sum to zero (+1 -1, or a draw)
    assert abs(result["episode_reward_mean"]) < 1e-9


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hpcrl", *args], capture_output=True, text=True, timeout=300
    )


def test_parallel_env_trained_from_the_command_line_and_evaluated(tmp_path):
    config = (
        '{"num_envs_per_worker": 4, "rollout_fragment_length": 25, "train_batch_size": 200, '
        '"sgd_minibatch_size": 100, "num_sgd_iter": 2, "env_config": {"max_cycles": 10}, '
        '"multiagent": {"policies": ["player_0", "player_1"], '
        '"policy_mapping_fn": "hpcrl.evaluation.policy_specs:agent_id_as_policy_id"}}'
    )
    out = run_cli(
        "train", "--run", "PPO", "--env", "pettingzoo.classic.rps_v2",
        "--config", config, "--stop", '{"training_iteration": 2}',
        "--local-dir", str(tmp_path), "--checkpoint-at-end", "--seed", "0", "-q",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    [checkpoint] = tmp_path.glob("*/*/checkpoint_000002")
    out = run_cli("evaluate", str(checkpoint), "--episodes", "3", "--seed", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "policy player_0: mean return" in out.stdout
    assert "policy player_1: mean return" in out.stdout
    assert "over 3 episodes" in out.stdout and "length 10" in out.stdout
