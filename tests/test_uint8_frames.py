"""Image frames stay uint8 from the env to batches, messages, HDF5 output, the replay
buffer and checkpoints: any float copy of a frame anywhere fails these tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from hpcrl.algorithms.registry import get_trainer_class
from hpcrl.backends.mpi import _pack, _unpack
from hpcrl.env import register_env

FRAME = (4, 42, 42)  # a small stack of frames, channels first; the default 42x42 filters


class FrameEnv(gym.Env):
    """Random uint8 frames; reward 1 for action 0 (a few steps per episode)."""

    observation_space = gym.spaces.Box(0, 255, FRAME, np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, config=None):
        self._rng = np.random.default_rng(0)
        self._t = 0

    def _frame(self):
        return self._rng.integers(0, 256, FRAME, dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._t = 0
        return self._frame(), {}

    def step(self, action):
        self._t += 1
        return self._frame(), float(action == 0), self._t >= 12, False, {}


register_env("uint8_frames", FrameEnv)


def frame_arrays(obj, where="", found=None):
    """Every array holding frames (trailing shape FRAME) in nested dicts/lists/tuples,
    as (where, array)."""
    found = [] if found is None else found
    if isinstance(obj, np.ndarray):
        if obj.shape[-3:] == FRAME:
            found.append((where, obj))
    elif isinstance(obj, dict):
        for key, value in obj.items():
            frame_arrays(value, f"{where}/{key}", found)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            frame_arrays(value, f"{where}[{i}]", found)
    return found


def hdf5_frames(path: Path):
    found = []

    def visit(name, item):
        if isinstance(item, h5py.Dataset) and item.shape[-3:] == FRAME:
            found.append((f"{path.name}:{name}", item.dtype))

    for file in sorted(path.rglob("*.h5")) if path.is_dir() else [path]:
        with h5py.File(file, "r") as f:
            f.visititems(visit)
    return found


def assert_uint8(found, what):
    assert found, f"no frames found in {what}"
    floats = [(where, a.dtype if hasattr(a, "dtype") else a) for where, a in found]
    bad = [(w, d) for w, d in floats if d != np.uint8]
    assert not bad, f"float copies of frames in {what}: {bad}"


def test_the_checks_catch_a_float_copy():
    with pytest.raises(AssertionError, match="float copies"):
        assert_uint8(frame_arrays({"obs": np.zeros((2, *FRAME), np.float32)}), "a batch")


CONFIG = {
    "num_workers": 0,
    "num_envs_per_worker": 2,
    "rollout_fragment_length": 16,
    "train_batch_size": 32,
    "seed": 0,
    "model": {"vf_share_layers": True},
}


def test_ppo_batches_messages_output_and_checkpoints_keep_uint8_frames(tmp_path):
    trainer = get_trainer_class("PPO")(
        {**CONFIG, "sgd_minibatch_size": 16, "num_sgd_iter": 1, "output": str(tmp_path / "out")},
        env="uint8_frames",
    )
    try:
        trainer.train()
        batch = trainer.workers.local_worker().sample()
        assert_uint8(frame_arrays(dict(batch)), "a sample batch")
        frame_bytes = batch["obs"].nbytes + batch["new_obs"].nbytes
        # MPI: the packed message carries each frame's bytes once, as uint8.
        message = _pack(batch)
        assert_uint8(frame_arrays(dict(_unpack(message))), "an MPI message")
        assert message.nbytes < 1.2 * frame_bytes + 50_000
        # Dask (pickle): the same.
        assert len(pickle.dumps(batch, protocol=5)) < 1.2 * frame_bytes + 50_000
        assert_uint8(hdf5_frames(tmp_path / "out"), "HDF5 output")
        checkpoint = Path(trainer.save(str(tmp_path / "ckpt")))
        # The sampler's current observations are in the checkpoint.
        assert_uint8(
            hdf5_frames(checkpoint.parent if checkpoint.is_file() else checkpoint), "a checkpoint"
        )
    finally:
        trainer.stop()


def test_dqn_replay_buffer_and_its_checkpoint_keep_uint8_frames(tmp_path):
    trainer = get_trainer_class("DQN")(
        {
            **CONFIG,
            "learning_starts": 32,
            "buffer_size": 500,
            "train_batch_size": 16,
            "timesteps_per_iteration": 64,
            "store_buffer_in_checkpoints": True,
        },
        env="uint8_frames",
    )
    try:
        trainer.train()
        buffer = trainer.optimizer.buffer.policy_buffers["default_policy"]
        assert_uint8(frame_arrays(dict(buffer._columns)), "the replay buffer")
        checkpoint = Path(trainer.save(str(tmp_path / "ckpt")))
        assert_uint8(
            hdf5_frames(checkpoint.parent if checkpoint.is_file() else checkpoint),
            "a DQN checkpoint",
        )
    finally:
        trainer.stop()
