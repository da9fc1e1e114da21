"""The run directory: created before training, written as it goes, finished with the model.

It holds config.json, metrics.csv/json, resume.pt (every epoch), curves.png, confusion.png
and the model (safetensors + JSON sidecar). Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

from torch import nn

from ..config import TrainConfig
from ..fileio import atomic_write, os_errors_as
from ..inference.evaluate import EvalResult
from ..models.checkpoint import save_checkpoint
from .errors import OutputDirError
from .state import RESUME_FILE

RUNS_ROOT = Path("runs")


def writing(path: Path):
    """A failed write (a full disk, a vanished directory) as one clear error, not a traceback.
    Every file is written atomically, so what the run had saved before is still there."""
    return os_errors_as(OutputDirError, f"cannot write {path}", " (the previous state, if any, is intact)")


def holds_run(directory: Path) -> bool:
    """Whether ``directory`` holds (part of) a training run: its config, state, metrics or model."""
    return (any((directory / name).exists() for name in ("config.json", RESUME_FILE, "metrics.json"))
            or any(directory.glob("mnist_model_*")))


def fresh_run_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... if taken: two runs started in the same second
    get directories of their own (a run directory that holds a run is refused)."""
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def default_run_dir(name: str, root: Path = RUNS_ROOT) -> Path:
    """``runs/<name>-<timestamp>``, made unique: where a run goes when no --out is given."""
    return fresh_run_dir(root / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


def prepare_out_dir(out_dir: str | Path, config: TrainConfig, resume: bool = False) -> Path:
    """Create the run directory and write config.json, or fail now rather than after training.

    A directory that already holds a run is refused unless resuming it: a new run would
    overwrite its config, metrics, state and model, which may be all that is left of it."""
    out = Path(out_dir)
    if not resume and out.is_dir() and holds_run(out):
        raise OutputDirError(f"{out} already holds a run; pass another --out (or `--resume {out}` to continue "
                             "a stopped one); nothing was written")
    with os_errors_as(OutputDirError, f"cannot write to output directory {out}"):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", config.to_json() + "\n")
    return out


def discard_unstarted(out: Path, created: bool) -> None:
    """Undo ``prepare_out_dir`` for a run that failed before its first step: its config.json (and
    the directory, if this run made it and it is empty), so that the corrected command can use
    the same --out. Nothing else is touched."""
    (out / "config.json").unlink(missing_ok=True)
    if created:
        try:
            out.rmdir()
        except OSError:  # not empty: something else is in it, which stays
            pass


def write_metrics(history: list[dict], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write(out / "metrics.csv", buffer.getvalue())
    atomic_write(out / "metrics.json", json.dumps(history, indent=2) + "\n")


def save_run(model: nn.Module, config: TrainConfig, result: EvalResult, history: list[dict], passed: bool,
             train_seconds: float, out: Path) -> Path:
    """Plots and the final model; named with its accuracy only when it met the target."""
    from ..plots import plot_confusion, plot_curves  # matplotlib is only needed here

    plot_curves(history, out / "curves.png")
    plot_confusion(result.confusion, out / "confusion.png",
                   title=f"{config.model}: {result.accuracy:.2f}% on the 10,000 test images")
    name = f"mnist_model_acc{result.accuracy:.2f}" if passed else "mnist_model_final"
    metadata = {"preset": config.preset, "seed": config.seed, "test_acc": result.accuracy,
                "target_acc": config.target_acc, "passed_target": passed,
                "per_class_acc": result.per_class, "train_seconds": train_seconds,
                "epochs": history[-1]["epoch"], "config": config.to_dict()}
    return save_checkpoint(model, out / f"{name}.safetensors", model_name=config.model, metadata=metadata)
