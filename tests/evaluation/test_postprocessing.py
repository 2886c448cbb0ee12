"""Advantages against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from hpcrl.evaluation.postprocessing import Postprocessing, compute_advantages, discount_cumsum
from hpcrl.policy.sample_batch import SampleBatch


def reference_gae(rewards, values, last_r, gamma, lam):
    """Textbook GAE for one trajectory, written as a plain loop."""
    values = list(values) + [last_r]
    adv, running = [], 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * values[t + 1] - values[t]
        running = delta + gamma * lam * running
        adv.append(running)
    return np.array(adv[::-1])


def test_gae_three_steps_by_hand():
    # r = [1, 2, 3], V = [0.5, 1.0, 1.5], bootstrap 2.0, gamma 0.9, lambda 0.8
    # deltas: 1 + .9*1 - .5 = 1.4; 2 + .9*1.5 - 1 = 2.35; 3 + .9*2 - 1.5 = 3.3
    # A2 = 3.3; A1 = 2.35 + .72*3.3 = 4.726; A0 = 1.4 + .72*4.726 = 4.80272
    batch = SampleBatch(
        {"rewards": np.array([1.0, 2.0, 3.0]), "vf_preds": np.array([0.5, 1.0, 1.5])}
    )
    compute_advantages(batch, 2.0, gamma=0.9, lambda_=0.8)
    np.testing.assert_allclose(batch[Postprocessing.ADVANTAGES], [4.80272, 4.726, 3.3], rtol=1e-6)
    np.testing.assert_allclose(
        batch[Postprocessing.VALUE_TARGETS], [5.30272, 5.726, 4.8], rtol=1e-6
    )


def test_discounted_returns_without_critic():
    # returns with gamma 0.5 and last_r 0: [1 + .5*(1 + .5*1), 1 + .5*1, 1] = [1.75, 1.5, 1]
    batch = SampleBatch({"rewards": np.ones(3)})
    compute_advantages(batch, 0.0, gamma=0.5, use_gae=False, use_critic=False)
    np.testing.assert_allclose(batch[Postprocessing.ADVANTAGES], [1.75, 1.5, 1.0])
    np.testing.assert_allclose(batch[Postprocessing.VALUE_TARGETS], [0, 0, 0])


def test_returns_minus_baseline_with_critic_no_gae():
    batch = SampleBatch({"rewards": np.ones(2), "vf_preds": np.array([1.0, 0.5])})
    compute_advantages(batch, 4.0, gamma=0.5, use_gae=False, use_critic=True)
    # returns: [1 + .5*(1 + .5*4), 1 + .5*4] = [2.5, 3.0]
    np.testing.assert_allclose(batch[Postprocessing.VALUE_TARGETS], [2.5, 3.0])
    np.testing.assert_allclose(batch[Postprocessing.ADVANTAGES], [1.5, 2.5])


def test_many_trajectories_in_one_batch_match_one_at_a_time():
    rng = np.random.default_rng(0)
    lengths = [5, 1, 12, 3]
    eps = np.repeat(np.arange(len(lengths)) + 100, lengths)
    rewards = rng.normal(size=len(eps))
    values = rng.normal(size=len(eps))
    last_r = rng.normal(size=len(lengths))
    batch = SampleBatch({"rewards": rewards, "vf_preds": values, "eps_id": eps})
    compute_advantages(batch, last_r, gamma=0.97, lambda_=0.9)
    start = 0
    for i, n in enumerate(lengths):
        expected = reference_gae(
            rewards[start : start + n], values[start : start + n], last_r[i], 0.97, 0.9
        )
        np.testing.assert_allclose(
            batch[Postprocessing.ADVANTAGES][start : start + n], expected, rtol=1e-5, atol=1e-6
        )
        start += n


def test_discount_cumsum_segments_and_tail():
    x = np.array([1.0, 1.0, 1.0, 1.0])
    out = discount_cumsum(x, 0.5, bounds=np.array([0, 2, 4]), tail=np.array([0.0, 8.0]))
    np.testing.assert_allclose(out, [1.5, 1.0, 1 + 0.5 * 5.0, 5.0])


def test_gae_without_critic_is_an_error():
    batch = SampleBatch({"rewards": np.ones(2)})
    with pytest.raises(ValueError, match="critic"):
        compute_advantages(batch, 0.0, use_gae=True, use_critic=False)
