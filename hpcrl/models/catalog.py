"""The model catalog: picks models, action distributions and preprocessors for spaces."""

from __future__ import annotations

import copy
import difflib
from typing import Any

from gymnasium import spaces

from hpcrl.models.action_mask import ActionMaskModel, has_action_mask, observation_without_mask
from hpcrl.models.distributions import (
    ActionDistribution,
    Categorical,
    DiagGaussian,
    MultiCategorical,
)
from hpcrl.models.fcnet import FullyConnectedNetwork
from hpcrl.models.preprocessors import Preprocessor, get_preprocessor
from hpcrl.models.recurrent import RecurrentNetwork, RecurrentWrapper
from hpcrl.models.torch_model import TorchModel
from hpcrl.models.visionnet import VisionNetwork, is_image_space

MODEL_DEFAULTS: dict[str, Any] = {
    # Hidden layer sizes of the fully connected network.
    "fcnet_hiddens": [256, 256],
    # Activation of the hidden layers: "tanh", "relu", "elu", "swish"/"silu" or "linear".
    "fcnet_activation": "tanh",
    # Whether the value head shares the policy's hidden layers (else a separate MLP).
    "vf_share_layers": False,
    # Whether a Gaussian policy's log-std is a learned, state-independent parameter
    # instead of half of the network's outputs.
    "free_log_std": False,
    # A model class (a TorchModel subclass) or the name it was registered under with
    # ModelCatalog.register_custom_model; None uses FullyConnectedNetwork.
    "custom_model": None,
    # Keyword arguments passed to the custom model's constructor.
    "custom_model_config": {},
    # An ActionDistribution subclass or the name it was registered under with
    # ModelCatalog.register_custom_action_dist; None picks one from the action space.
    "custom_action_dist": None,
    # Convolutions for image observations (rank-3 Box): [[out_channels, [kernel_h,
    # kernel_w], stride], ...]; None: RLlib's defaults for 84x84, 42x42, 64x64, 10x10.
    "conv_filters": None,
    # Activation after each convolution (same names as fcnet_activation).
    "conv_activation": "relu",
    # Hidden layers between the convolutions and the heads of the vision network.
    "post_fcnet_hiddens": [],
    # Activation of those layers.
    "post_fcnet_activation": "relu",
    # Side of the square frames of Atari's DeepMind preprocessing (RLlib's key; 84 when
    # unset, 42 as in RLlib's atari-ppo files).
    "dim": None,
    # Wrap the model in a recurrent layer (hpcrl.models.recurrent.RecurrentWrapper).
    "use_lstm": False,
    # The recurrent layer: "lstm" or "gru".
    "rnn_cell": "lstm",
    # Units of the recurrent layer.
    "lstm_cell_size": 256,
    # Feed the previous action (one-hot for discrete spaces) to the recurrent layer.
    "lstm_use_prev_action": False,
    # Feed the previous reward to the recurrent layer.
    "lstm_use_prev_reward": False,
    # Longest sequence (in time steps) a recurrent model is trained on.
    "max_seq_len": 20,
}


class ModelCatalog:
    """Registry and factory for models, action distributions and preprocessors.

    Example:
        >>> import gymnasium as gym
        >>> obs_space, action_space = gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2)
        >>> dist_class, num_outputs = ModelCatalog.get_action_dist(action_space, {})
        >>> model = ModelCatalog.get_model(obs_space, action_space, num_outputs,
        ...                                {"fcnet_hiddens": [64, 64]})
        >>> dist_class.__name__, type(model).__name__
        ('Categorical', 'FullyConnectedNetwork')
    """

    _custom_models: dict[str, type[TorchModel]] = {}
    _custom_action_dists: dict[str, type[ActionDistribution]] = {}

    @classmethod
    def register_custom_model(cls, name: str, model_class: type[TorchModel]) -> None:
        """Registers ``model_class`` so that ``{"custom_model": name}`` selects it.

        Raises:
            TypeError: If ``model_class`` is not a TorchModel subclass.
        """
        if not (isinstance(model_class, type) and issubclass(model_class, TorchModel)):
            raise TypeError(
                f"custom model {name!r} must be a TorchModel subclass, got {model_class!r}"
            )
        cls._custom_models[name] = model_class

    @classmethod
    def register_custom_action_dist(cls, name: str, dist_class: type[ActionDistribution]) -> None:
        """Registers ``dist_class`` so that ``{"custom_action_dist": name}`` selects it.

        Raises:
            TypeError: If ``dist_class`` is not an ActionDistribution subclass.
        """
        if not (isinstance(dist_class, type) and issubclass(dist_class, ActionDistribution)):
            raise TypeError(
                f"custom action distribution {name!r} must be an ActionDistribution "
                f"subclass, got {dist_class!r}"
            )
        cls._custom_action_dists[name] = dist_class

    @classmethod
    def get_action_dist(
        cls, action_space: spaces.Space, model_config: dict[str, Any] | None = None
    ) -> tuple[type[ActionDistribution], int]:
        """Returns the action-distribution class for ``action_space`` and its input size.

        Discrete gives Categorical (``n`` inputs), MultiDiscrete gives MultiCategorical
        (``sum(nvec)``), Box gives DiagGaussian (``2 * prod(shape)``); a
        ``custom_action_dist`` in ``model_config`` takes precedence.

        Raises:
            ValueError: If the space is not supported or the config is invalid.
        """
        config = merge_model_config(model_config)
        custom = config["custom_action_dist"]
        if custom is not None:
            registry = cls._custom_action_dists
            dist_class = _lookup(custom, registry, ActionDistribution, "action_dist")
        elif isinstance(action_space, spaces.Discrete):
            dist_class = Categorical
        elif isinstance(action_space, spaces.MultiDiscrete):
            dist_class = MultiCategorical
        elif isinstance(action_space, spaces.Box):
            dist_class = DiagGaussian
        else:
            raise ValueError(
                f"no action distribution for action space {action_space!r}; supported: "
                "Discrete, MultiDiscrete, Box (or set model_config['custom_action_dist'])"
            )
        return dist_class, int(dist_class.required_model_output_shape(action_space, config))

    @classmethod
    def get_model(
        cls,
        obs_space: spaces.Space,
        action_space: spaces.Space,
        num_outputs: int | None,
        model_config: dict[str, Any] | None = None,
        name: str = "model",
    ) -> TorchModel:
        """Builds the model ``model_config`` asks for.

        Args:
            obs_space: The observation space (the model sees it preprocessed, flattened to
                ``get_preprocessor(obs_space).size`` floats).
            action_space: The action space.
            num_outputs: Size of the model output, usually from :meth:`get_action_dist`.
            model_config: Overrides of ``MODEL_DEFAULTS``.
            name: A name for the model.

        Returns:
            The custom model if ``custom_model`` is set (constructed with
            ``custom_model_config`` as keyword arguments), else a VisionNetwork for
            image observations (a rank-3 Box, see ``is_image_space``) and a
            FullyConnectedNetwork for the rest. With ``use_lstm`` that model is built
            without outputs and wrapped in a RecurrentWrapper (an LSTM or GRU, then
            the heads).
            If ``obs_space`` is a Dict with an ``"action_mask"`` entry, that model is built
            for the observation without the mask and wrapped in an ActionMaskModel, which
            gives illegal actions zero probability.

        Raises:
            ValueError: For unknown config keys, unregistered custom model names, an
                unsupported observation space, or an action mask that does not fit the
                action space.
        """
        config = merge_model_config(model_config)
        get_preprocessor(obs_space)  # Fails early for observation spaces we cannot flatten.
        if has_action_mask(obs_space):
            inner_space = observation_without_mask(obs_space)
            inner_model = cls.get_model(inner_space, action_space, num_outputs, config, name)
            return ActionMaskModel(obs_space, inner_model)
        use_lstm = bool(config["use_lstm"])
        inner_outputs = None if use_lstm else num_outputs
        custom = config["custom_model"]
        if custom is not None:
            model_class = _lookup(custom, cls._custom_models, TorchModel, "model")
            if use_lstm and issubclass(model_class, RecurrentNetwork):
                raise ValueError(
                    f"use_lstm wraps a model in a recurrent layer, but {model_class.__name__} "
                    "is recurrent already; drop use_lstm from the model config"
                )
            model = model_class(
                obs_space,
                action_space,
                inner_outputs,
                config,
                name,
                **config["custom_model_config"],
            )
        elif is_image_space(obs_space, config):
            model = VisionNetwork(obs_space, action_space, inner_outputs, config, name)
        else:
            model = FullyConnectedNetwork(obs_space, action_space, inner_outputs, config, name)
        if not use_lstm:
            return model
        if model.is_recurrent():
            raise ValueError(
                f"use_lstm wraps a model in a recurrent layer, but {type(model).__name__} is "
                "recurrent already; drop use_lstm from the model config"
            )
        return RecurrentWrapper(model, num_outputs, config)

    @staticmethod
    def get_preprocessor(obs_space: spaces.Space) -> Preprocessor:
        """Returns the preprocessor for ``obs_space`` (see :func:`get_preprocessor`)."""
        return get_preprocessor(obs_space)


def check_feed_forward(model_config: dict[str, Any] | None, algorithm: str) -> None:
    """Raise ValueError if the model config asks for a recurrent model, which
    ``algorithm`` (a replay or evolution algorithm here) does not train.

    Example:
        >>> check_feed_forward({"use_lstm": True}, "DQN")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: use_lstm is not supported by DQN, which trains feed-forward models; ...
    """
    if merge_model_config(model_config)["use_lstm"]:
        raise ValueError(
            f"use_lstm is not supported by {algorithm}, which trains feed-forward models; "
            "drop it from the model config (recurrent models train with PG, A2C, A3C, PPO, "
            "IMPALA and APPO)"
        )


def merge_model_config(model_config: dict[str, Any] | None) -> dict[str, Any]:
    """Returns ``model_config`` merged over a copy of ``MODEL_DEFAULTS``.

    Raises:
        ValueError: If a key is not in ``MODEL_DEFAULTS``; the message suggests the closest
            valid key.
    """
    model_config = model_config or {}
    for key in model_config:
        if key not in MODEL_DEFAULTS:
            close = difflib.get_close_matches(str(key), list(MODEL_DEFAULTS), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {list(MODEL_DEFAULTS)}"
            raise ValueError(f"unknown model config key {key!r}; {hint}")
        _check_model_value(key, model_config[key])
    config = copy.deepcopy(MODEL_DEFAULTS)
    config.update(model_config)
    return config


# Model keys that are None by default, and what they take when set (classes are
# checked by _lookup when the model is built).
_OPTIONAL_MODEL_TYPES: dict[str, tuple[type, ...]] = {
    "custom_model": (str, type),
    "custom_action_dist": (str, type),
    "conv_filters": (list, tuple),
    "dim": (int,),
}
# Model keys that are sizes: ints >= 1 (lists of them for the hidden layers).
_MODEL_SIZES = ("fcnet_hiddens", "post_fcnet_hiddens", "lstm_cell_size", "max_seq_len", "dim")


def _check_model_value(key: str, value: Any) -> None:
    """Raise ValueError for a model key's value of the wrong type, or a size < 1."""
    default = MODEL_DEFAULTS[key]
    if default is None:
        if value is None:
            return
        expected = _OPTIONAL_MODEL_TYPES[key]
    else:
        expected = (list, tuple) if isinstance(default, list) else (type(default),)
    if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
        names = " or ".join(t.__name__ for t in expected)
        raise ValueError(
            f"model config key {key!r} must be {names}, got {type(value).__name__} {value!r}"
        )
    if key in _MODEL_SIZES:
        sizes = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
            what = "a list of ints >= 1" if isinstance(value, (list, tuple)) else "an int >= 1"
            raise ValueError(f"model config key {key!r} must be {what}, got {value!r}")


def _lookup(custom: Any, registry: dict[str, type], base: type, kind: str) -> type:
    """Resolves a class or a registered name to a subclass of ``base``."""
    if isinstance(custom, type):
        if not issubclass(custom, base):
            raise TypeError(f"custom {kind} {custom!r} is not a {base.__name__} subclass")
        return custom
    if custom in registry:
        return registry[custom]
    close = difflib.get_close_matches(str(custom), list(registry), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"no custom {kind} registered as {custom!r}; registered: {sorted(registry) or 'none'}."
        f"{hint} Register it with ModelCatalog.register_custom_{kind}(name, cls)."
    )


__all__ = ["MODEL_DEFAULTS", "ModelCatalog", "check_feed_forward", "merge_model_config"]
