"""Action distributions parameterised by model outputs.

Sampling takes an explicit ``torch.Generator`` so that rollouts are reproducible from a
seed, which is why these classes do not wrap ``torch.distributions``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

_LOG_2PI = math.log(2.0 * math.pi)


class ActionDistribution:
    """A batch of action distributions built from model outputs.

    Args:
        inputs: The model outputs parameterising the distribution, ``[B, num_outputs]``.
        model: The model that produced ``inputs`` (some distributions read its spaces).

    Example:
        >>> dist = Categorical(torch.zeros(4, 3))
        >>> actions = dist.sample(torch.Generator().manual_seed(0))
        >>> dist.logp(actions).shape
        torch.Size([4])
    """

    def __init__(self, inputs: torch.Tensor, model: Any = None) -> None:
        self.inputs = inputs
        self.model = model
        self._last_sample: torch.Tensor | None = None

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws one action per batch row, using ``generator`` for the randomness."""
        self._last_sample = self._sample(generator)
        return self._last_sample

    def deterministic_sample(self) -> torch.Tensor:
        """Returns the most likely action of each batch row."""
        self._last_sample = self._deterministic_sample()
        return self._last_sample

    def sampled_action_logp(self) -> torch.Tensor:
        """Returns ``logp`` of the actions drawn by the last (deterministic) sample."""
        if self._last_sample is None:
            raise RuntimeError("sampled_action_logp() called before sample()")
        return self.logp(self._last_sample)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability (density) of ``actions``, shape ``[B]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement logp")

    def entropy(self) -> torch.Tensor:
        """Entropy of each distribution, shape ``[B]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement entropy")

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        """KL divergence ``KL(self || other)`` per batch row, shape ``[B]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement kl")

    @classmethod
    def required_model_output_shape(
        cls, action_space: spaces.Space, model_config: dict[str, Any] | None
    ) -> int:
        """Number of model outputs this distribution needs for ``action_space``."""
        raise NotImplementedError(f"{cls.__name__} must implement required_model_output_shape")

    def _sample(self, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _sample")

    def _deterministic_sample(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _deterministic_sample")


class Categorical(ActionDistribution):
    """Categorical distribution over ``n`` actions from logits ``[B, n]``; actions int64 [B].

    Example:
        >>> dist = Categorical(torch.tensor([[0.0, 1.0]]))
        >>> dist.deterministic_sample()
        tensor([1])
    """

    def __init__(self, inputs: torch.Tensor, model: Any = None) -> None:
        super().__init__(inputs, model)
        self.log_probs = torch.log_softmax(inputs, dim=-1)

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        index = actions.long().reshape(-1, 1)
        return self.log_probs.gather(-1, index).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        _check_same_type(self, other)
        return (self.log_probs.exp() * (self.log_probs - other.log_probs)).sum(-1)

    @classmethod
    def required_model_output_shape(
        cls, action_space: spaces.Space, model_config: dict[str, Any] | None
    ) -> int:
        return int(action_space.n)

    def _sample(self, generator: torch.Generator | None) -> torch.Tensor:
        probs = self.log_probs.detach().exp()
        # torch.multinomial(probs, 1) draws argmax(probs / q) with q ~ Exp(1) (the
        # exponential form of the Gumbel-max trick). Written out it draws the same
        # actions from the same generator, without multinomial's input checks: four
        # reductions, each a host sync, that cost more than the draw on small batches.
        # exp(log_softmax) is never negative, inf or all-zero: only NaN is invalid.
        if math.isnan(probs.sum().item()):
            raise RuntimeError("probability tensor contains nan (are the logits nan?)")
        q = torch.empty_like(probs).exponential_(1.0, generator=generator)
        # On the CPU, q is 0 with probability about 2**-53 per entry (torch notes this in
        # its multinomial); 0 / 0 is nan and argmax picks nan, so an action of probability
        # 0 (masked, see action_mask.py) could be drawn. With q >= tiny its ratio is 0
        # and the largest ratio, that of an action with probability >= 1/n, is positive.
        q.clamp_(min=torch.finfo(q.dtype).tiny)
        return (probs / q).argmax(-1)

    def _deterministic_sample(self) -> torch.Tensor:
        return self.inputs.argmax(-1)


class MultiCategorical(ActionDistribution):
    """Independent categoricals, one per MultiDiscrete component; actions int64 ``[B, k]``.

    ``logp``, ``entropy`` and ``kl`` are summed over the components.

    Args:
        inputs: Concatenated logits, ``[B, sum(input_lens)]``.
        model: A model whose ``action_space`` is MultiDiscrete; used when ``input_lens`` is
            not given.
        input_lens: Number of choices of each component (the space's ``nvec``).

    Example:
        >>> dist = MultiCategorical(torch.zeros(2, 5), input_lens=[2, 3])
        >>> dist.sample(torch.Generator().manual_seed(0)).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        model: Any = None,
        input_lens: list[int] | np.ndarray | None = None,
    ) -> None:
        super().__init__(inputs, model)
        if input_lens is None:
            action_space = getattr(model, "action_space", None)
            if not isinstance(action_space, spaces.MultiDiscrete):
                raise ValueError(
                    "MultiCategorical needs input_lens, or a model whose action_space is "
                    f"MultiDiscrete (got {action_space!r})"
                )
            input_lens = action_space.nvec
        self.input_lens = [int(n) for n in np.asarray(input_lens).reshape(-1)]
        if sum(self.input_lens) != inputs.shape[-1]:
            raise ValueError(
                f"inputs have {inputs.shape[-1]} columns, input_lens {self.input_lens} "
                f"need {sum(self.input_lens)}"
            )
        self.categoricals = [
            Categorical(logits, model) for logits in torch.split(inputs, self.input_lens, -1)
        ]

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        actions = actions.reshape(actions.shape[0], -1)
        return sum(c.logp(actions[:, i]) for i, c in enumerate(self.categoricals))

    def entropy(self) -> torch.Tensor:
        return sum(c.entropy() for c in self.categoricals)

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        _check_same_type(self, other)
        return sum(c.kl(o) for c, o in zip(self.categoricals, other.categoricals))

    @classmethod
    def required_model_output_shape(
        cls, action_space: spaces.Space, model_config: dict[str, Any] | None
    ) -> int:
        return int(np.sum(action_space.nvec))

    def _sample(self, generator: torch.Generator | None) -> torch.Tensor:
        return torch.stack([c._sample(generator) for c in self.categoricals], dim=1)

    def _deterministic_sample(self) -> torch.Tensor:
        return torch.stack([c._deterministic_sample() for c in self.categoricals], dim=1)


class DiagGaussian(ActionDistribution):
    """Gaussian with diagonal covariance from ``inputs = concat(mean, log_std)``, ``[B, 2d]``.

    Actions are float ``[B, d]`` (a Box action shape flattened) and are not squashed: the
    policy clips them to the space's bounds. ``logp``, ``entropy`` and ``kl`` are summed
    over the ``d`` dimensions.

    Example:
        >>> dist = DiagGaussian(torch.zeros(3, 4))
        >>> dist.sample(torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """

    def __init__(self, inputs: torch.Tensor, model: Any = None) -> None:
        super().__init__(inputs, model)
        if inputs.shape[-1] % 2:
            raise ValueError(
                f"DiagGaussian needs an even number of inputs (means and log-stds), "
                f"got {inputs.shape[-1]}"
            )
        self.mean, self.log_std = torch.chunk(inputs, 2, dim=-1)
        self.std = self.log_std.exp()

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        actions = actions.reshape(self.mean.shape)
        z = (actions - self.mean) / self.std
        return -0.5 * (z * z + _LOG_2PI).sum(-1) - self.log_std.sum(-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 * (_LOG_2PI + 1.0)).sum(-1)

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        _check_same_type(self, other)
        variance_ratio_term = (self.std**2 + (self.mean - other.mean) ** 2) / (2.0 * other.std**2)
        return (other.log_std - self.log_std + variance_ratio_term - 0.5).sum(-1)

    @classmethod
    def required_model_output_shape(
        cls, action_space: spaces.Space, model_config: dict[str, Any] | None
    ) -> int:
        return 2 * int(np.prod(action_space.shape, dtype=np.int64))

    def _sample(self, generator: torch.Generator | None) -> torch.Tensor:
        mean = self.mean.detach()
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + self.std.detach() * noise

    def _deterministic_sample(self) -> torch.Tensor:
        return self.mean.detach()


class Deterministic(ActionDistribution):
    """A point mass: ``inputs`` are the actions themselves (for DDPG-style policies).

    ``logp``, ``entropy`` and ``kl`` are zero.
    """

    def logp(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.inputs.shape[0], dtype=self.inputs.dtype, device=self.inputs.device)

    def entropy(self) -> torch.Tensor:
        return torch.zeros(self.inputs.shape[0], dtype=self.inputs.dtype, device=self.inputs.device)

    def kl(self, other: ActionDistribution) -> torch.Tensor:
        return torch.zeros(self.inputs.shape[0], dtype=self.inputs.dtype, device=self.inputs.device)

    @classmethod
    def required_model_output_shape(
        cls, action_space: spaces.Space, model_config: dict[str, Any] | None
    ) -> int:
        return int(np.prod(action_space.shape, dtype=np.int64))

    def _sample(self, generator: torch.Generator | None) -> torch.Tensor:
        return self.inputs

    def _deterministic_sample(self) -> torch.Tensor:
        return self.inputs


def _check_same_type(dist: ActionDistribution, other: ActionDistribution) -> None:
    """Raises TypeError unless ``other`` is the same kind of distribution as ``dist``."""
    if not isinstance(other, type(dist)):
        raise TypeError(
            f"kl() between {type(dist).__name__} and {type(other).__name__} is not defined; "
            f"pass another {type(dist).__name__}"
        )
