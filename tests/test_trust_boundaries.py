"""Files from elsewhere are data: every way hpcrl loads state from disk reads JSON and
HDF5 arrays and never unpickles (the ``no_pickle`` fixture of tests/conftest.py makes
every unpickler raise). Trainer and policy checkpoints: tests/io/test_checkpoint.py;
here the loading paths added since: observation-filter state, recorded batch files,
tune's function checkpoints and experiment_state.json. See README, "What hpcrl trusts"."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.algorithms.pg import PGTrainer
from hpcrl.io.batch_reader import BatchReader
from hpcrl.io.batch_writer import BatchWriter
from hpcrl.policy.observation_filter import MeanStdFilter
from hpcrl.policy.policy import Policy
from hpcrl.policy.sample_batch import SampleBatch

PG_SMALL = {
    "model": {"fcnet_hiddens": [8]},
    "rollout_fragment_length": 20,
    "train_batch_size": 40,
    "observation_filter": "MeanStdFilter",
    "seed": 3,
}


def test_observation_filter_state_loads_without_unpickling(tmp_path, one_torch_thread, no_pickle):
    with PGTrainer(PG_SMALL, env="CartPole-v1") as trainer:
        trainer.train()
        checkpoint = trainer.save(str(tmp_path))
        trained = trainer.get_policy().observation_filter.get_state()
    with PGTrainer(PG_SMALL, env="CartPole-v1") as restored:
        restored.restore(checkpoint)
        back = restored.get_policy().observation_filter.get_state()
    policy = Policy.from_checkpoint(checkpoint)
    assert isinstance(policy.observation_filter, MeanStdFilter)
    for state in (back, policy.observation_filter.get_state()):
        np.testing.assert_array_equal(state["running"]["mean"], trained["running"]["mean"])
        np.testing.assert_array_equal(state["running"]["m2"], trained["running"]["m2"])


def test_recorded_batches_load_without_unpickling(tmp_path, no_pickle):
    infos = np.empty(3, dtype=object)
    infos[:] = [{"step": 0, "pos": np.ones(2)}, {}, {"name": "x", "pair": (1, None)}]
    batch = SampleBatch({"obs": np.arange(6.0).reshape(3, 2), "infos": infos})
    with BatchWriter(tmp_path, config={"lr": 0.1}) as writer:
        writer.write(batch)
    [back] = list(BatchReader(str(tmp_path)))
    np.testing.assert_array_equal(back["obs"], batch["obs"])
    assert back["infos"][2] == {"name": "x", "pair": (1, None)}
    np.testing.assert_array_equal(back["infos"][0]["pos"], np.ones(2))


def test_tune_state_files_load_without_unpickling(tmp_path, no_pickle):
    from hpcrl.tune.experiment_state import read_experiment_state, write_experiment_state
    from hpcrl.tune.function_checkpoint import load_function_checkpoint, save_function_checkpoint

    state = {"weights": np.arange(4.0), "step": 7, "note": {"tags": ("a", None)}}
    path = save_function_checkpoint(str(tmp_path / "trial"), state, 3, 1.5)
    back, meta = load_function_checkpoint(path)
    np.testing.assert_array_equal(back["weights"], state["weights"])
    assert back["note"] == {"tags": ("a", None)} and meta["iteration"] == 3
    write_experiment_state(str(tmp_path), {"trials": [{"trial_id": "t0", "config": {"lr": 0.1}}]})
    assert read_experiment_state(str(tmp_path))["trials"][0]["config"] == {"lr": 0.1}


def test_a_checkpoint_naming_a_class_that_is_not_a_policy_is_refused(tmp_path):
    """policy.json names the class to build: only Policy subclasses are built."""
    import json

    import gymnasium as gym

    from hpcrl.algorithms.pg import PGTorchPolicy
    from hpcrl.io.checkpoint import CheckpointError

    policy = PGTorchPolicy(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), {})
    path = policy.export_checkpoint(str(tmp_path / "policy"))
    meta_path = next(p for p in (tmp_path / "policy").rglob("policy.json"))
    meta = json.loads(meta_path.read_text())
    meta["policy_class"] = "subprocess:Popen"
    for digest in ("meta_sha256", "sha256"):  # crafted: without digests, as older hpcrl wrote
        meta.pop(digest)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="'subprocess:Popen' .* is not a Policy subclass"):
        Policy.from_checkpoint(path)
