"""Building blocks of the zoo, reusable in a user's own model.

Speed note for CPUs: elementwise layers (BatchNorm, ReLU) on 28x28 maps cost as much as
the convolutions, so the fast blocks max-pool *before* BatchNorm and ReLU. Pooling first is
equivalent to pooling last for ReLU (monotone) and close to it for BatchNorm, and it runs
the normalization on a quarter of the pixels.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .registry import NUM_CLASSES



class MaxBlurPool(nn.Module):
    """Anti-aliased 2x down-sampling (Zhang, "Making convolutional networks shift-invariant
    again", 2019): the max of each 2x2 window at stride 1, then a fixed [1 2 1]x[1 2 1]/16 blur
    at stride 2. A plain 2x2 max-pool at stride 2 aliases: moving a digit by one pixel can
    change what it keeps. The blur is a constant (a buffer, not saved, not learned), so the
    parameter count is unchanged. Made for even sizes (28, 14), which it halves as MaxPool2d(2)
    does; an odd size would round up, not down. The FLOP counter leaves it out, as it leaves
    out every pool.
    """

    def __init__(self, channels: int):
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        blur = (torch.outer(taps, taps) / taps.sum() ** 2).expand(channels, 1, 3, 3).contiguous()
        self.register_buffer("blur", blur, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1), mode="replicate"), 2, 1)
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        return nn.functional.conv2d(x, self.blur, stride=2, groups=self.blur.shape[0])


def conv_bn(cin: int, cout: int, *, kernel: int = 3, stride: int = 1, pool: bool = False,
            dropout: float = 0.0, act: Callable[..., nn.Module] = nn.ReLU,
            anti_alias: bool = False) -> nn.Sequential:
    """conv (no bias: BatchNorm has one) [-> max-pool 2] -> BatchNorm -> ``act`` (ReLU) [-> Dropout].
    ``anti_alias`` pools with MaxBlurPool instead of MaxPool2d(2)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1
                                         else (kernel - stride + 1) // 2, bias=False)]
    if pool:
        layers.append(MaxBlurPool(cout) if anti_alias else nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(cout), act(inplace=True)]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def separable_conv_bn(cin: int, cout: int, *, pool: bool = False,
                      act: Callable[..., nn.Module] = nn.ReLU) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1 (the MobileNet factorization): about 9x fewer weights."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                               nn.Conv2d(cin, cout, 1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(cout), act(inplace=True)]
    return nn.Sequential(*layers)


class Head(nn.Sequential):
    """Global average pooling, then one linear layer to the 10 logits."""

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         *([nn.Dropout(dropout)] if dropout else []), nn.Linear(channels, NUM_CLASSES))


class PooledLinearHead(nn.Sequential):
    """(B, C, 7, 7) -> max-pool to 3x3 -> linear over all C*9 values -> 10 logits.

    Keeping where a feature fired (which a global average throws away) lets shallow nets
    learn far faster (docs/experiments.md, "Why the zoo's layouts").
    """

    def __init__(self, channels: int, dropout: float = 0.0):
        super().__init__(nn.MaxPool2d(2), nn.Flatten(), *([nn.Dropout(dropout)] if dropout else []),
                         nn.Linear(channels * 9, NUM_CLASSES))
