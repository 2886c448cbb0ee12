from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from hpcrl.models import (
    MODEL_DEFAULTS,
    ActionDistribution,
    Categorical,
    DiagGaussian,
    FullyConnectedNetwork,
    ModelCatalog,
    MultiCategorical,
    TorchModel,
)

OBS_SPACE = spaces.Box(-1.0, 1.0, shape=(4,))


@pytest.mark.parametrize(
    ("action_space", "dist_class", "num_outputs"),
    [
        (spaces.Discrete(5), Categorical, 5),
        (spaces.MultiDiscrete([2, 3, 4]), MultiCategorical, 9),
        (spaces.Box(-1.0, 1.0, shape=(2, 3)), DiagGaussian, 12),
    ],
)
def test_action_dist_per_space(action_space, dist_class, num_outputs) -> None:
    assert ModelCatalog.get_action_dist(action_space, {}) == (dist_class, num_outputs)


def test_unsupported_action_space_is_named() -> None:
    with pytest.raises(ValueError, match="MultiBinary"):
        ModelCatalog.get_action_dist(spaces.MultiBinary(3), {})


def test_unknown_model_config_key_suggests_closest() -> None:
    with pytest.raises(ValueError, match="'fcnet_hidden'.*did you mean 'fcnet_hiddens'"):
        ModelCatalog.get_model(OBS_SPACE, spaces.Discrete(2), 2, {"fcnet_hidden": [8]})


def test_default_model_is_fcnet_with_merged_config() -> None:
    model = ModelCatalog.get_model(OBS_SPACE, spaces.Discrete(2), 2, {"fcnet_hiddens": [8]})
    assert isinstance(model, FullyConnectedNetwork)
    assert model.model_config["fcnet_hiddens"] == [8]
    assert model.model_config["fcnet_activation"] == MODEL_DEFAULTS["fcnet_activation"]
    assert model({"obs": torch.zeros(3, 4)}, [], None)[0].shape == (3, 2)


def test_model_input_size_comes_from_preprocessor() -> None:
    obs_space = spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Box(0, 1, (2, 2))})
    size = ModelCatalog.get_preprocessor(obs_space).size
    assert size == 7
    model = ModelCatalog.get_model(obs_space, spaces.Discrete(2), 2, {"fcnet_hiddens": [8]})
    assert model({"obs": torch.zeros(1, size)}, [], None)[0].shape == (1, 2)


class LinearModel(TorchModel):
    def __init__(self, obs_space, action_space, num_outputs, model_config, name, scale=1.0):
        super().__init__(obs_space, action_space, num_outputs, model_config, name)
        self.scale = scale
        self.policy = torch.nn.Linear(int(np.prod(obs_space.shape)), num_outputs)
        self.value = torch.nn.Linear(int(np.prod(obs_space.shape)), 1)

    def forward(self, input_dict, state, seq_lens):
        self._obs = input_dict["obs"]
        return self.scale * self.policy(self._obs), state

    def value_function(self):
        return self.value(self._obs).squeeze(-1)


def test_custom_model_by_registered_name() -> None:
    ModelCatalog.register_custom_model("test_catalog_linear", LinearModel)
    config = {"custom_model": "test_catalog_linear", "custom_model_config": {"scale": 2.0}}
    model = ModelCatalog.get_model(OBS_SPACE, spaces.Discrete(3), 3, config, name="linear")
    assert isinstance(model, LinearModel) and model.scale == 2.0 and model.name == "linear"


def test_custom_model_by_class() -> None:
    model = ModelCatalog.get_model(OBS_SPACE, spaces.Discrete(3), 3, {"custom_model": LinearModel})
    assert isinstance(model, LinearModel)


def test_unregistered_custom_model_lists_registered_names() -> None:
    ModelCatalog.register_custom_model("test_catalog_linear", LinearModel)
    with pytest.raises(ValueError, match="registered: .*'test_catalog_linear'"):
        ModelCatalog.get_model(OBS_SPACE, spaces.Discrete(3), 3, {"custom_model": "nope"})


def test_register_rejects_non_model_class() -> None:
    with pytest.raises(TypeError, match="TorchModel"):
        ModelCatalog.register_custom_model("bad", torch.nn.Linear)


def test_custom_action_dist_by_name() -> None:
    class HalfCategorical(Categorical):
        @classmethod
        def required_model_output_shape(cls, action_space, model_config):
            return 2 * int(action_space.n)

    ModelCatalog.register_custom_action_dist("test_catalog_half", HalfCategorical)
    dist_class, num_outputs = ModelCatalog.get_action_dist(
        spaces.Discrete(3), {"custom_action_dist": "test_catalog_half"}
    )
    assert dist_class is HalfCategorical and num_outputs == 6
    assert issubclass(dist_class, ActionDistribution)
