"""MultiAgentReplayBuffer: one buffer per policy id."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.policy.sample_batch import DEFAULT_POLICY_ID, MultiAgentBatch, SampleBatch
from hpcrl.replay import MultiAgentReplayBuffer, PrioritizedReplayBuffer, ReplayBuffer


def rows(start: int, count: int, obs_size: int = 2) -> SampleBatch:
    number = np.arange(start, start + count)
    return SampleBatch(
        {
            "obs": np.repeat(number[:, None], obs_size, axis=1).astype(np.float32),
            "actions": number,
            "infos": [{} for _ in number],
        }
    )


def test_sample_batch_goes_to_the_default_policy():
    buffer = MultiAgentReplayBuffer(10, seed=0)
    buffer.add(rows(0, 4))
    assert list(buffer.policy_buffers) == [DEFAULT_POLICY_ID]
    assert buffer.num_rows() == 4 and buffer.num_rows("other") == 0
    batch = buffer.sample(3)
    assert isinstance(batch, MultiAgentBatch) and batch.env_steps() == 3
    assert batch.policy_batches[DEFAULT_POLICY_ID].count == 3


def test_each_policy_has_its_own_ring():
    buffer = MultiAgentReplayBuffer(5, seed=0)
    # Policies with different columns (obs sizes) live side by side.
    buffer.add(MultiAgentBatch({"a": rows(0, 3), "b": rows(100, 7, obs_size=5)}, env_steps=7))
    buffer.add(MultiAgentBatch({"a": rows(3, 4), "c": rows(200, 0)}, env_steps=4))
    assert (buffer.num_rows("a"), buffer.num_rows("b"), buffer.num_rows("c")) == (5, 5, 0)
    assert len(buffer) == 10 and "c" not in buffer.policy_buffers
    assert buffer.policy_buffers["a"].num_added == 7
    batch = buffer.sample(64)
    assert batch.env_steps() == 64 and set(batch.policy_batches) == {"a", "b"}
    assert set(batch.policy_batches["a"]["actions"]) <= set(range(2, 7))
    assert set(batch.policy_batches["b"]["actions"]) <= set(range(102, 107))
    assert batch.policy_batches["b"]["obs"].shape == (64, 5)
    assert buffer.stats()["a"]["num_added"] == 7


def test_a_policys_samples_do_not_depend_on_the_other_policies():
    alone = MultiAgentReplayBuffer(50, seed=4)
    alone.add(MultiAgentBatch({"a": rows(0, 30)}, 30))
    together = MultiAgentReplayBuffer(50, seed=4)
    together.add(MultiAgentBatch({"z": rows(0, 5), "a": rows(0, 30)}, 30))
    np.testing.assert_array_equal(
        alone.sample(20).policy_batches["a"]["actions"],
        together.sample(20).policy_batches["a"]["actions"],
    )
    other_seed = MultiAgentReplayBuffer(50, seed=5)
    other_seed.add(MultiAgentBatch({"a": rows(0, 30)}, 30))
    assert not np.array_equal(
        alone.sample(20).policy_batches["a"]["actions"],
        other_seed.sample(20).policy_batches["a"]["actions"],
    )


def test_prioritized_per_policy():
    buffer = MultiAgentReplayBuffer(20, prioritized=True, alpha=1.0, seed=1)
    buffer.add(MultiAgentBatch({"a": rows(0, 20), "b": rows(0, 20)}, 20))
    assert isinstance(buffer.policy_buffers["a"], PrioritizedReplayBuffer)
    priorities = np.zeros(20)
    priorities[7] = 100.0
    buffer.update_priorities({"a": (np.arange(20), priorities)})
    batch = buffer.sample(200, beta=0.4)
    a, b = batch.policy_batches["a"], batch.policy_batches["b"]
    assert np.mean(a["batch_indexes"] == 7) > 0.99  # only a's priorities changed
    assert np.mean(b["batch_indexes"] == 7) < 0.2
    assert a["weights"].dtype == np.float32 and np.all(b["weights"] == 1.0)


def test_state_through_hdf5_continues_exactly(hdf5_round_trip):
    buffer = MultiAgentReplayBuffer(30, prioritized=True, seed=2)
    buffer.add(MultiAgentBatch({"a": rows(0, 40), "b": rows(0, 12, obs_size=3)}, 40))
    restored = MultiAgentReplayBuffer(30, prioritized=True)
    restored.set_state(hdf5_round_trip(buffer.get_state()))
    assert {pid: restored.num_rows(pid) for pid in ("a", "b")} == {"a": 30, "b": 12}
    for _ in range(3):
        expected, got = buffer.sample(16, beta=0.5), restored.sample(16, beta=0.5)
        for pid, policy_batch in expected.policy_batches.items():
            for name, column in policy_batch.items():
                np.testing.assert_array_equal(got.policy_batches[pid][name], column)
        updates = {
            pid: (b["batch_indexes"], np.abs(np.sin(b["actions"] * 1.0)))
            for pid, b in expected.policy_batches.items()
        }
        buffer.update_priorities(updates)
        restored.update_priorities(updates)


def test_uniform_state_round_trip(hdf5_round_trip):
    buffer = MultiAgentReplayBuffer(8, seed=3)
    buffer.add(rows(0, 11))
    restored = MultiAgentReplayBuffer(8)
    restored.set_state(hdf5_round_trip(buffer.get_state()))
    assert isinstance(restored.policy_buffers[DEFAULT_POLICY_ID], ReplayBuffer)
    np.testing.assert_array_equal(
        restored.sample(10).policy_batches[DEFAULT_POLICY_ID]["obs"],
        buffer.sample(10).policy_batches[DEFAULT_POLICY_ID]["obs"],
    )
    with pytest.raises(ValueError, match="prioritized=False to load it"):
        MultiAgentReplayBuffer(8, prioritized=True).set_state(buffer.get_state())


def test_errors():
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        MultiAgentReplayBuffer(0)
    with pytest.raises(ValueError, match="eps must be"):
        MultiAgentReplayBuffer(10, prioritized=True, eps=-1.0)
    uniform = MultiAgentReplayBuffer(10)
    with pytest.raises(ValueError, match="empty replay buffer"):
        uniform.sample(2)
    uniform.add(rows(0, 3))
    with pytest.raises(ValueError, match="pass beta=None, or build the buffer with prioritized"):
        uniform.sample(2, beta=0.4)
    with pytest.raises(ValueError, match="prioritized=True"):
        uniform.update_priorities({DEFAULT_POLICY_ID: (np.array([0]), np.array([1.0]))})
    with pytest.raises(TypeError, match="SampleBatch or a MultiAgentBatch"):
        uniform.add({"obs": np.zeros(3)})
    prioritized = MultiAgentReplayBuffer(10, prioritized=True)
    prioritized.add(rows(0, 3))
    with pytest.raises(ValueError, match="needs beta"):
        prioritized.sample(2)
    with pytest.raises(KeyError, match=r"no replay buffer for policy 'x'.*\['default_policy'\]"):
        prioritized.update_priorities({"x": (np.array([0]), np.array([1.0]))})
