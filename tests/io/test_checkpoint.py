"""Trainer and policy checkpoints: round trips, no pickle (the ``no_pickle`` fixture of
tests/conftest.py; more loading paths in tests/test_trust_boundaries.py), bad files,
keep-last-N."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from hpcrl.algorithms.a3c import A3CTorchPolicy
from hpcrl.algorithms.pg import PGTrainer
from hpcrl.algorithms.ppo import PPOTorchPolicy, PPOTrainer
from hpcrl.io.checkpoint import (
    CheckpointError,
    _class_path,
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint_meta,
)
from hpcrl.policy.policy import Policy

SMALL = {
    "model": {"fcnet_hiddens": [16]},
    "num_envs_per_worker": 3,
    "rollout_fragment_length": 20,
    "train_batch_size": 60,
    "sgd_minibatch_size": 30,
    "num_sgd_iter": 2,
    "seed": 5,
}
PG_SMALL = {k: v for k, v in SMALL.items() if k not in ("sgd_minibatch_size", "num_sgd_iter")}


def assert_same_tree(a, b, path="state"):
    """Every array equal (allclose with zero tolerance) and every other value equal."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (path, sorted(a), sorted(b))
        for key in a:
            assert_same_tree(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{path}/{i}")
    elif isinstance(a, np.ndarray) or hasattr(a, "numpy"):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, path
        if a.dtype == object:
            assert [repr(x) for x in a.ravel()] == [repr(x) for x in b.ravel()], path
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=0, err_msg=path)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, (path, a, b)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_trainer_checkpoint_round_trip_restores_every_tensor(tmp_path, num_workers, no_pickle):
    config = {**SMALL, "num_workers": num_workers, "batch_mode": "complete_episodes"}
    with PPOTrainer(config, env="CartPole-v1") as trainer:
        trainer.train()
        trainer.train()
        before = trainer.get_state()
        path = trainer.save(str(tmp_path))
    assert Path(path).name == "checkpoint_000002"
    with PPOTrainer(config, env="CartPole-v1") as restored:
        restored.restore(path)
        after = restored.get_state()
    # weights, Adam moments and steps, kl_coeff, RNG states, env states, counters...
    assert_same_tree(before, after)
    weights = before["policies"]["default_policy"]["weights"]
    assert weights and all(isinstance(v, np.ndarray) for v in weights.values())
    assert before["policies"]["default_policy"]["optimizer_state"]["exp_avg"]
    meta = read_checkpoint_meta(path)
    assert meta["algorithm"] == "PPO" and meta["iteration"] == 2
    assert meta["timesteps_total"] == before["optimizer"]["num_steps_sampled"]
    assert meta["config"]["seed"] == 5 and meta["format_version"] == 1


def test_checkpoint_directory_is_json_and_hdf5(tmp_path):
    with PGTrainer(PG_SMALL, env="CartPole-v1") as trainer:
        trainer.train()
        path = Path(trainer.save(str(tmp_path)))
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == [
        "checkpoint.json",
        "policies/default_policy/policy.json",
        "policies/default_policy/policy_state.h5",
        "trainer_state.h5",
    ]
    meta = json.loads((path / "checkpoint.json").read_text())
    assert set(meta["files"]) == set(files) - {"checkpoint.json"}
    assert not list(tmp_path.glob(".checkpoint_*"))  # the temporary name is gone


def test_policy_export_and_from_checkpoint(tmp_path, no_pickle):
    with PPOTrainer(SMALL, env="CartPole-v1") as trainer:
        trainer.train()
        policy = trainer.get_policy()
        policy.export_checkpoint(str(tmp_path / "policy"))
        checkpoint = trainer.save(str(tmp_path / "run"))
    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    expected, _, _ = policy.compute_actions(obs, explore=False)
    for source in (tmp_path / "policy", checkpoint):
        loaded = Policy.from_checkpoint(str(source))
        assert type(loaded) is PPOTorchPolicy
        assert_same_tree(policy.get_state(), loaded.get_state())
        np.testing.assert_array_equal(loaded.compute_actions(obs, explore=False)[0], expected)
    # a subclass loads as itself, and config keys can be replaced
    loaded = PPOTorchPolicy.from_checkpoint(str(tmp_path / "policy"), explore=False)
    assert loaded.config["explore"] is False


def test_class_path_finds_classes_built_by_with_updates():
    assert _class_path(PPOTorchPolicy) == "hpcrl.algorithms.ppo:PPOTorchPolicy"
    assert _class_path(A3CTorchPolicy) == "hpcrl.algorithms.a3c:A3CTorchPolicy"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("saved")
    with PGTrainer(PG_SMALL, env="CartPole-v1") as trainer:
        trainer.train()
        return trainer.save(str(directory))


def copy_of(saved: str, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "checkpoint_000001"
    shutil.copytree(saved, target)
    return target


def test_checkpoint_of_another_algorithm_is_an_error(saved):
    with (
        PPOTrainer(SMALL, env="CartPole-v1") as trainer,
        pytest.raises(
            CheckpointError, match="was written by PG, not PPO: restore it into a PG trainer"
        ),
    ):
        trainer.restore(saved)


def test_truncated_damaged_and_newer_checkpoints_are_errors(saved, tmp_path):
    with PGTrainer(PG_SMALL, env="CartPole-v1") as trainer:
        path = copy_of(saved, tmp_path)
        state = path / "trainer_state.h5"
        data = state.read_bytes()
        state.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match=r"trainer_state.h5' is truncated or damaged"):
            trainer.restore(str(path))
        state.write_bytes(b"\0" * len(data))  # same size, not HDF5
        with pytest.raises(CheckpointError, match=r"is damaged \(its sha256 differs"):
            trainer.restore(str(path))
        meta = json.loads((path / "checkpoint.json").read_text())
        meta["format_version"] = 2
        (path / "checkpoint.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="format version 2; this hpcrl reads versions up"):
            trainer.restore(str(path))
        (path / "checkpoint.json").unlink()
        with pytest.raises(CheckpointError, match=r"is damaged \(its other files are there\)"):
            trainer.restore(str(path))
        os.makedirs(tmp_path / ".checkpoint_000001.tmp-99999")
        with pytest.raises(CheckpointError, match="its save was interrupted"):
            trainer.restore(str(path))
    with pytest.raises(CheckpointError, match="its save was interrupted .*to resume afresh, move"):
        latest_checkpoint(str(tmp_path))  # not skipped: resuming afresh would overwrite it


def test_keep_checkpoints_num_and_saving_again(tmp_path):
    with PGTrainer({**PG_SMALL, "keep_checkpoints_num": 2}, env="CartPole-v1") as trainer:
        for _ in range(4):
            trainer.train()
            trainer.save(str(tmp_path))
        trainer.save(str(tmp_path))  # the same iteration again: replaced
        os.makedirs(tmp_path / ".checkpoint_000009.tmp-999999")  # left by a dead process
        trainer.train()
        last = trainer.save(str(tmp_path))
    assert [i for i, _ in list_checkpoints(str(tmp_path))] == [4, 5]
    assert latest_checkpoint(str(tmp_path)) == last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000004", "checkpoint_000005"]
    with pytest.raises(ValueError, match="keep_checkpoints_num' must be int"):
        PGTrainer({"keep_checkpoints_num": "2"}, env="CartPole-v1")
    with pytest.raises(ValueError, match="keep_checkpoints_num' must be >= 1, got 0"):
        PGTrainer({"keep_checkpoints_num": 0}, env="CartPole-v1")  # before any training


def test_save_defaults_to_the_trainer_logdir(tmp_path):
    with PGTrainer(PG_SMALL, env="CartPole-v1") as trainer:
        trainer.logdir = str(tmp_path / "trial")
        assert trainer.save() == str(tmp_path / "trial" / "checkpoint_000000")
