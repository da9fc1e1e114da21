"""Save and load trained models: safetensors weights plus a JSON sidecar that describes them.

The sidecar names the model, its parameter count, the input normalization, the measured
accuracy, the config and the versions, so loading needs no flags. Nothing here unpickles
code: safetensors holds plain tensors only, and the sidecar is JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .. import __version__
from ..data.augment import MNIST_MEAN, MNIST_STD
from ..fileio import atomic_write
from .reference import ModelError, check_model, is_reference, load_reference, source_sha256
from .registry import UnknownModelError, count_parameters, create_model, layer_signature, model_info

log = logging.getLogger(__name__)

FORMAT = "tinymnist-checkpoint/1"
LABELS = [str(d) for d in range(10)]
# Models whose layout changed, with the same tensors, after sidecars began to record `layers`
# (cnn2k: ReLU -> SiLU in that release; cnn8k: ReLU -> SiLU later). A sidecar of theirs without
# the field is from the old layout, so it is refused; other models' sidecars without it load as
# before, checked by shape. (A sidecar with the field is checked against it, whatever the model.)
CHANGED_WITH_SIGNATURE = frozenset({"cnn2k", "cnn8k"})


def same_layout(saved_layers: str, model: nn.Module) -> bool:
    """Whether a sidecar's `layers` describes ``model``. Sidecars saved before 2026-11-29 list
    Dropout layers, which ``layer_signature`` now leaves out (the identity at inference)."""
    kept = [part for part in saved_layers.split(" ") if part != "Dropout"]
    return " ".join(kept) == layer_signature(model)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, malformed, or does not fit its model."""


def versions() -> dict:
    import numpy

    return {"tinymnist": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def sidecar_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def plain_module(model: nn.Module) -> nn.Module:
    """The module under a torch.compile or DDP wrapper, whose keys carry no prefix."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def save_checkpoint(model: nn.Module, path: str | Path, *, model_name: str, metadata: dict) -> Path:
    """Write ``path`` (.safetensors) and its .json sidecar, each atomically."""
    path = Path(path)
    module = plain_module(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    # one metadata key: safetensors writes a multi-key header in hash order, which would make
    # byte-identical weights hash differently from run to run
    blob = save_safetensors(state, metadata={"tinymnist": json.dumps({"format": FORMAT, "model": model_name})})
    sidecar = {
        "format": FORMAT,
        "model": model_name,
        "params": count_parameters(module),
        "layers": layer_signature(module),
        "normalization": {"mean": MNIST_MEAN, "std": MNIST_STD},
        "input": {"shape": [1, 28, 28], "dtype": "float32", "layout": "NCHW",
                  "pixels": "white ink on black, scaled to [0, 1], then (x - mean) / std"},
        "labels": LABELS,
        "weights_file": path.name,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        **source_fields(model_name, module),
        **metadata,
    }
    # weights first, sidecar last: a sidecar only exists for weights that were fully written
    atomic_write(path, blob)
    atomic_write(sidecar_path(path), json.dumps(sidecar, indent=2) + "\n")
    return path


def source_fields(model_name: str, module: nn.Module) -> dict:
    """For a user's model: the reference as given, the sha256 of the file that defines it and the
    class of the saved module, so that loading can say which --model to pass and notice an edit."""
    if not is_reference(model_name):
        return {}
    try:
        path = load_reference(model_name).path
    except ModelError:  # a model handed to train() as an object, from a module that cannot be imported by name
        import inspect

        try:
            path = Path(inspect.getsourcefile(type(module)) or "")
        except TypeError:
            path = None
    return {"source": model_name, "source_sha256": source_sha256(path) if path else None,
            "class_name": type(module).__name__}


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept the .safetensors file, its .json sidecar, or a run directory holding one model."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("mnist_model_*.safetensors"))
        if len(candidates) != 1:
            raise CheckpointError(f"{path} holds {len(candidates)} models; name one")
        return candidates[0]
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    return path


def read_metadata(path: str | Path) -> dict:
    weights = resolve_checkpoint(path)
    side = sidecar_path(weights)
    if not side.is_file():
        raise CheckpointError(f"{weights} has no sidecar {side.name}: it does not describe its model")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{side} is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{side} is not a {FORMAT} sidecar")
    return meta


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu",
                    model: str | nn.Module | None = None) -> tuple[nn.Module, dict]:
    """The model (in eval mode, on ``device``) and its sidecar metadata.

    A checkpoint of a user's model loads only with ``model``: its reference (``my_net.py:Net``,
    the CLI's --model) or an instance. Nothing runs a user's code because a checkpoint said so."""
    weights = resolve_checkpoint(path)
    meta = read_metadata(weights)
    if model is None and meta.get("source"):
        raise CheckpointError(f"{weights} holds a model of your own ({meta['source']}); loading runs its code, so "
                              f"tinymnist does it only when asked: pass --model {meta['source']} (or where that "
                              "file is now)")
    blob = weights.read_bytes()
    if meta.get("weights_sha256") and hashlib.sha256(blob).hexdigest() != meta["weights_sha256"]:
        raise CheckpointError(f"{weights} does not match the sha256 in its sidecar (corrupt or replaced)")
    try:
        state = load_safetensors(blob)
    except (SafetensorError, ValueError) as exc:
        raise CheckpointError(f"{weights} is not a safetensors file ({exc})") from None
    model = model_for(weights, meta, model)
    saved_layers = meta.get("layers")  # absent from checkpoints older than the field
    if saved_layers is None and meta["model"] in CHANGED_WITH_SIGNATURE:
        raise CheckpointError(f"{weights}: saved from an older layout of model {meta['model']} (its sidecar "
                              "predates `layers`); retrain it with this version")
    if saved_layers is not None and not same_layout(saved_layers, model):
        # one line: the signatures themselves run to hundreds of characters (the sidecar has the old one)
        if meta.get("source"):
            raise CheckpointError(f"{weights}: saved from another layout than the model you passed builds "
                                  "(see `layers` in its sidecar)")
        raise CheckpointError(f"{weights}: saved from another layout of model {meta['model']} than this "
                              "tinymnist's (see `layers` in its sidecar); retrain it with this version")
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"{weights}: tensor {key!r} of model {meta['model']} is missing")
        if state[key].shape != tensor.shape:
            raise CheckpointError(f"{weights}: tensor {key!r} has shape {tuple(state[key].shape)}, "
                                  f"model {meta['model']} needs {tuple(tensor.shape)}")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{weights}: unexpected tensor {extra[0]!r} for model {meta['model']}")
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def model_for(weights: Path, meta: dict, model: str | nn.Module | None) -> nn.Module:
    """The module to load ``weights`` into: ``model`` itself, or built from its name (by default
    the sidecar's registered name). A user's file that changed since training loads with a warning."""
    if isinstance(model, nn.Module):
        return model
    name = model or meta["model"]
    try:
        built = create_model(name)
    except UnknownModelError as exc:
        raise CheckpointError(f"{weights}: {exc}") from None
    user = model_info(name).user
    if user is not None:
        check_model(built, name, user.path)
        if meta.get("source_sha256") and user.sha256 and user.sha256 != meta["source_sha256"]:
            log.warning(f"{user.path} has changed since {weights.name} was trained (its sha256 differs); loading "
                        "it anyway: its layers and tensors must still fit")
    return built


def find_latest_checkpoint(root: str | Path = "runs") -> Path:
    """The newest ``mnist_model_*.safetensors`` under ``root`` (by modification time)."""
    found = [p for p in Path(root).glob("**/mnist_model_*.safetensors") if sidecar_path(p).is_file()]
    if not found:
        raise CheckpointError(f"no saved model under {root}/; train one or pass --checkpoint")
    return max(found, key=lambda p: p.stat().st_mtime)
