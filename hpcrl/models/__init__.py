"""Torch models, action distributions, preprocessors and the catalog that picks them."""

from __future__ import annotations

from hpcrl.models.action_mask import ActionMaskModel
from hpcrl.models.catalog import MODEL_DEFAULTS, ModelCatalog
from hpcrl.models.distributions import (
    ActionDistribution,
    Categorical,
    Deterministic,
    DiagGaussian,
    MultiCategorical,
)
from hpcrl.models.fcnet import FullyConnectedNetwork
from hpcrl.models.preprocessors import Preprocessor, get_preprocessor
from hpcrl.models.torch_model import TorchModel

__all__ = [
    "MODEL_DEFAULTS",
    "ActionDistribution",
    "ActionMaskModel",
    "Categorical",
    "DiagGaussian",
    "Deterministic",
    "FullyConnectedNetwork",
    "ModelCatalog",
    "MultiCategorical",
    "Preprocessor",
    "TorchModel",
    "get_preprocessor",
]
