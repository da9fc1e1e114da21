"""The inference engine behind `serve`: one image in, a JSON answer out, in eager PyTorch or
onnxruntime. No web framework here: the HTTP process and each worker process both use it.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import normalize_array
from .export import PARITY_TOLERANCE, ExportError, cached_onnx, logit_parity, onnx_runner
from .predict import classify_uint8, read_image
from .preprocess import SIZE, ImageError, load_image, preprocess, to_uint8
from .segment import Digit, Reading

log = logging.getLogger(__name__)


class Classifier:
    """The model, ready for one image at a time, in eager PyTorch or, given the model's ONNX
    export, in onnxruntime (0.1 ms a digit against 0.5 ms: per-operator overhead dominates a
    single 28x28 image). Warmed up, so the first request does not pay for kernel setup."""

    def __init__(self, model: nn.Module, onnx: bytes | None = None):
        self.backend = "onnx" if onnx is not None else "torch"
        if onnx is not None:
            self._logits = onnx_runner(onnx, threads=1)
        else:
            # a channels-last copy: the caller's model is left as it was
            self.model = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()
        self(np.zeros((1, SIZE, SIZE), np.uint8))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities (N, 10) for MNIST-like images (N, 28, 28), uint8 as MNIST stores them."""
        if self.backend == "torch":
            return classify_uint8(self.model, images)
        x = normalize_array(images)  # as the model was trained; no torch op beside onnxruntime
        logits = self._logits(x)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def onnx_backend(model: nn.Module, meta: dict, backend: str, cache_dir: str | Path) -> bytes | None:
    """The ONNX bytes to serve with, or None for eager PyTorch.

    ``auto`` takes onnxruntime when the 'export' extra is installed and the export agrees with
    PyTorch; ``onnx`` insists and fails with the reason."""
    if backend == "torch":
        return None
    try:
        payload = cached_onnx(model, meta, cache_dir)
        images = torch.randint(0, 256, (16, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        # through the served path: numpy normalization (Classifier), then onnxruntime
        diff = logit_parity(onnx_runner(payload, threads=1), copy.deepcopy(model).cpu(), images)["max_abs_logit_diff"]
        if diff > PARITY_TOLERANCE:
            raise ExportError(f"the ONNX export differs from PyTorch by {diff:.2g}")
        return payload
    except ExportError as exc:
        if backend == "onnx":
            raise
        log.info(f"serving with PyTorch: {exc}")
        return None


# "0.004" for 1 ... "1.0" for 255: the preview is the uint8 image the model saw, written out
# with a table because json.dumps of 784 floats took 0.23 ms, a tenth of a request's work
PREVIEW_TEXT = [repr(round(v / 255, 3)) for v in range(256)]


def answer(classify: Classifier, reading: Reading) -> bytes:
    """The JSON answer for the digits of one image, encoded here: in a worker process this is
    the last step before the bytes go down the pipe. ``label`` and ``probabilities`` are the
    digit's when there is one, null when there are several; ``preprocessed`` is what the model
    saw, the 28x28 digits side by side."""
    images = np.stack([to_uint8(d.field) for d in reading.digits])
    probs = classify(images)
    digits = [{"label": int(p.argmax()), "probabilities": [round(float(q), 6) for q in p], "box": list(d.box)}
              for p, d in zip(probs, reading.digits)]
    one = digits[0] if len(digits) == 1 else {"label": None, "probabilities": None}
    head = json.dumps({"number": "".join(str(d["label"]) for d in digits), "label": one["label"],
                       "probabilities": one["probabilities"], "digits": digits, "warning": reading.warning},
                      separators=(",", ":"))
    seen = np.concatenate(list(images), axis=1)
    preview = ",".join("[" + ",".join([PREVIEW_TEXT[v] for v in row]) + "]" for row in seen.tolist())
    return f'{head[:-1]},"preprocessed":[{preview}]}}'.encode()


def answer_image(classify: Classifier, data: bytes, single: bool = False) -> bytes:
    return answer(classify, read_image(load_image(data), single))


def answer_pixels(classify: Classifier, field: np.ndarray, do_preprocess: bool) -> bytes:
    """28x28 pixels are one digit (no room for a number in MNIST's field)."""
    if field.max() <= 0:
        raise ImageError("no ink found: the canvas is empty")
    return answer(classify, Reading([Digit(preprocess(field) if do_preprocess else field, (0, 0, SIZE, SIZE))]))


def handle(classify: Classifier, message: tuple) -> tuple[int, bytes]:
    """``("image", bytes[, single])`` or ``("pixels", field, preprocess)`` -> ``(0, json)``, or ``(1, why)``
    for an input that is not a digit. Used in-process and by each worker of a pool."""
    kind, *args = message
    try:
        return 0, (answer_image if kind == "image" else answer_pixels)(classify, *args)
    except ImageError as exc:
        return 1, str(exc).encode()
