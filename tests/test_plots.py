"""The PNG figures: written whole or not at all."""

from __future__ import annotations

import os

import pytest
from matplotlib.figure import Figure

from tinymnist.plots import plot_confusion, plot_curves

HISTORY = [dict(epoch=e, train_loss=1.0 / e, test_loss=1.2 / e, train_acc=90 + e, test_acc=91 + e)
           for e in (1, 2, 3)]


def test_plots_are_pngs(tmp_path):
    for path in (plot_curves(HISTORY, tmp_path / "curves.png"),
                 plot_confusion([[int(t == p) * 100 + t for p in range(10)] for t in range(10)],
                                tmp_path / "confusion.png")):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_cut_off_while_written_leaves_the_old_one(tmp_path, monkeypatch):
    path = plot_curves(HISTORY, tmp_path / "curves.png")
    good = path.read_bytes()

    def disk_fills_halfway(self, target, **kwargs):  # writes a first chunk wherever it writes, then fails
        if isinstance(target, (str, os.PathLike)):
            with open(target, "wb") as f:
                f.write(b"\x89PNG half")
        else:
            target.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", disk_fills_halfway)
    with pytest.raises(OSError):
        plot_curves(HISTORY, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]  # no temp file left behind
