"""The convolutional network: default filters, channel orders, uint8 scaling, catalog."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from hpcrl.models import ModelCatalog
from hpcrl.models.fcnet import FullyConnectedNetwork
from hpcrl.models.visionnet import DEFAULT_CONV_FILTERS, VisionNetwork, default_conv_filters


def _image_space(height: int, width: int, channels: int, first: bool, dtype=np.uint8):
    shape = (channels, height, width) if first else (height, width, channels)
    high = 255 if dtype == np.uint8 else 1.0
    return gym.spaces.Box(0, high, shape, dtype)


@pytest.mark.parametrize("size", sorted(DEFAULT_CONV_FILTERS))
@pytest.mark.parametrize("first", [True, False])
def test_default_filters_give_the_expected_shapes(size, first):
    space = _image_space(*size, 3, first)
    model = VisionNetwork(space, gym.spaces.Discrete(5), 5, {"vf_share_layers": False}, "m")
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(3)]))
    logits, state = model({"obs": obs}, [], None)
    assert logits.shape == (3, 5) and state == []
    assert model.value_function().shape == (3,)
    # The last default layer has 256 channels (32 for 10x10) on a 1x1 (or small) map.
    convs = [m for m in model.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [f[0] for f in DEFAULT_CONV_FILTERS[size]]
    features = model.trunk(model.images(obs))
    if size in ((84, 84), (42, 42)):
        assert features.shape == (3, 256)  # RLlib's 1x1x256 after the last, valid conv


def test_channel_orders_see_the_same_image():
    """Channels-last input, transposed to channels-first, gives the same outputs."""
    torch.manual_seed(0)
    last = VisionNetwork(_image_space(42, 42, 4, False), gym.spaces.Discrete(3), 3, {}, "m")
    torch.manual_seed(0)
    first = VisionNetwork(_image_space(42, 42, 4, True), gym.spaces.Discrete(3), 3, {}, "m")
    images = np.random.default_rng(0).integers(0, 256, (2, 42, 42, 4), dtype=np.uint8)
    out_last, _ = last({"obs": torch.as_tensor(images)}, [], None)
    out_first, _ = first({"obs": torch.as_tensor(images.transpose(0, 3, 1, 2).copy())}, [], None)
    torch.testing.assert_close(out_last, out_first)


def test_uint8_frames_are_scaled_inside_the_model():
    space_u8 = _image_space(42, 42, 1, True)
    space_f = _image_space(42, 42, 1, True, dtype=np.float32)
    torch.manual_seed(1)
    model_u8 = VisionNetwork(space_u8, gym.spaces.Discrete(2), 2, {}, "m")
    torch.manual_seed(1)
    model_f = VisionNetwork(space_f, gym.spaces.Discrete(2), 2, {}, "m")
    frames = np.random.default_rng(1).integers(0, 256, (3, 1, 42, 42), dtype=np.uint8)
    out_u8, _ = model_u8({"obs": torch.as_tensor(frames)}, [], None)
    out_f, _ = model_f({"obs": torch.as_tensor(frames / np.float32(255))}, [], None)
    torch.testing.assert_close(out_u8, out_f)


def test_custom_filters_post_fcnet_and_no_outputs():
    space = _image_space(30, 40, 3, False)
    config = {
        "conv_filters": [[8, [3, 3], 2], [16, [3, 3], 2]],
        "conv_activation": "elu",
        "post_fcnet_hiddens": [32],
        "vf_share_layers": True,
    }
    model = VisionNetwork(space, gym.spaces.Discrete(4), None, config, "m")
    assert model.num_outputs == 32
    features, _ = model({"obs": torch.zeros(2, 30, 40, 3, dtype=torch.uint8)}, [], None)
    assert features.shape == (2, 32)


def test_catalog_picks_the_vision_network_for_images_only():
    image = _image_space(84, 84, 4, True)
    assert isinstance(ModelCatalog.get_model(image, gym.spaces.Discrete(2), 2), VisionNetwork)
    board = gym.spaces.Box(0, 1, (3, 3, 2), np.int8)  # a board game's planes
    model = ModelCatalog.get_model(board, gym.spaces.Discrete(9), 9)
    assert isinstance(model, FullyConnectedNetwork)


def test_bad_filters_and_sizes_name_the_fix():
    with pytest.raises(ValueError, match="no default conv_filters for images of 96x96"):
        default_conv_filters((96, 96, 3))
    with pytest.raises(ValueError, match="not \\[out_channels"):
        VisionNetwork(
            _image_space(42, 42, 1, True),
            gym.spaces.Discrete(2),
            2,
            {"conv_filters": [[8, 3]]},
            "m",
        )
    with pytest.raises(ValueError, match="kernel \\[11, 11\\] but its input is only 6x6"):
        VisionNetwork(
            _image_space(42, 42, 1, True),
            gym.spaces.Discrete(2),
            2,
            {"conv_filters": [[8, [4, 4], 2], [8, [4, 4], 4], [8, [11, 11], 1]]},
            "m",
        )


def test_per_layer_padding_builds_the_nature_network():
    """RLlib's new-stack filter entries name their padding: all "valid" is the DQN
    paper's network, 84 -> 20 -> 9 -> 7."""
    filters = [[32, [8, 8], 4, "valid"], [64, [4, 4], 2, "valid"], [64, [3, 3], 1, "valid"]]
    space = _image_space(84, 84, 4, True)
    config = {"conv_filters": filters, "post_fcnet_hiddens": [512], "vf_share_layers": True}
    model = VisionNetwork(space, gym.spaces.Discrete(6), 6, config, "m")
    convs = model.trunk[0]
    assert convs(torch.zeros(1, 4, 84, 84)).shape == (1, 64 * 7 * 7)
    assert not any(isinstance(m, torch.nn.ZeroPad2d) for m in convs)
    with pytest.raises(ValueError, match="padding in \\('same', 'valid'\\)"):
        VisionNetwork(space, gym.spaces.Discrete(6), 6, {"conv_filters": [[8, 3, 1, "full"]]}, "m")
