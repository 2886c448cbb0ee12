"""The base class of every torch model a policy uses."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces


class TorchModel(torch.nn.Module):
    """A torch module mapping preprocessed observations to action-distribution inputs.

    Subclasses implement :meth:`forward` and :meth:`value_function`; recurrent models also
    override :meth:`get_initial_state`.

    Args:
        obs_space: The (unflattened) observation space; ``input_dict["obs"]`` holds its
            preprocessed form, ``[B, get_preprocessor(obs_space).size]`` float32.
        action_space: The action space.
        num_outputs: Size of the output of :meth:`forward` (the action-distribution inputs).
        model_config: The model config, merged over ``MODEL_DEFAULTS``.
        name: A name for this model, used in summaries.

    Example:
        >>> class Linear(TorchModel):
        ...     def __init__(self, obs_space, action_space, num_outputs, model_config, name):
        ...         super().__init__(obs_space, action_space, num_outputs, model_config, name)
        ...         self.pi = torch.nn.Linear(obs_space.shape[0], num_outputs)
        ...         self.vf = torch.nn.Linear(obs_space.shape[0], 1)
        ...     def forward(self, input_dict, state, seq_lens):
        ...         self._obs = input_dict["obs"]
        ...         return self.pi(self._obs), state
        ...     def value_function(self):
        ...         return self.vf(self._obs).squeeze(-1)
    """

    def __init__(
        self,
        obs_space: spaces.Space,
        action_space: spaces.Space,
        num_outputs: int,
        model_config: dict[str, Any],
        name: str,
    ) -> None:
        super().__init__()
        self.obs_space = obs_space
        self.action_space = action_space
        self.num_outputs = num_outputs
        self.model_config = model_config
        self.name = name

    def forward(
        self,
        input_dict: dict[str, torch.Tensor],
        state: list[torch.Tensor],
        seq_lens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Computes the action-distribution inputs for a batch.

        Args:
            input_dict: At least ``"obs"``: the preprocessed observations, ``[B, obs_size]``.
            state: The recurrent state tensors (empty for feed-forward models).
            seq_lens: Sequence lengths ``[num_sequences]`` for recurrent models, else None.

        Returns:
            ``(outputs [B, num_outputs], new_state)``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def value_function(self) -> torch.Tensor:
        """Returns the value estimates ``[B]`` for the batch of the last :meth:`forward`."""
        raise NotImplementedError(f"{type(self).__name__} must implement value_function()")

    def get_initial_state(self) -> list[np.ndarray]:
        """Returns the initial recurrent state of one sequence (empty if not recurrent)."""
        return []

    def is_recurrent(self) -> bool:
        """Returns whether this model carries state between time steps."""
        return len(self.get_initial_state()) > 0

    def from_batch(self, batch: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The forward pass over a (tensor) train batch, as every loss makes it.

        Passes ``obs`` (and ``prev_actions`` / ``prev_rewards`` where the batch has
        them). For a recurrent model the batch is cut into its sequences (the
        ``seq_id`` column that ``TorchPolicy.load_batch`` adds), each starting from
        its first row's stored ``state_in_N``; outputs stay one per row.
        """
        input_dict = _inputs(batch, "obs", "prev_actions", "prev_rewards")
        if not self.is_recurrent():
            return self(input_dict, [], None)
        from hpcrl.models.recurrent import batch_sequences

        starts, seq_lens = batch_sequences(batch)
        state = [batch[f"state_in_{i}"][starts] for i in range(len(self.get_initial_state()))]
        return self(input_dict, state, seq_lens)

    def from_next_obs(self, batch: Any, rows: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One step from the ``new_obs`` of ``rows`` of a batch: the step after each
        row, from its ``state_out_N``, its action and reward as the previous ones
        (bootstrap values at the end of a fragment)."""
        input_dict = {"obs": _take(batch["new_obs"], rows)}
        for key, previous in (("prev_actions", "actions"), ("prev_rewards", "rewards")):
            if key in batch and previous in batch:
                input_dict[key] = batch[previous][rows]
        state = [batch[f"state_out_{i}"][rows] for i in range(len(self.get_initial_state()))]
        return self(input_dict, state, None)


def _inputs(batch: Any, *keys: str) -> dict[str, Any]:
    return {key: batch[key] for key in keys if key in batch}


def _take(value: Any, rows: Any) -> Any:
    if isinstance(value, dict):
        return {k: _take(v, rows) for k, v in value.items()}
    return value[rows]
