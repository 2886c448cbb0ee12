"""The uniform ReplayBuffer: ring semantics, dtypes, memory, sampling, state, errors."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch
from hpcrl.replay import ReplayBuffer


def rows(start: int, count: int) -> SampleBatch:
    """CartPole-like rows numbered ``start .. start + count - 1`` (the number is in
    every column, so a stored row tells which row it was)."""
    number = np.arange(start, start + count)
    return SampleBatch(
        {
            "obs": np.repeat(number[:, None], 4, axis=1).astype(np.float32),
            "new_obs": np.repeat(number[:, None] + 1, 4, axis=1).astype(np.float32),
            "actions": number.astype(np.int64),
            "rewards": number.astype(np.float32),
            "terminateds": number % 7 == 0,
            "truncateds": np.zeros(count, dtype=bool),
            "infos": [{"row": int(n)} for n in number],
        }
    )


def stored_numbers(buffer: ReplayBuffer) -> np.ndarray:
    """The row number held at each ring position."""
    return buffer.get_state()["columns"]["actions"]


@pytest.mark.parametrize("sizes", [[3, 4, 5], [10], [1] * 23, [13], [2, 13], [9, 1, 25, 3]])
def test_ring_keeps_the_newest_rows_as_single_adds_would(sizes):
    buffer, one_at_a_time = ReplayBuffer(10), ReplayBuffer(10)
    start = 0
    for size in sizes:
        buffer.add(rows(start, size))
        for row in range(start, start + size):
            one_at_a_time.add(rows(row, 1))
        start += size
    assert len(buffer) == min(start, 10) and buffer.num_added == start
    state, reference = buffer.get_state(), one_at_a_time.get_state()
    assert state["next_index"] == reference["next_index"] == start % 10
    for name, column in reference["columns"].items():
        np.testing.assert_array_equal(state["columns"][name], column)
    # Row r sits at ring position r % capacity, and only the newest rows remain.
    numbers = stored_numbers(buffer)
    np.testing.assert_array_equal(numbers % 10, np.arange(len(numbers)))
    assert sorted(numbers) == list(range(max(0, start - 10), start))


@pytest.mark.parametrize("num_items", [16, 64])  # 0.9 MB: one array per column; 3.6 MB: one block
def test_dtypes_and_shapes_are_kept_and_infos_dropped(num_items):
    buffer = ReplayBuffer(50)
    frames = np.arange(3 * 84 * 84 * 4, dtype=np.uint8).reshape(3, 84, 84, 4)
    buffer.add(
        SampleBatch(
            {
                "obs": frames,
                "new_obs": frames[::-1],
                "actions": np.array([0, 1, 2]),
                "terminateds": np.array([False, True, False]),
                "infos": [{}, {}, {}],
            }
        )
    )
    batch = buffer.sample(num_items)
    assert batch["obs"].dtype == np.uint8 and batch["obs"].shape == (num_items, 84, 84, 4)
    assert all(column.flags.c_contiguous and column.flags.aligned for column in batch.values())
    assert batch["terminateds"].dtype == bool and batch["actions"].dtype == np.int64
    assert batch["batch_indexes"].dtype == np.int64
    assert set(batch.keys()) == {"obs", "new_obs", "actions", "terminateds", "batch_indexes"}
    np.testing.assert_array_equal(batch["obs"], frames[batch["batch_indexes"]])
    np.testing.assert_array_equal(batch["new_obs"], frames[::-1][batch["batch_indexes"]])


def test_memory_of_a_full_buffer_is_its_raw_bytes():
    capacity = 5000
    row_bytes = 2 * 16 * 16 * 4 + 8 + 4 + 1 + 1  # obs, new_obs (uint8), actions, rewards, flags
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        buffer = ReplayBuffer(capacity, seed=0)
        frames = np.zeros((500, 16, 16, 4), dtype=np.uint8)
        for start in range(0, 2 * capacity, 500):  # fill it twice over
            frames[:] = start % 251
            buffer.add(
                SampleBatch(
                    {
                        "obs": frames,
                        "new_obs": frames,
                        "actions": np.full(500, start, dtype=np.int64),
                        "rewards": np.ones(500, dtype=np.float32),
                        "terminateds": np.zeros(500, dtype=bool),
                        "truncateds": np.zeros(500, dtype=bool),
                    }
                )
            )
        del frames
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    raw = capacity * row_bytes
    assert buffer.nbytes == raw
    assert raw <= allocated <= 1.1 * raw, (allocated, raw)


def test_uniform_sampling_frequencies():
    buffer = ReplayBuffer(20, seed=0)
    buffer.add(rows(0, 30))  # rows 10..29 at positions 0..9, 10..19
    counts = np.zeros(20)
    for _ in range(200):
        batch = buffer.sample(100)
        np.testing.assert_array_equal(
            stored_numbers(buffer)[batch["batch_indexes"]], batch["actions"]
        )
        counts += np.bincount(batch["batch_indexes"], minlength=20)
    expected = counts.sum() / 20
    chi_square = ((counts - expected) ** 2 / expected).sum()
    assert chi_square < 19 + 6 * np.sqrt(2 * 19)  # 19 degrees of freedom, 6 sigma
    assert buffer.num_sampled == 20_000


def test_same_seed_same_samples():
    first, second = ReplayBuffer(100, seed=7), ReplayBuffer(100, seed=7)
    for buffer in (first, second):
        buffer.add(rows(0, 60))
    np.testing.assert_array_equal(first.sample(50)["obs"], second.sample(50)["obs"])


@pytest.mark.parametrize("added", [0, 25, 130])  # empty, partly filled, wrapped around
def test_state_through_hdf5_continues_exactly(added, hdf5_round_trip):
    buffer = ReplayBuffer(100, seed=3)
    if added:
        buffer.add(rows(0, added))
        buffer.sample(8)
    restored = ReplayBuffer(100, seed=99)
    restored.set_state(hdf5_round_trip(buffer.get_state()))
    assert len(restored) == len(buffer) and restored.num_added == buffer.num_added
    assert restored.stats() == buffer.stats()
    start = added
    for step in range(5):
        for target in (buffer, restored):
            target.add(rows(start, 17 + step))
        start += 17 + step
        expected, got = buffer.sample(32), restored.sample(32)
        assert expected.keys() == got.keys()
        for name in expected:
            assert got[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(got[name], expected[name])


def test_changed_columns_are_an_error_that_names_them():
    buffer = ReplayBuffer(10)
    buffer.add(rows(0, 3))
    batch = rows(3, 2)
    del batch["rewards"]
    batch["action_logp"] = np.zeros(2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"missing \['rewards'\], unexpected \['action_logp'\]"):
        buffer.add(batch)
    assert len(buffer) == 3  # nothing was written
    batch = rows(3, 2)
    batch["obs"] = np.zeros((2, 5), dtype=np.float32)
    with pytest.raises(ValueError, match=r"'obs' has rows of shape \(5,\).*\(4,\)"):
        buffer.add(batch)
    batch = rows(3, 2)
    batch["actions"] = np.zeros(2, dtype=np.float64)
    with pytest.raises(ValueError, match="'actions' has dtype float64 but the buffer stores int64"):
        buffer.add(batch)
    batch = rows(3, 2)
    del batch["infos"]  # object columns are not stored, so they may come and go
    buffer.add(batch)
    assert len(buffer) == 5


def test_other_errors():
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        ReplayBuffer(0)
    buffer = ReplayBuffer(10)
    with pytest.raises(ValueError, match="empty replay buffer"):
        buffer.sample(4)
    batch = rows(0, 3)
    with pytest.raises(TypeError, match="MultiAgentReplayBuffer"):
        buffer.add(MultiAgentBatch({"p": batch}, 3))
    with pytest.raises(ValueError, match="no numeric column"):
        buffer.add(SampleBatch({"infos": [{}, {}]}))
    buffer.add(batch)
    buffer.add(SampleBatch())  # an empty batch adds nothing
    buffer.add(rows(3, 0))
    assert len(buffer) == 3 and buffer.num_added == 3
    with pytest.raises(ValueError, match="num_items must be at least 1"):
        buffer.sample(0)
    with pytest.raises(ValueError, match=r"\['batch_indexes'\] are added by sample\(\)"):
        buffer.add(buffer.sample(2))
    with pytest.raises(ValueError, match="capacity=10 to load it"):
        ReplayBuffer(20).set_state(buffer.get_state())
