"""The registry that names models: each entry a short factory with a hard parameter budget.

Every model takes normalized (B, 1, 28, 28) float input and returns (B, 10) logits. The
tests loop over ``list_models()``, so a new variant is checked against its budget the day
it lands. A user's own model, named by reference (``my_net.py:Net``), goes through the same
``model_info`` and ``create_model`` (see ``reference``), but is not listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .reference import UserModel, is_reference, load_reference

PARAM_BUDGET = 20_000  # the project's promise: every default model stays under this
NUM_CLASSES = 10


@dataclass(frozen=True)
class ModelInfo:
    name: str
    factory: Callable[[], nn.Module]
    budget: int  # parameters (all that inference uses; BN running stats are buffers, not counted); 0: none
    description: str
    user: UserModel | None = None  # where a user's model came from


_REGISTRY: dict[str, ModelInfo] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


def register_model(name: str, budget: int, description: str):
    """Decorator: add a factory to the registry under ``name``."""

    def wrap(factory: Callable[[], nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelInfo(name, factory, budget, description)
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The registered model ``name``, or the user's model ``name`` refers to (imported once)."""
    if is_reference(name):
        user = load_reference(name)
        return ModelInfo(name, user.create, 0, f"user model {name}", user)
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose from {', '.join(list_models())}") from None


def create_model(name: str) -> nn.Module:
    return model_info(name).factory()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_signature(model: nn.Module) -> str:
    """The inference layout as text, with what the weights' shapes do not pin down (activations,
    pools, strides, padding, groups; dilation and BatchNorm eps where they differ from
    PyTorch's defaults, so that the signatures of the layouts saved before they were recorded
    stay the same). Checkpoints store it, so that weights saved from an older layout of a
    model are refused rather than run through the new one. Dropout is left out: it is the
    identity at inference, so weights trained with or without it run the same."""
    parts = []
    for module in model.modules():
        if next(module.children(), None) is not None or isinstance(module, nn.Dropout):
            continue  # containers (their leaves say it all) and Dropout (see above)
        part = type(module).__name__
        if isinstance(module, nn.Conv2d):
            part += f"(stride={module.stride},padding={module.padding},groups={module.groups}"
            part += f",dilation={module.dilation})" if module.dilation != (1, 1) else ")"
        elif isinstance(module, nn.BatchNorm2d) and module.eps != 1e-5:
            part += f"(eps={module.eps})"
        elif isinstance(module, nn.MaxPool2d):
            part += f"({module.kernel_size})"
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            part += f"({module.output_size})"
        parts.append(part)
    return " ".join(parts)
