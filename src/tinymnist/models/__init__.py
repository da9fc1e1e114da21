"""Models: the registry, its building blocks, the zoo, users' own models by reference
(``reference``), their summary (``summary``), and the checkpoint format (``checkpoint``).

Importing the package registers the zoo, so ``list_models()`` is complete.
"""

from . import zoo  # noqa: F401  (registers the zoo's models)
from .blocks import Head, MaxBlurPool, PooledLinearHead, conv_bn, separable_conv_bn
from .reference import ModelError, check_model, is_reference, reference_of
from .registry import (NUM_CLASSES, PARAM_BUDGET, ModelInfo, UnknownModelError, count_parameters, create_model,
                       layer_signature, list_models, model_info, register_model)

__all__ = ["NUM_CLASSES", "PARAM_BUDGET", "ModelInfo", "UnknownModelError", "count_parameters", "create_model",
           "layer_signature", "list_models", "model_info", "register_model", "Head", "MaxBlurPool",
           "PooledLinearHead", "conv_bn", "separable_conv_bn", "ModelError", "check_model", "is_reference",
           "reference_of"]
