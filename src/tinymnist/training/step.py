"""One optimizer step on one batch: the unit a captured (CUDA graph) step would replace."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .setup import Run


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, clipping, optimizer, schedule and EMA for a batch of fixed
    shape ``x`` (B, 1, 28, 28) normalized, ``y`` (B,); returns (loss, logits)."""
    config = run.config
    autocast = torch.autocast(run.device.type, dtype=run.amp_dtype) if run.amp_dtype else contextlib.nullcontext()
    with autocast:
        logits = run.step_fn(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
    if run.ctx.enabled:  # DDP averages over ranks: weigh each rank's mean by its share of the batch
        loss = loss * (y.shape[0] * run.ctx.world_size / config.batch_size)
    optimizer_step(loss, run.optimizer, run.schedule, run.trainable, config.grad_clip, run.ema, run.net)
    return loss, logits


def optimizer_step(loss: torch.Tensor, optimizer, schedule, trainable: list[torch.Tensor], grad_clip: float,
                   ema, net: nn.Module) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_(trainable, grad_clip)
    optimizer.step()
    schedule.step()
    if ema is not None:
        ema.update_parameters(net)
