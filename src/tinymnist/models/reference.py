"""Models the user wrote, named by reference: ``path/to/file.py:NAME`` or ``package.module:NAME``.

NAME is an ``nn.Module`` subclass constructed with no arguments, or a function with no
required arguments that returns an ``nn.Module``. Loading a reference runs the user's code, so
it happens only when the user names it (a flag, or the Python API), never because a checkpoint
says so. Every failure is a ``ModelError`` of one line that points at the user's own file and
line where the fault is theirs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

INPUT_SHAPE = (2, 1, 28, 28)  # the dummy batch every model must map to (2, 10) logits
NUM_CLASSES = 10


class ModelError(ValueError):
    """A user model that cannot be loaded, built or run, or does not fit MNIST; one line."""


@dataclass(frozen=True)
class UserModel:
    source: str  # the reference as given: "my_net.py:Net"
    name: str  # NAME
    path: Path | None  # the file that defines NAME
    sha256: str | None  # of that file, recorded in checkpoints
    factory: Callable[[], nn.Module] = field(repr=False)

    def create(self) -> nn.Module:
        """Call the user's constructor; a failure inside it names their file and line."""
        try:
            model = self.factory()
        except Exception as exc:
            raise ModelError(f"{where(exc, self.path)}{describe(exc)} (constructing {self.source})") from None
        if not isinstance(model, nn.Module):
            raise ModelError(f"{self.source} returned a {type(model).__name__}, not an nn.Module")
        return model


def is_reference(spec: str) -> bool:
    """Whether ``spec`` names a user's model (``something:NAME``) rather than a registered one."""
    return ":" in spec


_LOADED: dict[str, UserModel] = {}  # one import per reference and process: a file's classes stay the same objects


def load_reference(spec: str) -> UserModel:
    """Import the file or module ``spec`` names and find NAME in it (once per process)."""
    if spec not in _LOADED:
        _LOADED[spec] = _load(spec)
    return _LOADED[spec]


def reference_of(model: nn.Module) -> str:
    """``module:QualifiedName`` of a model instance's class: how a checkpoint names a model that
    was handed to ``train()`` as an object."""
    kind = type(model)
    return f"{kind.__module__}:{kind.__qualname__}"


def source_sha256(path: Path | None) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else None
    except OSError:
        return None


def _load(spec: str) -> UserModel:
    target, _, name = spec.rpartition(":")
    if not target or not name:
        raise ModelError(f"model {spec!r}: use a registered name, path/to/file.py:NAME or package.module:NAME")
    module, path = _import_file(target) if _is_file(target) else _import_module(target)
    obj = module
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            found = sorted(k for k, v in vars(module).items() if _is_model_class(v))
            hint = f" (its nn.Module classes: {', '.join(found)})" if found else ""
            raise ModelError(f"{path or target} has no {name!r}{hint}")
    defined_in = _source_file(obj) or path
    if not (_is_model_class(obj) or (callable(obj) and not isinstance(obj, type))):
        raise ModelError(f"{spec}: {name} is a {type(obj).__name__}, not an nn.Module subclass or a function "
                         "returning one")
    required = _required_arguments(obj)
    if required:
        raise ModelError(f"{spec}: {name} needs arguments ({', '.join(required)}); tinymnist calls it with none "
                         "(give them defaults, or write a function that returns the model)")
    return UserModel(spec, name, defined_in, source_sha256(defined_in), obj)


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _is_model_class(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, nn.Module)


def _source_file(obj) -> Path | None:
    try:
        found = inspect.getsourcefile(obj)
    except TypeError:
        return None
    return Path(found) if found else None


def _required_arguments(obj) -> list[str]:
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values() if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


def _import_file(target: str):
    path = Path(target).expanduser()
    if not path.is_file():
        raise ModelError(f"no model file {target}" + ("" if path.suffix == ".py" else " (expected a .py file)"))
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"tinymnist_user_{path.stem}_{digest}"  # unique per file, so two files may share a stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickling and torch.compile look modules up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ModelError(f"{where(exc, path)}{describe(exc)} (importing {target})") from None
    return module, path


def _import_module(target: str):
    try:
        module = importlib.import_module(target)
    except SyntaxError as exc:
        raise ModelError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except ModuleNotFoundError as exc:
        raise ModelError(f"cannot import {target}: {exc} (a file needs a path ending in .py)") from None
    except Exception as exc:
        raise ModelError(f"{where(exc, None)}{describe(exc)} (importing {target})") from None
    file = getattr(module, "__file__", None)
    return module, Path(file) if file else None


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def where(exc: BaseException, path: Path | None) -> str:
    """``file:line: `` of the innermost frame of the user's own code in ``exc``'s traceback, so the
    message points at their line, not at torch's or tinymnist's; empty when none is theirs."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = Path(__file__).resolve().parents[1]
    for frame in reversed(frames):
        file = Path(frame.filename).resolve()
        if (path is not None and file == path.resolve()) or (path is None and ours not in file.parents
                                                              and "site-packages" not in file.parts):
            return f"{frame.filename}:{frame.lineno}: "
    return ""


def check_model(model: nn.Module, source: str, path: Path | None = None) -> None:
    """Run ``model`` on a dummy batch (eval mode, no gradients: nothing in it changes) and insist
    on (N, 10) logits; a forward pass that raises names the user's file and line."""
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.zeros(())).device
    try:
        with torch.no_grad():
            out = model(torch.zeros(INPUT_SHAPE, device=device))
    except Exception as exc:
        raise ModelError(f"{where(exc, path)}{describe(exc)} (the forward pass of {source} on a "
                         f"{INPUT_SHAPE} batch)") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (INPUT_SHAPE[0], NUM_CLASSES):
        raise ModelError(f"{source} maps a {INPUT_SHAPE} batch to {shape}; tinymnist needs "
                         f"({INPUT_SHAPE[0]}, {NUM_CLASSES}) logits")
