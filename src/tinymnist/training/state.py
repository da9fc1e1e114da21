"""The resumable training state: everything a run needs to go on exactly where it stopped.

Only tensors, numbers, strings and containers of them: it loads with
``torch.load(weights_only=True)``, which never runs code from the file.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from ..fileio import atomic_write
from ..models.checkpoint import CheckpointError

RESUME_FILE = "resume.pt"  # in the run directory, rewritten atomically every epoch

def save_resume_state(out: Path, model: nn.Module, optimizer, schedule, ema, generator: torch.Generator,
                      config, epoch: int, step: int, history: list[dict], train_seconds: float,
                      partial: dict | None = None) -> Path:
    """Everything a run needs to go on exactly where it was, written atomically.

    Only tensors, numbers, strings and containers of them: it loads with
    ``torch.load(weights_only=True)``, which never runs code from the file.
    """
    state = {
        "format": "tinymnist-resume-1", "config": config.to_dict(), "epoch": epoch, "step": step,
        "history": history, "train_seconds": train_seconds,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "partial": ({k: v.detach().cpu() for k, v in partial.items()} if partial is not None else None),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write(out / RESUME_FILE, buffer.getvalue())  # OSError (a full disk) leaves the old file


def load_resume_state(out: Path) -> dict:
    path = out / RESUME_FILE
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; none may run code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a tinymnist resume state (refused to load: {first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != "tinymnist-resume-1":
        raise CheckpointError(f"{path} is not a tinymnist resume state")
    return state


def restore_resume_state(state: dict, model: nn.Module, optimizer, schedule, ema, generator: torch.Generator,
                  device: torch.device) -> None:
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"the saved state does not fit this run: {str(exc).splitlines()[0]}") from None
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng"):
        torch.cuda.set_rng_state_all(state["cuda_rng"])
