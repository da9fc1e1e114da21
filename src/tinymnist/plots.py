"""PNG figures: training curves and the confusion matrix.

Uses matplotlib's object API (Figure + Agg canvas), so nothing touches pyplot's global
state or needs a display.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from .fileio import atomic_write


def save_png(fig: Figure, path: str | Path) -> Path:
    """Render to memory, then write atomically: a figure cut off half-written (Ctrl-C, a full
    disk) never replaces a good one from an earlier run."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, buffer.getvalue())


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train and test, side by side."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train (augmented, label-smoothed)")
    loss_ax.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    acc_ax.plot(epochs, [h["train_acc"] for h in history], "o-", label="train (augmented)")
    acc_ax.plot(epochs, [h["test_acc"] for h in history], "s-", label="test")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_png(fig, path)


def plot_confusion(confusion: list[list[int]], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Counts per (true, predicted) pair; the diagonal is dimmed so the errors stand out."""
    import numpy as np

    counts = np.asarray(confusion)
    errors = counts.copy()
    np.fill_diagonal(errors, 0)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(errors, cmap="Reds")
    fig.colorbar(image, ax=ax, label="misclassified images")
    for t in range(counts.shape[0]):
        for p in range(counts.shape[1]):
            weight = "bold" if t != p and counts[t, p] else "normal"
            ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=8,
                    color="grey" if t == p else "black", fontweight=weight)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    return save_png(fig, path)


def plot_per_class(per_class: list[float], path: str | Path, title: str = "Per-class accuracy") -> Path:
    """One bar per digit, the axis starting near the worst class so differences are visible."""
    fig = Figure(figsize=(6.5, 3.5), layout="constrained")
    ax = fig.subplots()
    bars = ax.bar(range(10), per_class, color="#4b7fe0")
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    low = min(per_class)
    ax.set(xticks=range(10), xlabel="digit", ylabel="accuracy (%)", title=title,
           ylim=(max(0.0, low - (100 - low) * 0.5 - 0.5), 100.05))
    ax.grid(axis="y", alpha=0.3)
    return save_png(fig, path)


def plot_misclassified(images, true, predicted, confidence, path: str | Path, columns: int = 10,
                       title: str = "Misclassified test digits") -> Path:
    """A grid of (28, 28) uint8 images, each titled 'true -> predicted (confidence)'."""
    n = len(images)
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(columns * 1.1, rows * 1.25 + 0.5), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{true[i]}→{predicted[i]} ({confidence[i]:.0%})", fontsize=8)
    fig.suptitle(f"{title}: true→predicted (confidence)" + ("" if n else " (none)"))
    return save_png(fig, path)
