"""Accuracy, per-class accuracy and the confusion matrix of a model on a labelled set."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..data.augment import normalize
from ..models import NUM_CLASSES


@dataclass
class EvalResult:
    accuracy: float  # percent
    correct: int
    total: int
    per_class: list[float]  # percent, index = digit
    confusion: list[list[int]]  # confusion[true][predicted]
    loss: float

    def to_dict(self) -> dict:
        return {"test_acc": self.accuracy, "correct": self.correct, "total": self.total,
                "per_class_acc": self.per_class, "confusion": self.confusion, "loss": self.loss}


# Test-time augmentation: the image and its four one-pixel shifts. Fixed before any test figure
# was read (the usual choice for centred digits), and reported only beside the plain accuracy.
TTA_SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))


def shift_images(images_u8: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(N, H, W) images moved ``dy`` rows down and ``dx`` columns right; the border they
    uncover is blank (0), and what moves out is lost (unlike torch.roll, which wraps it)."""
    out = torch.zeros_like(images_u8)
    h, w = images_u8.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images_u8[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


@torch.inference_mode()
def predict_logits(model: nn.Module, images_u8: torch.Tensor, batch_size: int = 2000,
                   channels_last: bool = False, tta: bool = False) -> torch.Tensor:
    """Logits (N, 10) for uint8 images (N, 28, 28), computed in eval mode, batch by batch.

    With ``tta``, the log of the mean softmax over the image and its TTA_SHIFTS: log-probabilities,
    which argmax and cross-entropy read as they read logits.
    """
    if tta:  # in log space (logsumexp), so that a confident wrong answer gives a finite loss, not log(0)
        log_probs = torch.stack([predict_logits(model, shift_images(images_u8, dy, dx), batch_size,
                                                channels_last).log_softmax(1) for dy, dx in TTA_SHIFTS])
        return log_probs.logsumexp(0) - math.log(len(TTA_SHIFTS))
    was_training = model.training
    if was_training:  # switching walks every submodule: skip it on the single-image hot path
        model.eval()
    out = []
    for start in range(0, images_u8.shape[0], batch_size):
        x = normalize(images_u8[start:start + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).float())
    if was_training:
        model.train()
    return out[0] if len(out) == 1 else torch.cat(out)


def evaluate(model: nn.Module, images_u8: torch.Tensor, labels: torch.Tensor, batch_size: int = 2000,
             channels_last: bool = False, tta: bool = False) -> EvalResult:
    logits = predict_logits(model, images_u8, batch_size, channels_last, tta)
    loss = nn.functional.cross_entropy(logits, labels).item()
    predicted = logits.argmax(1)
    confusion = torch.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES ** 2)
    confusion = confusion.view(NUM_CLASSES, NUM_CLASSES).cpu()
    correct = int(confusion.diagonal().sum())
    total = int(labels.numel())
    per_class = (confusion.diagonal().double() / confusion.sum(1).clamp(min=1) * 100).tolist()
    return EvalResult(100.0 * correct / total, correct, total, per_class, confusion.tolist(), loss)
