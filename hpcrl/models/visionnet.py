"""A convolutional policy and value network for image observations (rank-3 Box)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from hpcrl.models.fcnet import _activation_class, _init_linear, _mlp
from hpcrl.models.torch_model import TorchModel

# RLlib's default filters ([out_channels, [kernel_h, kernel_w], stride] per layer) by
# image size: the last layer of each reduces the image to 1x1.
DEFAULT_CONV_FILTERS: dict[tuple[int, int], list[list[Any]]] = {
    (84, 84): [[16, [8, 8], 4], [32, [4, 4], 2], [256, [11, 11], 1]],
    (42, 42): [[16, [4, 4], 2], [32, [4, 4], 2], [256, [11, 11], 1]],
    (64, 64): [[32, [4, 4], 2], [64, [4, 4], 2], [128, [4, 4], 2], [256, [4, 4], 2]],
    (10, 10): [[16, [5, 5], 2], [32, [5, 5], 2]],
}


# Images whose height or width is below this go to the MLP: too small to convolve
# (board games' planes, e.g. tic-tac-toe's 3x3x2), unless conv_filters are given.
MIN_IMAGE_SIDE = 10


def is_image_space(space: spaces.Space, model_config: dict[str, Any] | None = None) -> bool:
    """Whether the catalog builds a VisionNetwork for ``space``: a Box of rank 3, at
    least ``MIN_IMAGE_SIDE`` high and wide unless ``conv_filters`` are set.

    Example:
        >>> is_image_space(spaces.Box(0, 255, (84, 84, 4), np.uint8))
        True
        >>> is_image_space(spaces.Box(0, 1, (3, 3, 2)))
        False
    """
    if not (isinstance(space, spaces.Box) and len(space.shape) == 3):
        return False
    if (model_config or {}).get("conv_filters"):
        return True
    shape = space.shape
    height, width = shape[1:] if channels_first(shape) else shape[:2]
    return min(height, width) >= MIN_IMAGE_SIDE


def channels_first(shape: tuple[int, ...]) -> bool:
    """Whether an image of ``shape`` is laid out ``(C, H, W)`` rather than ``(H, W, C)``.

    Channels come first when the first axis is shorter than the last (``(4, 84, 84)``
    from a frame stack, ``(3, 64, 64)`` from torchvision-style envs); otherwise they
    come last (``(84, 84, 4)``, ``(210, 160, 3)`` from ALE), RLlib's convention.

    Example:
        >>> channels_first((4, 84, 84)), channels_first((84, 84, 4))
        (True, False)
    """
    return shape[0] < shape[-1]


def default_conv_filters(shape: tuple[int, ...]) -> list[list[Any]]:
    """RLlib's default ``conv_filters`` for an image observation of ``shape``.

    Raises:
        ValueError: For a size with no default (the message says how to set them).

    Example:
        >>> default_conv_filters((4, 84, 84))[0]
        [16, [8, 8], 4]
    """
    height_width = tuple(shape[1:]) if channels_first(shape) else tuple(shape[:2])
    if height_width not in DEFAULT_CONV_FILTERS:
        sizes = ", ".join(f"{h}x{w}" for h, w in DEFAULT_CONV_FILTERS)
        raise ValueError(
            f"no default conv_filters for images of {height_width[0]}x{height_width[1]} "
            f"(observation shape {tuple(shape)}); defaults exist for {sizes}. Set "
            "model: {conv_filters: [[out_channels, [kernel_h, kernel_w], stride], ...]}"
        )
    return [list(layer) for layer in DEFAULT_CONV_FILTERS[height_width]]


class VisionNetwork(TorchModel):
    """Convolutions, then an optional MLP (``post_fcnet_hiddens``), then the heads.

    Reads ``conv_filters`` (None: RLlib's default for the image size, see
    ``DEFAULT_CONV_FILTERS``), ``conv_activation``, ``post_fcnet_hiddens``,
    ``post_fcnet_activation`` and ``vf_share_layers`` from ``model_config``. A filter
    ``[out_channels, [kernel_h, kernel_w], stride]`` may end with its padding, "same"
    (keep ``ceil(size / stride)``) or "valid" (none), as in RLlib's new stack; without
    one every convolution but the last is "same" and the last "valid" (RLlib's layout:
    84x84 -> 21x21 -> 11x11 -> 1x1 with the default filters).

    Images may be channels-first or channels-last (see :func:`channels_first`); uint8
    observations are scaled to [0, 1] inside the model, so batches, messages, files and
    replay buffers carry them as uint8. With ``vf_share_layers`` the value head sits on
    the policy's features, otherwise on a second convolutional branch of the same
    shape. With ``num_outputs`` 0 or None the features are the output (a trunk for
    Q networks and recurrent wrappers, without a value head).

    Example:
        >>> space = spaces.Box(0, 255, (4, 84, 84), np.uint8)
        >>> model = VisionNetwork(space, spaces.Discrete(6), 6, {"vf_share_layers": True}, "m")
        >>> logits, _ = model({"obs": torch.zeros(2, 4, 84, 84, dtype=torch.uint8)}, [], None)
        >>> logits.shape, model.value_function().shape
        (torch.Size([2, 6]), torch.Size([2]))
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
        if not is_image_space(obs_space):
            raise ValueError(f"VisionNetwork needs a rank-3 Box observation, got {obs_space}")
        shape = tuple(int(s) for s in obs_space.shape)
        self.channels_first = channels_first(shape)
        self.in_shape = shape if self.channels_first else (shape[2], shape[0], shape[1])
        self.scale = 1.0 / 255.0 if obs_space.dtype == np.uint8 else None
        filters = model_config.get("conv_filters") or default_conv_filters(shape)
        _check_filters(filters)
        conv_activation = _activation_class(model_config.get("conv_activation", "relu"))
        post_activation = _activation_class(model_config.get("post_fcnet_activation", "relu"))
        hiddens = [int(h) for h in model_config.get("post_fcnet_hiddens") or []]
        self.vf_share_layers = bool(model_config.get("vf_share_layers", False))

        def branch() -> tuple[nn.Sequential, int]:
            convs = _conv_stack(self.in_shape, filters, conv_activation)
            with torch.no_grad():
                flat = int(convs(torch.zeros(1, *self.in_shape)).shape[1])
            return nn.Sequential(convs, _mlp(flat, hiddens, post_activation)), (
                hiddens[-1] if hiddens else flat
            )

        self.trunk, features = branch()
        self.logits: nn.Linear | None = None
        if num_outputs:
            self.logits = _init_linear(nn.Linear(features, num_outputs), gain=0.01)
        else:
            self.num_outputs = features
        # A trunk (no outputs) has no value head: whatever wraps it brings its own.
        self.value_branch = None if self.vf_share_layers or not num_outputs else branch()[0]
        self.value_head = _init_linear(nn.Linear(features, 1), gain=1.0) if num_outputs else None
        self._features: torch.Tensor | None = None
        self._images: torch.Tensor | None = None

    def images(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations as float ``[B, C, H, W]`` (uint8 scaled to [0, 1])."""
        obs = obs.reshape(obs.shape[0], *self.obs_space.shape)
        if not self.channels_first:
            obs = obs.permute(0, 3, 1, 2)
        obs = obs.float()
        return obs * self.scale if self.scale is not None else obs

    def forward(
        self,
        input_dict: dict[str, torch.Tensor],
        state: list[torch.Tensor],
        seq_lens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._images = self.images(input_dict["obs"])
        self._features = self.trunk(self._images)
        if self.logits is None:
            return self._features, state
        return self.logits(self._features), state

    def value_function(self) -> torch.Tensor:
        if self.value_head is None:
            raise RuntimeError("a VisionNetwork built without outputs has no value head")
        if self._features is None or self._images is None:
            raise RuntimeError("value_function() called before forward()")
        features = self._features if self.value_branch is None else self.value_branch(self._images)
        return self.value_head(features).squeeze(-1)


PADDINGS = ("same", "valid")


def _check_filters(filters: Any) -> None:
    for layer in filters:
        ok = (
            isinstance(layer, (list, tuple))
            and len(layer) in (3, 4)
            and int(layer[0]) > 0
            and int(layer[2]) > 0
            and (isinstance(layer[1], int) or len(layer[1]) == 2)
            and (len(layer) == 3 or layer[3] in PADDINGS)
        )
        if not ok:
            raise ValueError(
                f"conv_filters entry {layer!r} is not [out_channels, [kernel_h, kernel_w], "
                f"stride] or [..., padding] with positive sizes and padding in {PADDINGS}"
            )


def _conv_stack(
    in_shape: tuple[int, int, int], filters: list[list[Any]], activation: type[nn.Module]
) -> nn.Sequential:
    """Conv layers, then a flatten. A layer pads as its fourth entry says ("same":
    output ``ceil(size / stride)``, as TensorFlow; "valid": none); without one, every
    layer but the last is "same" (RLlib's layout)."""
    channels, height, width = in_shape
    layers: list[nn.Module] = []
    for i, layer in enumerate(filters):
        out_channels, kernel, stride = layer[:3]
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(int(k) for k in kernel)
        stride = int(stride)
        padding = layer[3] if len(layer) == 4 else ("valid" if i == len(filters) - 1 else "same")
        symmetric: tuple[int, int] = (0, 0)
        if padding == "valid":
            if kernel[0] > height or kernel[1] > width:
                raise ValueError(
                    f"conv_filters layer {i} has kernel {list(kernel)} but its input is only "
                    f"{height}x{width}; use a smaller kernel or fewer strides before it"
                )
            height, width = (height - kernel[0]) // stride + 1, (width - kernel[1]) // stride + 1
        else:
            pad_h = _same_padding(height, kernel[0], stride)
            pad_w = _same_padding(width, kernel[1], stride)
            if pad_h % 2 or pad_w % 2:
                # TensorFlow puts the odd pixel at the bottom and right.
                layers.append(
                    nn.ZeroPad2d((pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
                )
            else:  # Padding inside the convolution saves a copy of the input.
                symmetric = (pad_h // 2, pad_w // 2)
            height, width = math.ceil(height / stride), math.ceil(width / stride)
        conv = nn.Conv2d(channels, int(out_channels), kernel, stride, padding=symmetric)
        nn.init.orthogonal_(conv.weight, gain=math.sqrt(2))
        nn.init.zeros_(conv.bias)
        layers += [conv, activation()]
        channels = int(out_channels)
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def _same_padding(size: int, kernel: int, stride: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + kernel - size, 0)
