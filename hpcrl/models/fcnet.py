"""A fully connected (MLP) policy and value network."""

from __future__ import annotations

import math
from typing import Any

import torch
from gymnasium import spaces
from torch import nn

from hpcrl.models.preprocessors import get_preprocessor
from hpcrl.models.torch_model import TorchModel

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "swish": nn.SiLU,
    "silu": nn.SiLU,
    "linear": nn.Identity,
}


class FullyConnectedNetwork(TorchModel):
    """An MLP trunk with a policy head and a value head.

    Reads ``fcnet_hiddens``, ``fcnet_activation``, ``vf_share_layers`` and ``free_log_std``
    from ``model_config``. Weights use orthogonal init (hidden gain sqrt(2), policy output
    0.01, value output 1.0) and zero biases, as in CleanRL and Stable-Baselines3.

    With ``vf_share_layers`` the value head sits on the policy trunk; otherwise the value
    branch is a separate MLP of the same hidden sizes. With ``free_log_std`` the network
    outputs ``num_outputs // 2`` means followed by a learned, state-independent log-std.
    With ``num_outputs`` 0 or None the last hidden layer is the output (a trunk,
    without a value head).

    Example:
        >>> import gymnasium as gym
        >>> config = {"fcnet_hiddens": [64, 64], "fcnet_activation": "tanh",
        ...           "vf_share_layers": False, "free_log_std": False}
        >>> model = FullyConnectedNetwork(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2),
        ...                               2, config, "model")
        >>> logits, _ = model({"obs": torch.zeros(8, 4)}, [], None)
        >>> logits.shape, model.value_function().shape
        (torch.Size([8, 2]), torch.Size([8]))
    """

    def __init__(
        self,
        obs_space: spaces.Space,
        action_space: spaces.Space,
        num_outputs: int | None,
        model_config: dict[str, Any],
        name: str,
    ) -> None:
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        hiddens = [int(h) for h in model_config.get("fcnet_hiddens", [256, 256])]
        if any(h <= 0 for h in hiddens):
            raise ValueError(f"fcnet_hiddens must be positive integers, got {hiddens}")
        activation = _activation_class(model_config.get("fcnet_activation", "tanh"))
        self.vf_share_layers = bool(model_config.get("vf_share_layers", False))
        self.free_log_std = bool(model_config.get("free_log_std", False))
        obs_size = get_preprocessor(obs_space).size

        self.trunk = _mlp(obs_size, hiddens, activation)
        last_size = hiddens[-1] if hiddens else obs_size

        self.logits: nn.Linear | None = None
        self.log_std: nn.Parameter | None = None
        if num_outputs:
            num_means = num_outputs
            if self.free_log_std:
                if num_outputs % 2:
                    raise ValueError(
                        f"free_log_std needs an even num_outputs (means and log-stds), "
                        f"got {num_outputs}"
                    )
                num_means = num_outputs // 2
                self.log_std = nn.Parameter(torch.zeros(num_means))
            self.logits = _init_linear(nn.Linear(last_size, num_means), gain=0.01)
        else:
            self.num_outputs = last_size

        # A trunk (no outputs) has no value head: whatever wraps it brings its own.
        self.value_branch = (
            None if self.vf_share_layers or not num_outputs else _mlp(obs_size, hiddens, activation)
        )
        self.value_head = _init_linear(nn.Linear(last_size, 1), gain=1.0) if num_outputs else None

        self._features: torch.Tensor | None = None
        self._obs: torch.Tensor | None = None

    def forward(
        self,
        input_dict: dict[str, torch.Tensor],
        state: list[torch.Tensor],
        seq_lens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        obs = input_dict["obs"].float().reshape(input_dict["obs"].shape[0], -1)
        self._obs = obs
        self._features = self.trunk(obs)
        if self.logits is None:
            return self._features, state
        outputs = self.logits(self._features)
        if self.log_std is not None:
            outputs = torch.cat([outputs, self.log_std.expand_as(outputs)], dim=1)
        return outputs, state

    def value_function(self) -> torch.Tensor:
        if self.value_head is None:
            raise RuntimeError("a FullyConnectedNetwork built without outputs has no value head")
        if self._features is None or self._obs is None:
            raise RuntimeError("value_function() called before forward()")
        features = self._features if self.value_branch is None else self.value_branch(self._obs)
        return self.value_head(features).squeeze(-1)


def _activation_class(name: str) -> type[nn.Module]:
    """Looks up an activation by name, raising ValueError for unknown names."""
    if name not in ACTIVATIONS:
        raise ValueError(
            f"unknown fcnet_activation {name!r}; valid values: {', '.join(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]


def _init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with ``gain`` and zero bias."""
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


def _mlp(in_size: int, hiddens: list[int], activation: type[nn.Module]) -> nn.Sequential:
    """Linear + activation layers of the given hidden sizes (empty means identity)."""
    layers: list[nn.Module] = []
    for size in hiddens:
        layers += [_init_linear(nn.Linear(in_size, size), gain=math.sqrt(2)), activation()]
        in_size = size
    return nn.Sequential(*layers)
