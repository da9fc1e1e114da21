"""Predict digits in people's image files with a saved model (the library behind `tinymnist predict`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .evaluate import predict_logits
from .preprocess import ImageError, load_image, preprocess, save_preview, to_uint8
from .segment import Digit, Reading, read_digits


@dataclass
class DigitRead:
    label: int
    probabilities: list[float]  # index = digit
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the image's pixels
    field: np.ndarray = field(repr=False)  # the 28x28 image the model saw, [0, 1]

    def to_dict(self) -> dict:
        return {"label": self.label, "probabilities": self.probabilities, "box": list(self.box)}


@dataclass
class Prediction:
    """What was read in one image: its digits left to right. ``label`` and ``probabilities``
    are the one digit's when there is one, and None when there are several, so that no reader
    of the old single-digit answer mistakes "42" for a 4."""

    path: str
    digits: list[DigitRead]
    warning: str | None = None

    @property
    def number(self) -> str:
        return "".join(str(d.label) for d in self.digits)

    @property
    def label(self) -> int | None:
        return self.digits[0].label if len(self.digits) == 1 else None

    @property
    def probabilities(self) -> list[float] | None:
        return self.digits[0].probabilities if len(self.digits) == 1 else None

    @property
    def field(self) -> np.ndarray:
        """What the model saw: the 28x28 digits side by side."""
        return np.concatenate([d.field for d in self.digits], axis=1)

    def top(self, k: int = 3) -> list[tuple[int, float]]:
        """The ``k`` likeliest labels of a single digit."""
        probs = self.digits[0].probabilities
        order = np.argsort(probs)[::-1][:k]
        return [(int(d), float(probs[d])) for d in order]

    def to_dict(self) -> dict:
        return {"path": self.path, "number": self.number, "label": self.label, "probabilities": self.probabilities,
                "digits": [d.to_dict() for d in self.digits], "warning": self.warning}


@dataclass
class PredictError:
    path: str
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error}


def classify_fields(model: nn.Module, fields: np.ndarray) -> np.ndarray:
    """Probabilities (N, 10) for MNIST-like images (N, 28, 28) in [0, 1]."""
    return classify_uint8(model, to_uint8(fields))


def classify_uint8(model: nn.Module, images: np.ndarray) -> np.ndarray:
    """Probabilities (N, 10) for images (N, 28, 28) in MNIST's storage format, uint8."""
    device = next(model.parameters()).device
    # channels-last takes oneDNN's kernels even for one image: 0.43 ms against 0.79 ms for
    # the default layout (cnn20k, one thread, measured)
    logits = predict_logits(model, torch.from_numpy(images).to(device), channels_last=True)
    return torch.softmax(logits, dim=1).cpu().numpy()


def read_image(grey: np.ndarray, single: bool = False) -> Reading:
    """The digits to classify in an image: found and ordered by ``segment.read_digits``, or, with
    ``single``, the whole image as one digit (what `predict` did before it read numbers)."""
    if single:
        h, w = grey.shape
        return Reading([Digit(preprocess(grey), (0, 0, w, h))])
    return read_digits(grey)


def predict_files(model: nn.Module, paths: list[str], preview_dir: str | Path | None = None,
                  single: bool = False) -> tuple[list[Prediction], list[PredictError]]:
    """Every readable image is answered; each one that is not gets its own error. All the digits
    of all the images go through the model as one batch."""
    readings, good, errors = [], [], []
    for path in paths:
        try:
            readings.append(read_image(load_image(path), single))
            good.append(str(path))
        except ImageError as exc:
            errors.append(PredictError(str(path), str(exc)))
    predictions = []
    if readings:
        fields = np.stack([d.field for r in readings for d in r.digits])
        probs = iter(classify_fields(model, fields))
        for path, reading in zip(good, readings):
            digits = []
            for d in reading.digits:
                p = next(probs)
                digits.append(DigitRead(int(p.argmax()), [float(q) for q in p], d.box, d.field))
            predictions.append(Prediction(path, digits, reading.warning))
    if preview_dir is not None:
        write_previews(predictions, Path(preview_dir))
    return predictions, errors


def write_previews(predictions: list[Prediction], out: Path) -> None:
    """``<stem>.png`` per input (numbered when two inputs share a stem); a number's digits side by side."""
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for i, p in enumerate(predictions):
        stem = Path(p.path).stem
        name = f"{stem}.png" if stem not in used else f"{stem}-{i}.png"
        used.add(stem)
        save_preview(p.field, out / name)
