"""`tinymnist report`: how a saved model does on the test set, as PNG figures and a summary."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..data import MNIST
from .evaluate import evaluate, predict_logits
from ..plots import plot_confusion, plot_misclassified, plot_per_class

MAX_SHOWN = 100  # misclassified digits in the grid, most confident mistakes first


def write_report(model: nn.Module, meta: dict, data: MNIST, out: str | Path) -> dict:
    """confusion.png, per_class.png and misclassified.png in ``out``; returns the figures' numbers."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = data.test_images, data.test_labels
    result = evaluate(model, images, labels)
    probs = torch.softmax(predict_logits(model, images), dim=1).cpu()
    confidence, predicted = probs.max(1)
    wrong = (predicted != labels.cpu()).nonzero().flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][:MAX_SHOWN]
    name = f"{meta.get('model')}: {result.accuracy:.2f}% on the 10,000 test images"
    files = {
        "confusion": plot_confusion(result.confusion, out / "confusion.png", title=name),
        "per_class": plot_per_class(result.per_class, out / "per_class.png", title=f"Per-class accuracy, {name}"),
        "misclassified": plot_misclassified(images.cpu()[wrong].numpy(), labels.cpu()[wrong].tolist(),
                                            predicted[wrong].tolist(), confidence[wrong].tolist(),
                                            out / "misclassified.png"),
    }
    return {"test_acc": result.accuracy, "errors": result.total - result.correct, "per_class_acc": result.per_class,
            "shown_misclassified": len(wrong), "files": {k: str(v) for k, v in files.items()}}
