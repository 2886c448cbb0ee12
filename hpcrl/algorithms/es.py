"""Evolution strategies (Salimans et al. 2017) and augmented random search (Mania
et al. 2018): the shared noise table and the two updates.

Both perturb a flat parameter vector ``theta`` with antithetic pairs
``theta +/- noise_stdev * eps_i``, where each ``eps_i`` is a slice of a table
of Gaussian noise that every process builds from the same seed, so a
perturbation travels as one integer (its index in the table), never as
parameters. From the returns of the pairs:

- ES: ``g = sum_i (c(r+_i) - c(r-_i)) eps_i / n`` with ``c`` the centred ranks
  of all ``2n`` returns (fitness shaping), then an Adam step on
  ``-g + l2_coeff * theta`` (RLlib's form: ``noise_stdev`` is folded into the
  step size).
- ARS (V1, and V2 with observation normalisation): keep the ``b`` pairs with
  the largest ``max(r+, r-)``, then
  ``theta += stepsize / (b * sigma_R) * sum_k (r+_k - r-_k) eps_k`` with
  ``sigma_R`` the standard deviation of those ``2b`` returns.

These are the pieces every rank applies identically; the rollouts and the
exchange of (index, returns) are not built yet.
"""

from __future__ import annotations

import numpy as np


class SharedNoiseTable:
    """``size`` float32 standard normals drawn from ``seed``: the same on every
    process that builds it with the same arguments, so only indices are sent.

    Example:
        >>> a, b = SharedNoiseTable(seed=1, size=1000), SharedNoiseTable(seed=1, size=1000)
        >>> index = a.sample_index(np.random.default_rng(0), dim=10)
        >>> bool(np.array_equal(a.get(index, 10), b.get(index, 10)))
        True
    """

    def __init__(self, seed: int, size: int) -> None:
        if size < 1:
            raise ValueError(f"noise_size must be >= 1, got {size}")
        self.seed = seed
        self.noise = np.random.default_rng(seed).standard_normal(size, dtype=np.float32)

    def get(self, index: int, dim: int) -> np.ndarray:
        """The ``dim`` numbers from ``index`` on (a view)."""
        return self.noise[index : index + dim]

    def sample_index(self, rng: np.random.Generator, dim: int) -> int:
        """A random start with ``dim`` numbers after it."""
        if dim > len(self.noise):
            raise ValueError(
                f"the policy has {dim} parameters but noise_size is {len(self.noise)}: set "
                f"noise_size to at least {dim} (many times more, so perturbations differ)"
            )
        return int(rng.integers(0, len(self.noise) - dim + 1))


def centered_ranks(values: np.ndarray) -> np.ndarray:
    """The ranks of ``values`` (any shape) scaled to [-0.5, 0.5], in their shape.

    Example:
        >>> centered_ranks(np.array([[3.0, -1.0], [10.0, 2.0]])).tolist()
        [[0.16666666666666663, -0.5], [0.5, -0.16666666666666669]]
    """
    flat = values.ravel()
    ranks = np.empty(flat.size, dtype=np.float64)
    ranks[flat.argsort(kind="stable")] = np.arange(flat.size)
    if flat.size > 1:
        ranks = ranks / (flat.size - 1) - 0.5
    else:
        ranks[:] = 0.0
    return ranks.reshape(values.shape)


def _weighted_noise(
    table: SharedNoiseTable, indices: np.ndarray, weights: np.ndarray, dim: int
) -> np.ndarray:
    total = np.zeros(dim, dtype=np.float64)
    for index, weight in zip(indices, weights):
        total += weight * table.get(int(index), dim)
    return total


def es_gradient(
    table: SharedNoiseTable, indices: np.ndarray, returns: np.ndarray, dim: int
) -> np.ndarray:
    """ES's estimate of the gradient of the expected return: ``returns`` is
    ``[n, 2]`` (the return with ``+eps_i``, then with ``-eps_i``), ranks centred
    over all ``2n``."""
    shaped = centered_ranks(np.asarray(returns, dtype=np.float64))
    weights = shaped[:, 0] - shaped[:, 1]
    return _weighted_noise(table, indices, weights, dim) / len(indices)


def ars_step(
    table: SharedNoiseTable,
    indices: np.ndarray,
    returns: np.ndarray,
    dim: int,
    num_top: int,
    stepsize: float,
) -> np.ndarray:
    """ARS's change of ``theta``: the ``num_top`` pairs with the largest
    ``max(r+, r-)``, each difference weighted by ``stepsize / (b * sigma_R)``."""
    returns = np.asarray(returns, dtype=np.float64)
    if not 1 <= num_top <= len(returns):
        raise ValueError(
            f"rollouts_used must be between 1 and the {len(returns)} pairs evaluated, got {num_top}"
        )
    top = np.argsort(-returns.max(axis=1), kind="stable")[:num_top]
    used = returns[top]
    sigma = used.std()
    if sigma == 0:  # every return alike: no direction is better
        return np.zeros(dim)
    weights = (used[:, 0] - used[:, 1]) * stepsize / (num_top * sigma)
    return _weighted_noise(table, np.asarray(indices)[top], weights, dim)
