from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpcrl.models import Categorical, DiagGaussian, MultiCategorical
from hpcrl.models.distributions import Deterministic


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


LOGITS = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [-3.0, 4.0, 1.0]])
OTHER_LOGITS = np.array([[0.3, -1.0, 2.0], [1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])


def test_categorical_logp_entropy_kl_match_reference() -> None:
    dist = Categorical(torch.tensor(LOGITS))
    other = Categorical(torch.tensor(OTHER_LOGITS))
    logp, logq = _log_softmax(LOGITS), _log_softmax(OTHER_LOGITS)
    p = np.exp(logp)
    actions = np.array([1, 0, 2])

    np.testing.assert_allclose(dist.logp(torch.tensor(actions)), logp[np.arange(3), actions])
    np.testing.assert_allclose(dist.entropy(), -(p * logp).sum(-1))
    np.testing.assert_allclose(dist.kl(other), (p * (logp - logq)).sum(-1))
    np.testing.assert_allclose(dist.kl(dist), np.zeros(3), atol=1e-12)
    assert dist.entropy()[1].item() == pytest.approx(math.log(3))


def test_categorical_logp_is_stable_for_large_logits() -> None:
    dist = Categorical(torch.tensor([[1000.0, 0.0]]))
    assert dist.logp(torch.tensor([1])).item() == pytest.approx(-1000.0)
    assert torch.isfinite(dist.entropy()).all()


def test_categorical_sampling_is_reproducible_per_seed() -> None:
    dist = Categorical(torch.zeros(64, 10))
    first = dist.sample(torch.Generator().manual_seed(1))
    again = dist.sample(torch.Generator().manual_seed(1))
    other = dist.sample(torch.Generator().manual_seed(2))
    assert first.dtype == torch.int64 and first.shape == (64,)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_categorical_sample_frequencies_match_probs() -> None:
    probs = np.array([0.1, 0.6, 0.3])
    n = 20000
    dist = Categorical(torch.log(torch.tensor(probs)).expand(n, 3))
    samples = dist.sample(torch.Generator().manual_seed(0)).numpy()
    frequencies = np.bincount(samples, minlength=3) / n
    np.testing.assert_allclose(frequencies, probs, atol=0.015)


def test_categorical_deterministic_sample_and_sampled_logp() -> None:
    dist = Categorical(torch.tensor(LOGITS))
    assert dist.deterministic_sample().tolist() == [1, 0, 1]
    expected = _log_softmax(LOGITS)[[0, 1, 2], [1, 0, 1]]
    np.testing.assert_allclose(dist.sampled_action_logp(), expected)


def test_sampled_action_logp_before_sample_raises() -> None:
    with pytest.raises(RuntimeError, match="before sample"):
        Categorical(torch.zeros(1, 2)).sampled_action_logp()


def _gaussian_reference(mean, log_std, other_mean, other_log_std, actions):
    std, other_std = np.exp(log_std), np.exp(other_log_std)
    logp = np.sum(
        -((actions - mean) ** 2) / (2 * std**2) - log_std - 0.5 * np.log(2 * np.pi), axis=-1
    )
    entropy = np.sum(0.5 * np.log(2 * np.pi * np.e * std**2), axis=-1)
    kl = np.sum(
        np.log(other_std / std) + (std**2 + (mean - other_mean) ** 2) / (2 * other_std**2) - 0.5,
        axis=-1,
    )
    return logp, entropy, kl


def test_diag_gaussian_logp_entropy_kl_match_reference() -> None:
    rng = np.random.default_rng(0)
    mean, other_mean = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    log_std, other_log_std = rng.normal(size=(5, 3)) * 0.5, rng.normal(size=(5, 3)) * 0.5
    actions = rng.normal(size=(5, 3))
    dist = DiagGaussian(torch.tensor(np.concatenate([mean, log_std], axis=1)))
    other = DiagGaussian(torch.tensor(np.concatenate([other_mean, other_log_std], axis=1)))

    logp, entropy, kl = _gaussian_reference(mean, log_std, other_mean, other_log_std, actions)
    np.testing.assert_allclose(dist.logp(torch.tensor(actions)), logp)
    np.testing.assert_allclose(dist.entropy(), entropy)
    np.testing.assert_allclose(dist.kl(other), kl)
    np.testing.assert_allclose(dist.kl(dist), np.zeros(5), atol=1e-12)


def test_diag_gaussian_sampling_is_reproducible_and_has_right_moments() -> None:
    inputs = torch.tensor([[1.0, -2.0, math.log(0.5), math.log(2.0)]]).expand(50000, 4)
    dist = DiagGaussian(inputs)
    first = dist.sample(torch.Generator().manual_seed(3))
    assert first.shape == (50000, 2) and first.dtype == torch.float32
    assert torch.equal(first, dist.sample(torch.Generator().manual_seed(3)))
    assert not torch.equal(first, dist.sample(torch.Generator().manual_seed(4)))
    np.testing.assert_allclose(first.mean(0), [1.0, -2.0], atol=0.03)
    np.testing.assert_allclose(first.std(0), [0.5, 2.0], rtol=0.02)
    assert torch.equal(dist.deterministic_sample()[0], torch.tensor([1.0, -2.0]))


def test_diag_gaussian_rejects_odd_inputs() -> None:
    with pytest.raises(ValueError, match="even"):
        DiagGaussian(torch.zeros(2, 3))


def test_multi_categorical_sums_components() -> None:
    logits = torch.tensor(np.concatenate([LOGITS[:, :2], OTHER_LOGITS], axis=1))
    dist = MultiCategorical(logits, input_lens=[2, 3])
    first, second = Categorical(logits[:, :2]), Categorical(logits[:, 2:])
    actions = torch.tensor([[0, 2], [1, 1], [1, 0]])

    torch.testing.assert_close(
        dist.logp(actions), first.logp(actions[:, 0]) + second.logp(actions[:, 1])
    )
    torch.testing.assert_close(dist.entropy(), first.entropy() + second.entropy())
    torch.testing.assert_close(dist.kl(dist), torch.zeros(3, dtype=torch.float64))

    sample = dist.sample(torch.Generator().manual_seed(0))
    assert sample.shape == (3, 2) and sample.dtype == torch.int64
    assert torch.equal(sample, dist.sample(torch.Generator().manual_seed(0)))
    assert (sample[:, 0] < 2).all() and (sample[:, 1] < 3).all()


def test_multi_categorical_reads_nvec_from_model() -> None:
    from gymnasium.spaces import MultiDiscrete

    class FakeModel:
        action_space = MultiDiscrete([2, 3])

    dist = MultiCategorical(torch.zeros(4, 5), FakeModel())
    assert dist.input_lens == [2, 3]
    with pytest.raises(ValueError, match="input_lens"):
        MultiCategorical(torch.zeros(4, 5))


def test_kl_between_different_kinds_raises() -> None:
    with pytest.raises(TypeError, match="Categorical"):
        Categorical(torch.zeros(1, 2)).kl(DiagGaussian(torch.zeros(1, 2)))


def test_deterministic_returns_inputs() -> None:
    inputs = torch.tensor([[0.5, -0.5]])
    dist = Deterministic(inputs)
    assert torch.equal(dist.sample(), inputs)
    assert dist.logp(inputs).tolist() == [0.0]
