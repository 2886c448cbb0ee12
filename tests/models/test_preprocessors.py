from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from hpcrl.models import get_preprocessor


def test_box_2d_is_flattened() -> None:
    space = spaces.Box(-1.0, 1.0, shape=(2, 3), dtype=np.float64)
    preprocessor = get_preprocessor(space)
    assert preprocessor.shape == (6,) and preprocessor.size == 6
    batch = np.arange(24, dtype=np.float64).reshape(4, 2, 3)
    out = preprocessor.transform(batch)
    assert out.dtype == np.float32 and out.shape == (4, 6)
    np.testing.assert_array_equal(out[1], np.arange(6, 12))


def test_discrete_is_one_hot_and_respects_start() -> None:
    preprocessor = get_preprocessor(spaces.Discrete(4, start=-1))
    assert preprocessor.shape == (4,)
    out = preprocessor.transform([-1, 2, 0])
    np.testing.assert_array_equal(out, [[1, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0]])
    assert out.dtype == np.float32


def test_discrete_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="out of range"):
        get_preprocessor(spaces.Discrete(3)).transform([3])


def test_multi_discrete_concatenates_one_hots() -> None:
    preprocessor = get_preprocessor(spaces.MultiDiscrete([2, 3]))
    assert preprocessor.size == 5
    out = preprocessor.transform(np.array([[0, 2], [1, 0]]))
    np.testing.assert_array_equal(out, [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]])


def test_dict_flattens_each_entry_in_key_order() -> None:
    space = spaces.Dict({"position": spaces.Box(-1, 1, (2,)), "mode": spaces.Discrete(3)})
    preprocessor = get_preprocessor(space)
    assert preprocessor.size == 5
    batch = {"position": np.array([[0.5, -0.5], [1.0, 0.0]]), "mode": np.array([2, 0])}
    out = preprocessor.transform(batch)
    # gymnasium sorts Dict keys: "mode" comes before "position".
    np.testing.assert_array_equal(out, [[0, 0, 1, 0.5, -0.5], [1, 0, 0, 1.0, 0.0]])
    rows = [{"position": [0.5, -0.5], "mode": 2}, {"position": [1.0, 0.0], "mode": 0}]
    np.testing.assert_array_equal(preprocessor.transform(rows), out)


def test_tuple_flattens_and_concatenates() -> None:
    space = spaces.Tuple((spaces.Discrete(2), spaces.Box(0, 1, (3,))))
    preprocessor = get_preprocessor(space)
    out = preprocessor.transform((np.array([1, 0]), np.ones((2, 3))))
    np.testing.assert_array_equal(out, [[0, 1, 1, 1, 1], [1, 0, 1, 1, 1]])


def test_unsupported_space_names_space_and_supported_ones() -> None:
    with pytest.raises(ValueError, match=r"Text.*supported spaces: Box, Discrete"):
        get_preprocessor(spaces.Text(5))
