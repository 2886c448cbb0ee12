"""The MPI backend's message format: one byte array per message, arrays outside pickle."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hpcrl.backends.mpi import _pack, _unpack
from hpcrl.policy.sample_batch import SampleBatch


def round_trip(obj):
    message = _pack(obj)
    assert message.dtype == np.uint8 and message.ndim == 1
    # the receiving rank unpacks its own receive buffer, not the sender's bytes
    received = np.empty_like(message)
    received[:] = message
    return _unpack(received)


def test_sample_batch_columns_come_back_equal_writable_and_aligned():
    batch = SampleBatch(
        {
            "obs": np.arange(24, dtype=np.float32).reshape(6, 4),
            "actions": np.array([0, 1, 1, 0, 1, 0]),
            "terminateds": np.array([False] * 5 + [True]),
        }
    )
    call_id, ok, value, remote_tb = round_trip((7, True, batch, None))
    assert (call_id, ok, remote_tb) == (7, True, None)
    assert isinstance(value, SampleBatch)
    for key in batch:
        assert value[key].dtype == batch[key].dtype
        np.testing.assert_array_equal(value[key], batch[key])
        assert value[key].flags.writeable
        assert value[key].flags.aligned


def test_arrays_are_not_copied_through_the_pickle_stream():
    big = np.full(100_000, 3.0)
    message = _pack({"w": big})
    stream_size, region_start = message[:16].view(np.int64).tolist()
    assert stream_size < 1_000  # the stream holds dtype, shape and place only
    assert message.nbytes - region_start == big.nbytes
    np.testing.assert_array_equal(_unpack(message)["w"], big)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12).reshape(3, 4)[:, ::2],  # not contiguous
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.zeros((0, 3), dtype=np.float32),  # a region of no bytes
        np.array(5, dtype=np.int16),  # 0-d
        np.array(["a", "bc"]),
        np.array([(1.5, 2), (3.0, 4)], dtype=[("x", "<f4"), ("y", "<i8")]),  # structured
        np.arange(3).astype("datetime64[s]"),  # no buffer format: copied by numpy
    ],
)
def test_any_numeric_layout_round_trips(array):
    out = round_trip([array])[0]
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_objects_pickle_cannot_handle_go_through_cloudpickle():
    offset = 10
    payload = {"fn": lambda x: x + offset, "objects": np.array([{"a": 1}], dtype=object)}
    out = round_trip(payload)
    assert out["fn"](1) == 11
    assert out["objects"][0] == {"a": 1}


def test_a_request_without_arrays_is_its_pickle_stream_alone():
    request = ("sample", 3, ((), {"explore": True}), None)
    message = _pack(request)
    stream_size, region_start = message[:16].view(np.int64).tolist()
    assert region_start == 0 and message.nbytes == 16 + stream_size  # no array region
    assert round_trip(request) == request


def test_columns_of_a_batch_are_views_of_the_message():
    batch = SampleBatch({"obs": np.ones((5, 3), np.float32), "t": np.arange(5)})
    message = _pack(batch).copy()  # as received: a writable buffer
    out = _unpack(message)
    out["t"][0] = 99  # writes into the message: nothing was copied on the way out
    assert np.shares_memory(out["t"], message) and np.shares_memory(out["obs"], message)
    assert batch["t"][0] == 0


def test_an_array_reduced_while_another_message_is_packed_gets_its_own_message():
    class PacksOnPickle:
        def __reduce__(self):
            return (_unpack, (_pack({"inner": np.arange(3)}),))

    out = round_trip({"nested": PacksOnPickle(), "outer": np.arange(4.0)})
    np.testing.assert_array_equal(out["outer"], np.arange(4.0))
    np.testing.assert_array_equal(out["nested"]["inner"], np.arange(3))


def test_a_thread_that_never_unpacked_reads_a_message_of_empty_arrays():
    message = _pack({"empty": np.zeros((0, 3), np.float32)})
    out = {}
    thread = threading.Thread(target=lambda: out.update(_unpack(message)))
    thread.start()
    thread.join()
    assert out["empty"].shape == (0, 3) and out["empty"].dtype == np.float32


def test_a_sample_batch_is_one_reduction_and_falls_back_for_object_columns():
    plain = SampleBatch({"obs": np.ones((4, 2), np.float32), "eps_id": np.arange(4)})
    out = round_trip(plain)
    assert type(out) is SampleBatch and list(out) == ["obs", "eps_id"]
    infos = SampleBatch({"obs": np.zeros((2, 2)), "infos": [{"a": 1}, {"b": 2}]})
    out = round_trip(infos)
    assert out["infos"].dtype == object and out["infos"][1] == {"b": 2}
    np.testing.assert_array_equal(out["obs"], infos["obs"])
    strided = SampleBatch({"x": np.arange(12.0).reshape(4, 3)[:, ::2]})
    np.testing.assert_array_equal(round_trip(strided)["x"], strided["x"])


def test_batch_columns_of_datetimes_and_records_go_in_the_one_reduction():
    records = np.array([(1.5, 2), (3.0, 4)], dtype=[("x", "<f4"), ("y", "<i8")])
    batch = SampleBatch({"t": np.arange(2).astype("datetime64[s]"), "r": records})
    out = round_trip(batch)
    assert out["r"].dtype == records.dtype and out["r"]["y"].tolist() == [2, 4]
    np.testing.assert_array_equal(out["t"], batch["t"])


def _answer_batch(rows):
    return SampleBatch(
        {
            "obs": np.arange(rows * 4, dtype=np.float32).reshape(rows, 4),
            "actions": np.arange(rows, dtype=np.int64),
            "terminateds": np.arange(rows) % 3 == 0,
            "logits": np.ones((rows, 2), np.float16),
        }
    )


def _is_batch_answer_message(message):
    return int(message[:8].view(np.int64)[0]) == -1


@pytest.mark.parametrize("rows", [0, 1, 7, 500])
def test_a_batch_answer_goes_without_pickle_and_comes_back_equal_and_aligned(rows):
    batch = _answer_batch(rows)
    message = _pack((17, True, batch, None))
    assert _is_batch_answer_message(message)
    call_id, ok, out, tb = round_trip((17, True, batch, None))
    assert (call_id, ok, tb) == (17, True, None) and type(out) is SampleBatch
    assert list(out) == list(batch)
    for key, column in batch.items():
        assert out[key].dtype == column.dtype and out[key].shape == column.shape
        np.testing.assert_array_equal(out[key], column)
        assert out[key].flags.writeable and out[key].ctypes.data % 16 == 0


def test_batch_answers_of_other_shapes_and_keys_get_their_own_layouts():
    # the receiver keys the layouts it decoded by their bytes: same signature, same
    # layout; any other row count, dtype or key order, another
    for rows in (5, 9, 5):
        out = round_trip((rows, True, _answer_batch(rows), None))[2]
        assert out["obs"].shape == (rows, 4) and out["actions"][-1] == rows - 1
    swapped = SampleBatch({"b": np.zeros(3, np.int32), "a": np.ones(3)})
    out = round_trip((1, True, swapped, None))[2]
    assert list(out) == ["b", "a"] and out["b"].dtype == np.int32 and out["a"][0] == 1.0


def test_batch_answer_columns_are_views_of_the_message_whatever_the_keys():
    # distinct string keys come back as fields of one structured view of the
    # message; other keys (not field names to numpy) as views made one by one
    for batch in (
        _answer_batch(6),
        SampleBatch({"": np.arange(3.0), "a b": np.zeros((3, 0)), "t": np.ones((3, 2), "M8[s]")}),
        SampleBatch({1: np.arange(4), 2: np.ones(4, np.float32)}),
        SampleBatch(),
    ):
        message = _pack((5, True, batch, None)).copy()  # writable, as a receive's buffer
        assert _is_batch_answer_message(message)
        out = _unpack(message)[2]
        assert list(out) == list(batch)
        for column, got in zip(batch.values(), out.values()):
            assert got.dtype == column.dtype and got.shape == column.shape
            np.testing.assert_array_equal(got, column)
            assert got.flags.c_contiguous and got.flags.writeable
            assert np.shares_memory(got, message) or not got.size


def test_batch_answers_that_cannot_skip_pickle_take_the_general_way():
    strided = SampleBatch({"obs": np.arange(20.0).reshape(4, 5)[:, ::2], "t": np.arange(4)})
    objects = SampleBatch({"infos": np.array([{}, {"a": 1}], dtype=object), "t": np.arange(2)})
    fields = SampleBatch({"f": np.zeros(2, dtype=[("x", "f4"), ("y", "i8")])})
    for batch in (strided, objects, fields):
        assert not _is_batch_answer_message(_pack((3, True, batch, None)))
        out = round_trip((3, True, batch, None))[2]
        for key, column in batch.items():
            assert out[key].dtype == column.dtype
            np.testing.assert_array_equal(out[key], column)
    # a failure, a traceback or a value beside the batch: the general way
    plain = _answer_batch(2)
    for other in ((3, False, plain, "tb"), (3, True, (plain,), None), ("m", True, plain, None)):
        assert not _is_batch_answer_message(_pack(other))
