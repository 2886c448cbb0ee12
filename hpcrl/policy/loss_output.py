"""What a loss returns: its scalar, named terms, and per-row outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The key of the learner stats in what learn_on_batch and compute_gradients return.
LEARNER_STATS_KEY = "learner_stats"


@dataclass
class LossOutput:
    """A loss with its parts (TorchRL's named loss terms; RLlib's extra learn fetches).

    A loss function may return a scalar tensor, or a ``LossOutput``:

    - ``total``: the scalar that is minimised;
    - ``terms``: named scalars (``policy_loss``, ``vf_loss``, ``kl``...) reported as
      learner stats (averaged over the minibatches of the last epoch);
    - ``per_row``: tensors with one value per row of the train batch (e.g. TD
      errors for prioritised replay). They come back from ``learn_on_batch`` and
      ``compute_gradients`` as numpy arrays beside ``learner_stats``, and from
      minibatch SGD in the order of the rows of the whole train batch.

    Example:
        >>> import torch
        >>> out = LossOutput(torch.tensor(1.5), terms={"vf_loss": 0.5},
        ...                  per_row={"td_error": torch.zeros(4)})
        >>> float(out.total), sorted(out.per_row)
        (1.5, ['td_error'])
    """

    total: Any
    terms: dict[str, Any] = field(default_factory=dict)
    per_row: dict[str, Any] = field(default_factory=dict)
