"""The optimizer and its one-cycle schedule: AdamW for every weight, or Muon for the convs.

Muon (Keller Jordan, 2024) replaces a weight matrix's momentum update by its nearest
orthogonal matrix, computed with a few Newton-Schulz iterations, so that every direction of
the layer moves at the same rate instead of the few that dominate the gradient. It is meant
for hidden layers' weights only; the input layer, the head and the BatchNorm vectors stay with
AdamW. Both live in one optimizer (``MuonAdamW``, an AdamW), so one schedule, one state dict
(resume) and one ``step()`` serve them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig

# Newton-Schulz quintic coefficients from Keller Jordan's Muon: they push all singular values
# of the normalized update towards 1 in 5 steps (to roughly 0.7-1.2, which is enough)
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
# the orthogonalized update has spectral norm ~1, so its RMS shrinks as the matrix grows;
# scaling by 0.2 * sqrt(max(rows, cols)) gives it about AdamW's RMS (Moonshot's "Muon is
# scalable for LLM training"), so Muon's lr is on the same footing across layers
MUON_RMS = 0.2


def mixes_channels(p: torch.Tensor) -> bool:
    """A conv weight that mixes input channels: Muon's. The input layer (one channel) and
    depthwise convs (one channel per group) have shape[1] == 1 and stay with AdamW."""
    return p.ndim == 4 and p.shape[1] > 1


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS) -> torch.Tensor:
    """The matrix with ``g``'s singular vectors and singular values near 1 (Newton-Schulz)."""
    a, b, c = NS_COEFFICIENTS
    x = g / (g.norm() + 1e-7)  # singular values <= 1: inside the iteration's basin
    wide = x.shape[0] <= x.shape[1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):  # x <- a x + (b G + c G^2) x with G = x x^T, as two fused addmm calls
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x if wide else x.T


class MuonAdamW(torch.optim.AdamW):
    """AdamW, except for the param groups with ``muon=True``, which take Muon steps.

    Muon reads its momentum from ``betas[0]``, so OneCycleLR's momentum cycle drives both, and
    its weight decay is decoupled (multiplied by the lr) as in AdamW. The AdamW part is torch's
    own (fused where the device has it: for ~20 small tensors a per-tensor loop costs more than
    the arithmetic), and the state dict is AdamW's, with a momentum buffer for each Muon weight.
    """

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        muon = [(group, p) for group in self.param_groups if group.get("muon") for p in group["params"]
                if p.grad is not None]
        grads = [p.grad for _, p in muon]
        for _, p in muon:
            p.grad = None  # AdamW skips a parameter without a gradient
        try:
            super().step()
        finally:
            for (_, p), grad in zip(muon, grads):
                p.grad = grad
        for group, p in muon:
            self._muon_step(p, group)
        return loss

    def _muon_step(self, p: torch.Tensor, group: dict) -> None:
        momentum, lr = group["betas"][0], group["lr"]
        state = self.state[p]
        if not state:  # a step count too: AdamW's state loading expects one in every entry
            state.update(step=torch.zeros((), dtype=torch.float32), momentum_buffer=torch.zeros_like(p))
        state["step"] += 1
        buffer = state["momentum_buffer"]
        buffer.mul_(momentum).add_(p.grad)
        update = p.grad.add(buffer, alpha=momentum).reshape(p.shape[0], -1)  # Nesterov
        p.mul_(1 - lr * group["weight_decay"])
        p.add_(orthogonalize(update).view_as(p), alpha=-lr * MUON_RMS * math.sqrt(max(update.shape)))


def build_optimizer(model: nn.Module, config: TrainConfig, total_steps: int):
    """The optimizer and its one-cycle lr schedule (stepped per batch).

    Weight decay applies to conv/linear weights only, never to BatchNorm or biases. With
    ``config.muon_lr`` > 0 the channel-mixing conv weights train with Muon at that peak lr.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]  # frozen layers stay out
    use_muon = config.muon_lr > 0
    muon = [p for p in trainable if use_muon and mixes_channels(p)]
    decay = [p for p in trainable if p.ndim > 1 and not (use_muon and mixes_channels(p))]
    no_decay = [p for p in trainable if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    peaks = [config.lr, config.lr]
    kind = torch.optim.AdamW
    if muon:
        kind = MuonAdamW
        groups.append({"params": muon, "weight_decay": config.weight_decay, "muon": True})
        peaks.append(config.muon_lr)
    # the fused kernel updates all tensors in one call: for a 20k-parameter model the
    # per-tensor loop of the default CPU implementation costs more than the arithmetic
    try:
        optimizer = kind(groups, lr=config.lr, fused=True)
    except (RuntimeError, TypeError):  # a device or build without the fused kernel
        optimizer = kind(groups, lr=config.lr, foreach=True)
    # OneCycleLR divides by its phase lengths, which are zero for a handful of steps (a dry run);
    # such a run just stops early in a longer schedule
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peaks, total_steps=max(total_steps, 20), pct_start=config.pct_start,
        div_factor=config.div_factor, final_div_factor=config.final_div_factor)
    return optimizer, schedule
