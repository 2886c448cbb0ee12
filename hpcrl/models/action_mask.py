"""Action masking: a model wrapper that gives illegal actions no probability.

PettingZoo's classic games (and many other turn-based environments) observe a
``gymnasium.spaces.Dict`` whose ``"action_mask"`` entry holds one 0/1 flag per discrete
action. :class:`ActionMaskModel` runs an inner model on the rest of the observation and
adds ``log(mask)``, clamped to the dtype's most negative finite number, to its logits.
Masking in the model means acting and every loss see the same masked logits; the clamp
(RLlib's ``FLOAT_MIN`` trick) keeps ``log_softmax``, entropy and KL finite where ``-inf``
would give ``0 * inf = nan``.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from gymnasium import spaces

from hpcrl.models.preprocessors import get_preprocessor
from hpcrl.models.torch_model import TorchModel

ACTION_MASK_KEY = "action_mask"


def has_action_mask(obs_space: spaces.Space) -> bool:
    """Returns whether ``obs_space`` is a Dict with an ``"action_mask"`` entry."""
    return isinstance(obs_space, spaces.Dict) and ACTION_MASK_KEY in obs_space.spaces


def observation_without_mask(obs_space: spaces.Dict) -> spaces.Space:
    """Returns the observation the inner model sees: ``obs_space`` minus its action mask.

    If one entry remains, that entry's space itself; otherwise a Dict of the remaining
    entries in ``obs_space``'s order, so that its flat layout is the outer layout with the
    mask's columns cut out.

    Example:
        >>> space = spaces.Dict({"observation": spaces.Box(0, 1, (3,)),
        ...                      "action_mask": spaces.MultiBinary(2)})
        >>> observation_without_mask(space)
        Box(0.0, 1.0, (3,), float32)
    """
    rest = [(key, space) for key, space in obs_space.spaces.items() if key != ACTION_MASK_KEY]
    if not rest:
        raise ValueError(
            f"observation space {obs_space} holds only an {ACTION_MASK_KEY!r}; add the "
            "observation under another key (PettingZoo uses 'observation')"
        )
    if len(rest) == 1:
        return rest[0][1]
    # An OrderedDict keeps the order: gymnasium sorts the keys of a plain dict.
    return spaces.Dict(OrderedDict(rest))


class ActionMaskModel(TorchModel):
    """Masks the logits of ``inner_model`` with the observation's ``"action_mask"``.

    ``input_dict["obs"]`` is the Dict observation flattened by its preprocessor (entries
    concatenated in the space's key order). The mask's columns are cut out of it; the
    remaining columns are the flat form of :func:`observation_without_mask` and go to
    ``inner_model``. Its logits plus ``clamp(log(mask), min=finfo.min)`` are the output,
    so an illegal action's probability is exactly 0 (unless every action is illegal:
    then the distribution is uniform). :meth:`value_function` and the recurrent state are
    the inner model's; the weights are its weights under the prefix ``inner_model.``.

    ``ModelCatalog.get_model`` builds this wrapper by itself for any observation space
    with an action mask; build one by hand only to wrap a model made another way.

    Args:
        obs_space: The full observation space, a Dict with an ``"action_mask"`` (a Box or
            MultiBinary of 0/1, one entry per discrete action).
        inner_model: The model of ``observation_without_mask(obs_space)``; its
            ``num_outputs`` must be one logit per action.

    Raises:
        ValueError: If the action space is not Discrete or MultiDiscrete, the mask is not a
            Box or MultiBinary, or the mask, action and output sizes disagree.

    Example:
        >>> from hpcrl.models import FullyConnectedNetwork, ModelCatalog
        >>> obs_space = spaces.Dict({"observation": spaces.Box(-1, 1, (4,)),
        ...                          "action_mask": spaces.Box(0, 1, (3,), np.int8)})
        >>> inner = FullyConnectedNetwork(observation_without_mask(obs_space),
        ...                               spaces.Discrete(3), 3, {"fcnet_hiddens": [8]}, "m")
        >>> model = ActionMaskModel(obs_space, inner)
        >>> obs = ModelCatalog.get_preprocessor(obs_space).transform(
        ...     {"observation": np.zeros((1, 4)), "action_mask": [[1, 0, 1]]})
        >>> logits, _ = model({"obs": torch.from_numpy(obs)}, [], None)
        >>> (logits[0] > -1e30).tolist()
        [True, False, True]
    """

    def __init__(self, obs_space: spaces.Dict, inner_model: TorchModel) -> None:
        super().__init__(
            obs_space,
            inner_model.action_space,
            inner_model.num_outputs,
            inner_model.model_config,
            inner_model.name,
        )
        self.mask_start, self.mask_end = _mask_columns(obs_space)
        _check_sizes(obs_space, inner_model.action_space, inner_model.num_outputs)
        self.inner_model = inner_model

    def forward(
        self,
        input_dict: dict[str, torch.Tensor],
        state: list[torch.Tensor],
        seq_lens: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        flat = input_dict["obs"]
        mask = flat[..., self.mask_start : self.mask_end]
        obs = torch.cat((flat[..., : self.mask_start], flat[..., self.mask_end :]), dim=-1)
        logits, state_out = self.inner_model({**input_dict, "obs": obs}, state, seq_lens)
        log_mask = torch.log(mask.to(logits.dtype)).clamp(min=torch.finfo(logits.dtype).min)
        return logits + log_mask, state_out

    def value_function(self) -> torch.Tensor:
        return self.inner_model.value_function()

    def get_initial_state(self) -> list[np.ndarray]:
        return self.inner_model.get_initial_state()


def _mask_columns(obs_space: spaces.Dict) -> tuple[int, int]:
    """The ``[start, end)`` columns of the mask in the Dict preprocessor's flat layout."""
    start = 0
    for key, space in obs_space.spaces.items():
        size = get_preprocessor(space).size
        if key == ACTION_MASK_KEY:
            if not isinstance(space, (spaces.Box, spaces.MultiBinary)):
                raise ValueError(
                    f"{ACTION_MASK_KEY!r} must be a Box or MultiBinary of 0/1 flags, one per "
                    f"action; got {space}"
                )
            return start, start + size
        start += size
    raise ValueError(f"observation space {obs_space} has no {ACTION_MASK_KEY!r} entry")


def _check_sizes(obs_space: spaces.Dict, action_space: spaces.Space, num_outputs: int) -> None:
    """Raises ValueError unless mask, actions and model outputs have one entry per action."""
    if isinstance(action_space, spaces.Discrete):
        num_actions = int(action_space.n)
    elif isinstance(action_space, spaces.MultiDiscrete):
        num_actions = int(np.sum(action_space.nvec))
    else:
        raise ValueError(
            f"an {ACTION_MASK_KEY!r} observation needs a Discrete or MultiDiscrete action "
            f"space, got {action_space}; drop the mask from the observation space"
        )
    mask_size = get_preprocessor(obs_space.spaces[ACTION_MASK_KEY]).size
    if mask_size != num_actions:
        raise ValueError(
            f"{ACTION_MASK_KEY!r} has {mask_size} entries but the action space {action_space} "
            f"has {num_actions} actions; give the mask one 0/1 entry per action (for "
            "MultiDiscrete: per sub-action, concatenated)"
        )
    if num_outputs != num_actions:
        raise ValueError(
            f"the masked model outputs {num_outputs} values but {action_space} has "
            f"{num_actions} actions; masking needs one logit per action (leave "
            "custom_action_dist unset, or give it one input per action)"
        )
