"""V-trace against the paper's sums and hand-worked numbers; the padded layout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpcrl.evaluation.vtrace import (
    batch_layout,
    from_time_major,
    sequence_layout,
    to_time_major,
    vtrace,
)
from hpcrl.policy.sample_batch import SampleBatch


def reference_vtrace(log_rhos, discounts, rewards, values, next_values, length, rho_bar, pg_bar):
    """IMPALA eq. 1 for one sequence of ``length`` real steps, as explicit sums."""
    rhos = np.exp(log_rhos[:length])
    clipped = rhos if rho_bar is None else np.minimum(rho_bar, rhos)
    pg_rhos = rhos if pg_bar is None else np.minimum(pg_bar, rhos)
    cs = np.minimum(1.0, rhos)
    r, d, v, nv = (x[:length] for x in (rewards, discounts, values, next_values))
    deltas = clipped * (r + d * nv - v)
    vs = np.zeros(length)
    for t in range(length):
        vs[t] = v[t] + sum(
            np.prod([d[i] * cs[i] for i in range(t, s)]) * deltas[s] for s in range(t, length)
        )
    vs_next = np.append(vs[1:], nv[-1])
    pg = pg_rhos * (r + d * vs_next - v)
    return vs, pg


def random_inputs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    shape = (max(lengths), len(lengths))
    terminated = rng.random(shape) < 0.2
    return {
        "log_rhos": rng.normal(0.0, 1.5, shape),  # rho from ~0.01 to ~100: clipping matters
        "discounts": 0.9 * (1.0 - terminated),
        "rewards": rng.normal(size=shape),
        "values": rng.normal(size=shape),
        "next_values": rng.normal(size=shape),
    }


def padding_mask(lengths):
    return np.arange(max(lengths))[:, None] < np.asarray(lengths)[None, :]


def run_vtrace(inputs, mask=None, **kwargs):
    tensors = {name: torch.as_tensor(x) for name, x in inputs.items()}
    mask = None if mask is None else torch.as_tensor(mask)
    out = vtrace(**tensors, mask=mask, **kwargs)
    return out.vs.numpy(), out.pg_advantages.numpy()


@pytest.mark.parametrize("rho_bar, pg_bar", [(1.0, 1.0), (2.0, 0.5), (None, None), (1.0, None)])
def test_matches_the_papers_sums_on_padded_sequences(rho_bar, pg_bar):
    lengths = [7, 3, 5, 1]
    inputs = random_inputs(lengths)
    vs, pg = run_vtrace(
        inputs, padding_mask(lengths), clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_bar
    )
    for s, length in enumerate(lengths):
        column = {name: x[:, s] for name, x in inputs.items()}
        want_vs, want_pg = reference_vtrace(**column, length=length, rho_bar=rho_bar, pg_bar=pg_bar)
        np.testing.assert_allclose(vs[:length, s], want_vs, rtol=1e-5)
        np.testing.assert_allclose(pg[:length, s], want_pg, rtol=1e-5)


def test_on_policy_targets_are_bootstrapped_discounted_returns():
    gamma, rewards, values, bootstrap = 0.9, np.array([1.0, -2.0, 3.0, 0.5]), np.arange(4.0), 7.0
    next_values = np.append(values[1:], bootstrap)
    vs, pg = run_vtrace(
        {
            "log_rhos": np.zeros((4, 1)),
            "discounts": np.full((4, 1), gamma),
            "rewards": rewards[:, None],
            "values": values[:, None],
            "next_values": next_values[:, None],
        }
    )
    returns = [
        sum(gamma ** (k - t) * rewards[k] for k in range(t, 4)) + gamma ** (4 - t) * bootstrap
        for t in range(4)
    ]
    np.testing.assert_allclose(vs[:, 0], returns, rtol=1e-6)
    np.testing.assert_allclose(
        pg[:, 0], rewards + gamma * np.append(vs[1:, 0], bootstrap) - values, rtol=1e-6
    )


def test_termination_ignores_the_last_next_value_and_truncation_bootstraps():
    # gamma 0.5, r = [1, 2], V = [10, 20], next V = [20, 40], on-policy.
    # Terminated: vs_1 = 2, vs_0 = 1 + .5 * 2 = 2; pg_1 = 2 - 20 = -18, pg_0 = 2 - 10 = -8.
    # Truncated: vs_1 = 2 + .5 * 40 = 22, vs_0 = 1 + .5 * 22 = 12; pg_1 = 22 - 20, pg_0 = 12 - 10.
    # A third, one-step sequence pads both to check nothing crosses over.
    inputs = {
        "log_rhos": np.zeros((2, 3)),
        "discounts": np.array([[0.5, 0.5, 0.5], [0.0, 0.5, 0.0]]),
        "rewards": np.array([[1.0, 1.0, 3.0], [2.0, 2.0, 0.0]]),
        "values": np.array([[10.0, 10.0, 1.0], [20.0, 20.0, 0.0]]),
        "next_values": np.array([[20.0, 20.0, 4.0], [40.0, 40.0, 0.0]]),
    }
    vs, pg = run_vtrace(inputs, padding_mask([2, 2, 1]))
    np.testing.assert_allclose(vs, [[2.0, 12.0, 5.0], [2.0, 22.0, 0.0]])
    np.testing.assert_allclose(pg, [[-8.0, 2.0, 4.0], [-18.0, 2.0, 0.0]])


def test_clip_thresholds_none_and_finite():
    # rho = 5 at both steps, r = [0, 1], V = next V = 0, discounts [1, 0].
    # delta_1 = min(rho_bar, 5); c_0 = min(1, 5) = 1 whatever rho_bar, so vs_0 = vs_1 = delta_1;
    # pg_0 = min(pg_bar, 5) * vs_1, pg_1 = min(pg_bar, 5) * 1.
    inputs = {
        "log_rhos": np.full((2, 1), math.log(5.0)),
        "discounts": np.array([[1.0], [0.0]]),
        "rewards": np.array([[0.0], [1.0]]),
        "values": np.zeros((2, 1)),
        "next_values": np.zeros((2, 1)),
    }
    cases = {
        (1.0, 1.0): ([1.0, 1.0], [1.0, 1.0]),
        (None, None): ([5.0, 5.0], [25.0, 5.0]),
        (1.0, None): ([1.0, 1.0], [5.0, 5.0]),
        (None, 2.0): ([5.0, 5.0], [10.0, 2.0]),
    }
    for (rho_bar, pg_bar), (want_vs, want_pg) in cases.items():
        vs, pg = run_vtrace(inputs, clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_bar)
        np.testing.assert_allclose(vs[:, 0], want_vs, rtol=1e-6, err_msg=f"{rho_bar}, {pg_bar}")
        np.testing.assert_allclose(pg[:, 0], want_pg, rtol=1e-6, err_msg=f"{rho_bar}, {pg_bar}")


def test_padding_does_not_leak_and_is_zero():
    lengths = [6, 2, 4]
    mask = padding_mask(lengths)
    inputs = random_inputs(lengths, seed=1)
    vs, pg = run_vtrace(inputs, mask)
    garbage = {name: np.where(mask, x, np.nan) for name, x in inputs.items()}
    garbage["values"] = np.where(mask, inputs["values"], 1e30)
    garbage_vs, garbage_pg = run_vtrace(garbage, mask)
    np.testing.assert_array_equal(garbage_vs, vs)
    np.testing.assert_array_equal(garbage_pg, pg)
    assert not vs[~mask].any() and not pg[~mask].any()


def test_outputs_are_detached_and_keep_the_dtype():
    values = torch.zeros(3, 2, requires_grad=True)
    out = vtrace(*(torch.zeros(3, 2) for _ in range(3)), values, values * 2)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad
    assert out.vs.dtype == torch.float32


def test_shape_mismatch_names_the_shapes():
    good = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=r"rewards \(3, 2\), values \(3, 1\)"):
        vtrace(good, good, good, torch.zeros(3, 1), good)
    with pytest.raises(ValueError, match=r"2-D"):
        vtrace(*(torch.zeros(3) for _ in range(5)))
    with pytest.raises(ValueError, match=r"mask \(2, 2\)"):
        vtrace(good, good, good, good, good, mask=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="padding after"):
        gap = torch.tensor([[True, False], [True, False], [True, True]])
        vtrace(good, good, good, good, good, mask=gap)


def test_layout_round_trip_on_random_lengths():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 9, size=6)
    starts = np.cumsum(lengths) - lengths
    layout = sequence_layout(starts, torch.as_tensor(lengths))
    num_rows, max_length = int(lengths.sum()), int(lengths.max())
    assert layout.index.shape == layout.mask.shape == (max_length, 6)
    assert layout.index.dtype == torch.long and layout.mask.dtype == torch.bool
    np.testing.assert_array_equal(layout.mask.sum(0), lengths)
    np.testing.assert_array_equal(layout.last, starts + lengths - 1)

    rows = torch.as_tensor(rng.normal(size=(num_rows, 3)))
    padded = to_time_major(rows, layout)
    assert padded.shape == (max_length, 6, 3)
    assert not padded[~layout.mask].any()
    for s, (start, length) in enumerate(zip(starts, lengths)):
        torch.testing.assert_close(padded[:length, s], rows[start : start + length])
    torch.testing.assert_close(from_time_major(padded, layout), rows)
    first = rows[:, 0]
    torch.testing.assert_close(from_time_major(to_time_major(first, layout), layout), first)


def test_layout_rejects_bad_input():
    with pytest.raises(ValueError, match=r"at least one row; got lengths \[2, 0\]"):
        sequence_layout([0, 2], [2, 0])
    with pytest.raises(ValueError, match="back to back"):
        sequence_layout([0, 3], [2, 2])
    layout = sequence_layout([0, 2], [2, 3])
    with pytest.raises(ValueError, match="covers 5 rows; got 4"):
        to_time_major(torch.zeros(4), layout)
    with pytest.raises(ValueError, match=r"\[T, S\] = \(3, 2\)"):
        from_time_major(torch.zeros(2, 3), layout)


def test_batch_layout_follows_episodes():
    batch = SampleBatch(
        {"rewards": np.arange(5, dtype=np.float32), "eps_id": np.array([4, 4, 4, 8, 8])}
    )
    layout = batch_layout(batch)
    assert layout.index.tolist() == [[0, 3], [1, 4], [2, 0]]
    assert layout.last.tolist() == [2, 4]
    padded = to_time_major(torch.as_tensor(batch["rewards"]), layout)
    assert padded.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 0.0]]
    assert batch_layout(SampleBatch({"rewards": np.ones(3)})).mask.shape == (3, 1)
    assert batch_layout(SampleBatch({"rewards": np.ones(0), "eps_id": []})).mask.shape == (0, 0)
