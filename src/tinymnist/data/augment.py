"""Batched, per-image augmentation on the device, and the MNIST normalization.

One affine grid per batch does rotation, scale, shear and translation with independent
parameters for every image; random erasing is a per-image rectangle mask. Everything
is tensor arithmetic, so it runs wherever the batch lives, with no per-image loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import NO_AUGMENT, AugmentSpec  # noqa: F401  (NO_AUGMENT: re-exported)

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def normalize(images_u8: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 28, 28) -> normalized float (B, 1, 28, 28)."""
    x = images_u8.unsqueeze(1).to(dtype) / 255.0
    return (x - MNIST_MEAN) / MNIST_STD


def normalize_array(images_u8: np.ndarray) -> np.ndarray:
    """``normalize`` in numpy, for the onnxruntime paths. A torch op there (on a batch big
    enough to run on several threads) leaves torch's OpenMP threads spinning beside
    onnxruntime's: on 2 cores that cut `bench infer --backend onnx` from 24-28k to 13-16k
    images/s."""
    x = images_u8[:, None].astype(np.float32) / np.float32(255.0)
    return (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)


def _uniform(n: int, bound: float, generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * bound


def affine_matrices(n: int, spec: AugmentSpec, generator: torch.Generator | None,
                    device: torch.device) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates in [-1, 1], one per image."""
    angle = _uniform(n, math.radians(spec.rotate_deg), generator, device)
    shear = _uniform(n, math.radians(spec.shear_deg), generator, device)
    scale = 1 + _uniform(n, spec.scale, generator, device)
    # translate is a fraction of the side; grid coordinates span 2 units per side
    shift = _uniform(2 * n, 2 * spec.translate, generator, device).view(n, 2)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # forward map A = scale * R(angle) @ Shear(shear) = [[a, b], [c, d]]; grid_sample needs
    # its inverse, written out for 2x2 (torch.linalg.inv would check for singularity, which
    # on a GPU means a host sync every batch; det = scale^2 > 0 here)
    a, b = scale * cos, scale * (cos * tan - sin)
    c, d = scale * sin, scale * (sin * tan + cos)
    inv = torch.stack([d, -b, -c, a], dim=1).view(n, 2, 2) / (a * d - b * c).view(n, 1, 1)
    return torch.cat([inv, -(inv @ shift.unsqueeze(2))], dim=2)


def erase_mask(n: int, side: int, spec: AugmentSpec, generator: torch.Generator | None,
               device: torch.device) -> torch.Tensor:
    """(n, 1, side, side) bool mask, True where a pixel is erased."""
    lo, hi = spec.erase_area
    area = (lo + (hi - lo) * torch.rand(n, generator=generator, device=device)) * side * side
    log_ratio = _uniform(n, math.log(3.0), generator, device)  # aspect ratio in [1/3, 3]
    h = (area * log_ratio.exp()).sqrt().clamp(1, side)
    w = (area / log_ratio.exp()).sqrt().clamp(1, side)
    top = torch.rand(n, generator=generator, device=device) * (side - h)
    left = torch.rand(n, generator=generator, device=device) * (side - w)
    apply = torch.rand(n, generator=generator, device=device) < spec.erase_prob
    coords = torch.arange(side, device=device, dtype=torch.float32)
    rows = (coords >= top[:, None]) & (coords < (top + h)[:, None])  # (n, side)
    cols = (coords >= left[:, None]) & (coords < (left + w)[:, None])
    return (rows[:, :, None] & cols[:, None, :] & apply[:, None, None]).unsqueeze(1)


def elastic_offsets(n: int, side: int, pixels: float, generator: torch.Generator | None,
                    device: torch.device) -> torch.Tensor:
    """(n, side, side, 2) smooth random displacements in grid units, about ``pixels`` pixels in size.

    Normal noise (std ``pixels`` / 2) on a 4x4 lattice, upsampled bicubically: one smooth warp per image at the cost of
    an interpolation, instead of Simard et al.'s Gaussian blur of a full-size noise field."""
    coarse = torch.randn(n, 2, 4, 4, generator=generator, device=device) * (pixels / side)
    return F.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)


def vary_stroke(x: torch.Tensor, strength: float, generator: torch.Generator | None) -> torch.Tensor:
    """Thicker or thinner ink per image (B, 1, H, W in [0, 1]), a drawn from U(-strength, strength).

    a > 0 blends towards the 3x3 dilation. a < 0 thins by raising the ink threshold to |a| / 2
    and stretching the rest back to [0, 1]: MNIST's strokes are 2-3 pixels wide, so a 3x3
    erosion would wipe them out, while the threshold narrows their anti-aliased edges."""
    a = _uniform(x.shape[0], strength, generator, x.device).to(x.dtype).view(-1, 1, 1, 1)
    thick = x + a.clamp(min=0) * (F.max_pool2d(x, 3, stride=1, padding=1) - x)
    t = (-a).clamp(min=0) / 2
    return ((thick - t) / (1 - t)).clamp(0, 1)


def augment_batch(images_u8: torch.Tensor, spec: AugmentSpec, generator: torch.Generator | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 28, 28) -> augmented, normalized float (B, 1, 28, 28).

    Geometry is applied before normalization so that pixels sampled from outside the
    image are ink-free background (0), as MNIST's border is; erased pixels are set to
    background too, which reads as occlusion rather than as a grey patch.
    """
    n, side = images_u8.shape[0], images_u8.shape[-1]
    device = images_u8.device
    x = images_u8.unsqueeze(1).to(dtype) / 255.0  # (B, 1, 28, 28)
    # each augmentation draws random numbers only when it is on, so that switching a new one
    # off leaves every existing recipe's stream, and its results, as they were
    if spec.geometric or spec.elastic > 0:
        theta = affine_matrices(n, spec, generator, device) if spec.geometric else \
            torch.eye(2, 3, device=device).expand(n, 2, 3)
        grid = F.affine_grid(theta.to(dtype), list(x.shape), align_corners=False)
        if spec.elastic > 0:
            grid = grid + elastic_offsets(n, side, spec.elastic, generator, device).to(dtype)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if spec.stroke > 0:
        x = vary_stroke(x, spec.stroke, generator)
    if spec.erase_prob > 0:
        x = x.masked_fill(erase_mask(n, side, spec, generator, device), 0.0)
    return (x - MNIST_MEAN) / MNIST_STD
