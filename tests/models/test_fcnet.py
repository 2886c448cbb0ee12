from __future__ import annotations

import math

import pytest
import torch
from gymnasium import spaces

from hpcrl.models import MODEL_DEFAULTS, FullyConnectedNetwork

OBS_SPACE = spaces.Box(-1.0, 1.0, shape=(2, 3))
ACTION_SPACE = spaces.Discrete(4)


def _config(**overrides) -> dict:
    return {**MODEL_DEFAULTS, "fcnet_hiddens": [32, 16], **overrides}


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_output_and_value_shapes() -> None:
    model = FullyConnectedNetwork(OBS_SPACE, ACTION_SPACE, 4, _config(), "model")
    outputs, state = model({"obs": torch.randn(7, 6)}, [], None)
    assert outputs.shape == (7, 4) and state == []
    assert model.value_function().shape == (7,)
    assert not model.is_recurrent() and model.get_initial_state() == []


def test_shared_value_branch_has_fewer_parameters() -> None:
    separate = FullyConnectedNetwork(OBS_SPACE, ACTION_SPACE, 4, _config(), "separate")
    shared = FullyConnectedNetwork(
        OBS_SPACE, ACTION_SPACE, 4, _config(vf_share_layers=True), "shared"
    )
    trunk_params = (6 * 32 + 32) + (32 * 16 + 16)
    assert _num_params(separate) - _num_params(shared) == trunk_params
    shared({"obs": torch.randn(3, 6)}, [], None)
    assert shared.value_function().shape == (3,)


def test_free_log_std_appends_learned_log_std() -> None:
    action_space = spaces.Box(-1.0, 1.0, shape=(3,))
    model = FullyConnectedNetwork(OBS_SPACE, action_space, 6, _config(free_log_std=True), "m")
    outputs, _ = model({"obs": torch.randn(5, 6)}, [], None)
    assert outputs.shape == (5, 6)
    assert torch.equal(outputs[:, 3:], torch.zeros(5, 3))
    assert model.logits.out_features == 3
    outputs.sum().backward()
    assert model.log_std.grad is not None
    with pytest.raises(ValueError, match="even"):
        FullyConnectedNetwork(OBS_SPACE, action_space, 5, _config(free_log_std=True), "m")


def test_no_outputs_returns_last_hidden_layer() -> None:
    model = FullyConnectedNetwork(OBS_SPACE, ACTION_SPACE, 0, _config(), "m")
    outputs, _ = model({"obs": torch.randn(2, 6)}, [], None)
    assert outputs.shape == (2, 16) and model.num_outputs == 16


def test_orthogonal_init_gains() -> None:
    model = FullyConnectedNetwork(OBS_SPACE, ACTION_SPACE, 4, _config(), "m")
    # Orthogonal rows/columns scaled by the gain: the largest singular value is the gain.
    assert torch.linalg.matrix_norm(model.trunk[0].weight, ord=2).item() == pytest.approx(
        math.sqrt(2), rel=1e-4
    )
    assert torch.linalg.matrix_norm(model.logits.weight, ord=2).item() == pytest.approx(
        0.01, rel=1e-4
    )
    assert model.value_head.weight.norm().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.count_nonzero(model.trunk[0].bias) == 0


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "swish", "silu", "linear"])
def test_every_activation_builds(activation: str) -> None:
    model = FullyConnectedNetwork(
        OBS_SPACE, ACTION_SPACE, 4, _config(fcnet_activation=activation), "m"
    )
    assert model({"obs": torch.randn(2, 6)}, [], None)[0].shape == (2, 4)


def test_bad_activation_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'sigmoid'.*tanh, relu"):
        FullyConnectedNetwork(OBS_SPACE, ACTION_SPACE, 4, _config(fcnet_activation="sigmoid"), "m")


def test_value_function_before_forward_raises() -> None:
    model = FullyConnectedNetwork(OBS_SPACE, ACTION_SPACE, 4, _config(), "m")
    with pytest.raises(RuntimeError, match="before forward"):
        model.value_function()
