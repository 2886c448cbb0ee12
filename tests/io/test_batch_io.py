"""Recorded batches: HDF5 writer and reader round trips, layout, errors, worker output/input."""

from __future__ import annotations

import json

import gymnasium as gym
import h5py
import numpy as np
import pytest

from hpcrl.evaluation.rollout_worker import RolloutWorker
from hpcrl.evaluation.worker_set import WorkerSet
from hpcrl.io.batch_reader import BatchReader
from hpcrl.io.batch_writer import FORMAT_VERSION, BatchWriter
from hpcrl.io.json_values import dumps, loads
from hpcrl.io.spaces import space_from_json, space_to_json
from hpcrl.policy.sample_batch import MultiAgentBatch, SampleBatch

SPACES = {
    "default_policy": (
        gym.spaces.Box(0, 255, (4, 4, 3), np.uint8),
        gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    )
}


def every_column_type(rows: int, offset: int = 0) -> SampleBatch:
    """Float, int, bool, image-shaped, vector and string columns, and infos."""
    rng = np.random.default_rng(offset)
    infos = np.empty(rows, dtype=object)
    infos[:] = [
        {
            "step": offset + i,
            "pos": np.array([i, -i], dtype=np.float32),
            "flag": bool(i % 2),
            "name": f"row{i}",
            "pair": (i, None),
            "nested": {"x": [1.5, {"y": np.int16(i)}]},
            3: "int key",
        }
        if i % 3
        else {}
        for i in range(rows)
    ]
    return SampleBatch(
        {
            "obs": rng.integers(0, 255, (rows, 4, 4, 3), dtype=np.uint8),
            "actions": rng.normal(size=(rows, 2)).astype(np.float32),
            "rewards": rng.normal(size=rows),
            "terminateds": rng.random(rows) < 0.2,
            "t": np.arange(offset, offset + rows, dtype=np.int64),
            "eps_id": np.full(rows, 7 + offset, dtype=np.int32),
            "multi": rng.integers(0, 5, (rows, 3)).astype(np.uint16),
            "labels": np.array([f"l{i}" for i in range(rows)]),
            "infos": infos,
        }
    )


def assert_same_columns(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        got = actual[key]
        if isinstance(value, dict):
            assert_same_columns(got, value)
        elif isinstance(value, tuple):
            assert isinstance(got, tuple) and len(got) == len(value)
            for a, b in zip(got, value):
                np.testing.assert_array_equal(a, b)
        elif value.dtype == object:
            assert got.dtype == object and len(got) == len(value)
            assert dumps(list(got)) == dumps(list(value)), key
        else:
            assert got.dtype == value.dtype and got.shape == value.shape, key
            np.testing.assert_array_equal(got, value)


def test_every_column_type_round_trips(tmp_path):
    batches = [every_column_type(n, offset=10 * i) for i, n in enumerate([5, 1, 12])]
    with BatchWriter(tmp_path, worker_index=3, config={"lr": 0.1}, spaces=SPACES) as writer:
        for batch in batches:
            writer.write(batch)
    reader = BatchReader(str(tmp_path))
    back = list(reader)
    assert len(back) == 3 and reader.num_batches() == 3
    for got, expected in zip(back, batches):
        assert isinstance(got, SampleBatch) and got.count == expected.count
        assert_same_columns(got, expected)
    # infos keep numpy dtypes, tuples and integer keys
    info = back[0]["infos"][1]
    assert info["pos"].dtype == np.float32 and info["pair"] == (1, None) and info[3] == "int key"
    assert info["nested"]["x"][1]["y"].dtype == np.int16
    assert reader.spaces() == SPACES and reader.config == {"lr": 0.1}


def test_dict_and_tuple_columns_round_trip(tmp_path):
    columns = {
        "actions": np.arange(4),
        "obs": {
            "camera": np.ones((4, 2, 2), np.float32),
            "state": (np.arange(4.0), np.zeros((4, 3), bool)),
        },
    }
    with BatchWriter(tmp_path) as writer:
        writer.write(SampleBatch({"actions": columns["actions"]}))
        batch = SampleBatch({"actions": columns["actions"]})
        dict.__setitem__(batch, "obs", columns["obs"])
        writer.write(batch)
    back = list(BatchReader(tmp_path))
    assert len(back) == 2 and len(writer.paths) == 2  # new columns: a new file
    assert back[1].count == 4
    assert_same_columns(back[1], columns)


def test_multi_agent_batches_per_policy(tmp_path):
    batch = MultiAgentBatch(
        {"red": every_column_type(3), "blue": every_column_type(5, offset=1)}, env_steps=4
    )
    with BatchWriter(tmp_path) as writer:
        writer.write(batch)
        writer.write(batch)
    back = list(BatchReader(tmp_path))
    assert all(isinstance(b, MultiAgentBatch) and b.env_steps() == 4 for b in back)
    for pid in ("red", "blue"):
        assert_same_columns(back[1].policy_batches[pid], batch.policy_batches[pid])


def test_file_layout_is_plain_hdf5(tmp_path):
    with BatchWriter(tmp_path, worker_index=2, compress="gzip:3", spaces=SPACES) as writer:
        writer.write(every_column_type(6))
        writer.write(every_column_type(4))
    [path] = writer.paths
    assert "_worker2_" in path and path.endswith(".h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "hpcrl.sample_batches"
        assert f.attrs["format_version"] == FORMAT_VERSION
        assert f["index"][:].tolist() == [[6, 6], [4, 10]]
        group = f["policies/default_policy"]
        obs = group["obs"]
        assert obs.shape == (10, 4, 4, 3) and obs.chunks[1:] == (4, 4, 3)
        assert obs.compression == "gzip" and obs.compression_opts == 3 and obs.maxshape[0] is None
        assert space_from_json(group.attrs["action_space"]) == SPACES["default_policy"][1]
        assert group["infos"].attrs["kind"] == "json_rows"
        ends = group["infos/ends"][:, 0]
        first_info = bytes(group["infos/bytes"][ends[0] : ends[1]])
        assert loads(first_info)["step"] == 1


def test_schema_change_starts_a_new_file(tmp_path):
    with BatchWriter(tmp_path) as writer:
        writer.write(SampleBatch({"a": np.zeros(2)}))
        writer.write(SampleBatch({"a": np.zeros(3)}))
        writer.write(SampleBatch({"a": np.zeros(2, np.float32)}))
    assert len(writer.paths) == 2
    assert [b["a"].dtype for b in BatchReader(tmp_path)] == [np.float64] * 2 + [np.float32]


@pytest.mark.parametrize("compress", [None, "gzip", "gzip:9", "lzf"])
def test_compression_options(tmp_path, compress):
    batch = every_column_type(8)
    with BatchWriter(tmp_path, compress=compress) as writer:
        writer.write(batch)
    assert_same_columns(next(iter(BatchReader(tmp_path))), batch)


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"output_compress='zip'; expected None, 'gzip'"):
        BatchWriter(tmp_path, compress="zip")
    with pytest.raises(ValueError, match="no batch files"):
        BatchReader(tmp_path)
    with pytest.raises(ValueError, match="neither a directory nor a file"):
        BatchReader(tmp_path / "missing")
    (tmp_path / "other.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ValueError, match="cannot read batch file .*other.h5"):
        BatchReader(tmp_path)
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(ValueError, match="is not an hpcrl batch file"):
        BatchReader(tmp_path)
    (tmp_path / "other.h5").unlink()
    with BatchWriter(tmp_path) as writer:
        writer.write(SampleBatch({"a": np.zeros(2)}))
    with h5py.File(writer.paths[0], "r+", libver="latest") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="newer hpcrl .* upgrade hpcrl"):
        BatchReader(tmp_path)
    with pytest.raises(ValueError, match="column name 'a/b'"):
        BatchWriter(tmp_path / "x").write(SampleBatch({"a/b": np.zeros(2)}))


def test_reader_shares_batches_among_workers(tmp_path):
    with BatchWriter(tmp_path) as writer:
        for i in range(5):
            writer.write(SampleBatch({"i": np.full(2, i)}))

    def first_of(reader: BatchReader, n: int) -> list[int]:
        return [int(reader.next()["i"][0]) for _ in range(n)]

    assert first_of(BatchReader(tmp_path), 6) == [0, 1, 2, 3, 4, 0]
    shares = [first_of(BatchReader(tmp_path, worker_index=w, num_workers=2), 4) for w in (1, 2)]
    assert shares == [[0, 2, 4, 0], [1, 3, 1, 3]]
    reader = BatchReader(tmp_path)
    first_of(reader, 2)
    again = BatchReader(tmp_path)
    again.set_state(reader.get_state())
    assert first_of(again, 2) == first_of(reader, 2) == [2, 3]


def test_spaces_json_round_trip():
    for space in [
        gym.spaces.Discrete(4, start=1),
        gym.spaces.MultiDiscrete([3, 2]),
        gym.spaces.MultiBinary(5),
        gym.make("CartPole-v1").observation_space,  # infinite bounds
        gym.spaces.Dict(
            {"a": gym.spaces.Box(-1, 1, (2,)), "b": gym.spaces.Tuple([SPACES["default_policy"][0]])}
        ),
    ]:
        text = space_to_json(space)
        json.loads(text)  # standard JSON: no Infinity
        assert "Infinity" not in text and space_from_json(text) == space


def worker_config(directory, **extra) -> dict:
    return {
        "output": str(directory),
        "num_envs_per_worker": 2,
        "rollout_fragment_length": 10,
        "seed": 1,
        "model": {"fcnet_hiddens": [8]},
        **extra,
    }


def test_rollout_workers_each_write_their_own_file(tmp_path):
    from hpcrl.algorithms.ppo import PPOTorchPolicy

    workers = WorkerSet(
        policy=PPOTorchPolicy,
        env_creator="CartPole-v1",
        num_workers=2,
        config=worker_config(tmp_path, output_compress="lzf"),
    )
    sampled = workers.call_remote("sample") + workers.call_remote("sample")
    workers.stop()
    files = sorted(p.name for p in tmp_path.glob("*.h5"))
    assert len(files) == 2 and "_worker1_" in files[0] and "_worker2_" in files[1]
    back = list(BatchReader(tmp_path))
    assert len(back) == 4
    by_worker = sorted(sampled, key=lambda b: int(b["eps_id"][0]) >> 40)
    recorded = sorted(back, key=lambda b: int(b["eps_id"][0]) >> 40)
    for got, expected in zip(recorded, by_worker):
        assert set(got) == set(expected)  # postprocessed columns included
        for key in ("obs", "actions", "advantages", "vf_preds", "action_logp"):
            np.testing.assert_array_equal(got[key], expected[key])
        assert list(got["infos"]) == list(expected["infos"])
    with h5py.File(tmp_path / files[0], "r", swmr=True) as f:
        assert f.attrs["worker_index"] == 1
        assert json.loads(f.attrs["config"])["output_compress"] == "lzf"


def test_worker_reads_input_instead_of_envs(tmp_path):
    from hpcrl.algorithms.pg import PGTorchPolicy

    recorder = RolloutWorker("CartPole-v1", PGTorchPolicy, worker_config(tmp_path))
    recorded = [recorder.sample() for _ in range(3)]
    recorder.stop()
    reader_worker = RolloutWorker(None, PGTorchPolicy, {"input": str(tmp_path), "seed": 2})
    assert reader_worker.env is None
    recorded_space = recorder.get_policy().observation_space
    assert reader_worker.get_policy().observation_space == recorded_space
    replayed = [reader_worker.sample() for _ in range(4)]
    for got, expected in zip(replayed, recorded + recorded[:1]):
        np.testing.assert_array_equal(got["obs"], expected["obs"])
        np.testing.assert_allclose(got["advantages"], expected["advantages"])
    assert reader_worker.get_metrics()["episode_returns"].size == 0


def test_writer_keeps_no_chunk_cache(tmp_path):
    # HDF5 2.0 gives each dataset an 8 MiB chunk cache by default: a worker's writer
    # of 16 columns grew by ~130 MiB over a soak (benchmarks/soak.py).
    from hpcrl.io.batch_writer import CHUNK_CACHE_BYTES

    batch = every_column_type(300)
    with BatchWriter(str(tmp_path)) as writer:
        for _ in range(3):
            writer.write(batch)
        datasets = []
        writer._file.visititems(
            lambda _, item: datasets.append(item) if isinstance(item, h5py.Dataset) else None
        )
        caches = [d.id.get_access_plist().get_chunk_cache() for d in datasets]
    assert CHUNK_CACHE_BYTES == 0
    assert len(caches) > 5
    assert all(nbytes == 0 for _, nbytes, _ in caches), caches
